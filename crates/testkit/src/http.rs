//! Scripted clients for the HTTP transports: a raw RFC 7395 WebSocket
//! client and a XEP-0124 BOSH client over hand-written HTTP/1.1 requests
//! (so tests see exactly what the server sends).

use crate::client::Script;
use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
const TIMEOUT: Duration = Duration::from_secs(5);

/// A response to a raw HTTP/1.1 request.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// The header lines, as received.
    pub headers: String,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// One request on its own connection (`Connection: close`), read to EOF.
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<HttpResponse> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    tcp.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    // Held BOSH requests take up to `wait`: allow well past the tests' waits.
    tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut raw)).await.context("HTTP response")??;
    let raw = String::from_utf8(raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("an HTTP response")?;
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line.split(' ').nth(1).context("a status code")?.parse()?;
    let body = if headers.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok(HttpResponse { status, headers: headers.to_owned(), body })
}

fn dechunk(mut rest: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").context("a chunk size")?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(after.get(..size).context("a whole chunk")?);
        rest = after.get(size + 2..).context("a chunk end")?;
    }
}

/// A WebSocket client speaking RFC 7395 frame by frame.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Text of the messages received and not yet consumed by an `expect`.
    pub received: String,
    pub domain: String,
}

impl WsClient {
    /// Connects to `/xmpp-websocket` asking for the subprotocols `protocols`
    /// (comma-separated, none if empty): the client, or the HTTP status of
    /// a refused upgrade.
    pub async fn connect_with(port: u16, domain: &str, protocols: &str) -> anyhow::Result<Result<Self, u16>> {
        let mut request = format!("ws://127.0.0.1:{port}/xmpp-websocket").into_client_request()?;
        if !protocols.is_empty() {
            request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_str(protocols)?);
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, response)) => {
                let chosen = response.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok());
                if chosen != Some("xmpp") {
                    bail!("RFC 7395 §3.2: the server must select \"xmpp\", got {chosen:?}");
                }
                Ok(Ok(WsClient { ws, received: String::new(), domain: domain.into() }))
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Ok(Err(response.status().as_u16())),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn connect(port: u16, domain: &str) -> anyhow::Result<Self> {
        Self::connect_with(port, domain, "xmpp").await?.map_err(|status| anyhow::anyhow!("upgrade refused: {status}"))
    }

    /// Sends any message (a binary one, a text that is not one element).
    pub async fn send_message(&mut self, message: Message) -> anyhow::Result<()> {
        self.ws.send(message).await?;
        Ok(())
    }

    /// The next message; `None` once the connection is closed.
    async fn next_text(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            match tokio::time::timeout(TIMEOUT, self.ws.next()).await {
                Err(_) => bail!("timed out; received: {:?}", self.received),
                Ok(None | Some(Ok(Message::Close(_)))) => return Ok(None),
                Ok(Some(Ok(Message::Text(text)))) => return Ok(Some(text.as_str().to_owned())),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) => return Ok(None),
            }
        }
    }

    /// Waits until the server closes the connection; returns what it sent.
    pub async fn expect_closed(&mut self) -> anyhow::Result<String> {
        while let Some(text) = self.next_text().await? {
            self.received.push_str(&text);
        }
        Ok(std::mem::take(&mut self.received))
    }
}

impl Script for WsClient {
    fn domain(&self) -> &str {
        &self.domain
    }

    async fn send(&mut self, xml: &str) -> anyhow::Result<()> {
        self.send_message(Message::text(xml)).await
    }

    async fn expect(&mut self, needle: &str) -> anyhow::Result<String> {
        loop {
            if let Some(pos) = self.received.find(needle) {
                let rest = self.received.split_off(pos + needle.len());
                return Ok(std::mem::replace(&mut self.received, rest));
            }
            match self.next_text().await? {
                Some(text) => self.received.push_str(&text),
                None => bail!("connection closed waiting for {needle:?}; received: {:?}", self.received),
            }
        }
    }

    /// RFC 7395 §3.3.1: `<open/>`, answered by `<open/>` and the features.
    async fn open(&mut self) -> anyhow::Result<String> {
        let open = format!("<open xmlns='{NS_FRAMING}' to='{}' version='1.0'/>", self.domain);
        self.send(&open).await?;
        self.expect("</stream:features>").await
    }
}

/// A BOSH client: every `send` is a request of its own, sent at once (as a
/// browser would, beside a held poll); `expect` polls when none is pending.
pub struct BoshClient {
    port: u16,
    pub domain: String,
    pub sid: String,
    /// The rid of the next request.
    pub rid: u64,
    /// Response bodies received and not yet consumed by an `expect`.
    pub received: String,
    responses: mpsc::UnboundedSender<anyhow::Result<String>>,
    incoming: mpsc::UnboundedReceiver<anyhow::Result<String>>,
    outstanding: usize,
}

pub const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";

impl BoshClient {
    /// XEP-0206 §4 session creation; returns the client and the response.
    pub async fn create(port: u16, domain: &str, wait: u64) -> anyhow::Result<(Self, String)> {
        let rid = 1_000_000;
        let body = format!(
            "<body xmlns='{NS_HTTPBIND}' rid='{rid}' to='{domain}' wait='{wait}' hold='1' ver='1.11' \
             xml:lang='en' xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>"
        );
        let response = bosh_post(port, &body).await?;
        let sid = attr(&response, "sid").with_context(|| format!("a sid in {response}"))?;
        let (responses, incoming) = mpsc::unbounded_channel();
        let client = BoshClient {
            port,
            domain: domain.into(),
            sid,
            rid: rid + 1,
            received: String::new(),
            responses,
            incoming,
            outstanding: 0,
        };
        Ok((client, response))
    }

    /// A `<body/>` of this session with the next rid, `attrs` and `payload`.
    pub fn body(&mut self, attrs: &str, payload: &str) -> String {
        let rid = self.rid;
        self.rid += 1;
        format!("<body xmlns='{NS_HTTPBIND}' rid='{rid}' sid='{}' {attrs}>{payload}</body>", self.sid)
    }

    /// Sends `body` in the background; its response joins `received`.
    pub fn post_later(&mut self, body: String) {
        let (port, responses) = (self.port, self.responses.clone());
        self.outstanding += 1;
        tokio::spawn(async move {
            let _ = responses.send(bosh_post(port, &body).await);
        });
    }

    /// Waits for one pending response.
    pub async fn next_response(&mut self) -> anyhow::Result<String> {
        let response = tokio::time::timeout(Duration::from_secs(30), self.incoming.recv())
            .await
            .context("a BOSH response")?
            .context("response channel")??;
        self.outstanding -= 1;
        Ok(response)
    }
}

/// `name='value'` or `name="value"` in `xml`.
pub fn attr(xml: &str, name: &str) -> Option<String> {
    for quote in ['\'', '"'] {
        if let Some(start) = xml.find(&format!(" {name}={quote}")) {
            let start = start + name.len() + 3;
            let len = xml[start..].find(quote)?;
            return Some(xml[start..start + len].to_owned());
        }
    }
    None
}

/// POSTs a body to `/http-bind`; XEP-0124 §17: errors come as HTTP 200 with
/// a terminating body, so anything else fails.
pub async fn bosh_post(port: u16, body: &str) -> anyhow::Result<String> {
    let response =
        http_request(port, "POST", "/http-bind", &[("Content-Type", "text/xml; charset=utf-8")], body).await?;
    if response.status != 200 {
        bail!("HTTP {} for {body}: {}", response.status, response.body);
    }
    Ok(response.body)
}

impl Script for BoshClient {
    fn domain(&self) -> &str {
        &self.domain
    }

    async fn send(&mut self, xml: &str) -> anyhow::Result<()> {
        let body = self.body("", xml);
        self.post_later(body);
        Ok(())
    }

    async fn expect(&mut self, needle: &str) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(pos) = self.received.find(needle) {
                let rest = self.received.split_off(pos + needle.len());
                return Ok(std::mem::replace(&mut self.received, rest));
            }
            if tokio::time::Instant::now() > deadline {
                bail!("timed out waiting for {needle:?}; received: {:?}", self.received);
            }
            if self.outstanding == 0 {
                let poll = self.body("", "");
                self.post_later(poll);
            }
            let response = self.next_response().await?;
            if response.contains("type='terminate'") && !response.contains(needle) {
                bail!("session terminated waiting for {needle:?}: {response}");
            }
            self.received.push_str(&response);
        }
    }

    /// XEP-0206 §5: a restart request, answered with the new features.
    async fn open(&mut self) -> anyhow::Result<String> {
        let body = self.body("xmpp:restart='true' xmlns:xmpp='urn:xmpp:xbosh'", "");
        self.post_later(body);
        self.expect("</stream:features>").await
    }
}
