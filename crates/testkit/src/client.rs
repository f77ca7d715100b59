//! A scripted raw-XML client: it sends exactly the bytes a test gives and
//! waits for expected text, so error paths can be driven byte by byte.

use anyhow::{bail, Context};
use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct XmlClient {
    io: Option<Box<dyn Io>>,
    tcp: Option<TcpStream>,
    /// Everything received and not yet consumed by an `expect`.
    pub received: String,
    pub domain: String,
    timeout: Duration,
}

/// Tests trust the server's self-signed certificate (they check TLS works,
/// not the PKI).
#[derive(Debug)]
struct AcceptAny;

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector(alpn: Option<&[u8]>) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
    if let Some(alpn) = alpn {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// What a scripted conversation needs from its transport (a TCP stream,
/// a WebSocket, BOSH requests); the XMPP steps on top are written once.
// Tests await these in place, so the futures need no `Send` bound.
#[allow(async_fn_in_trait)]
pub trait Script {
    fn domain(&self) -> &str;
    async fn send(&mut self, xml: &str) -> anyhow::Result<()>;
    /// Reads until `needle` has been received; consumes everything up to
    /// and including it and returns that text.
    async fn expect(&mut self, needle: &str) -> anyhow::Result<String>;
    /// Opens (or, after SASL, restarts) the stream; returns the features.
    async fn open(&mut self) -> anyhow::Result<String>;

    /// SASL PLAIN and the stream restart; returns the post-auth features.
    async fn auth_plain(&mut self, user: &str, password: &str) -> anyhow::Result<String> {
        let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.send(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>")).await?;
        self.expect("<success").await?;
        self.open().await
    }

    /// SASL PLAIN, stream restart and resource binding; returns the full JID.
    async fn login_plain(&mut self, user: &str, password: &str, resource: &str) -> anyhow::Result<String> {
        self.auth_plain(user, password).await?;
        self.bind(resource).await
    }

    /// Resource binding (RFC 6120 §7); returns the full JID.
    async fn bind(&mut self, resource: &str) -> anyhow::Result<String> {
        self.send(&format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ))
        .await?;
        let reply = self.expect("</iq>").await?;
        let start = reply.find("<jid>").context("bind result has a jid")? + 5;
        let end = reply.find("</jid>").context("bind result has a jid")?;
        Ok(reply[start..end].to_owned())
    }

    /// A barrier: a ping to the server and its answer. Everything the server
    /// queued for this client before it handled the ping arrives first, and
    /// is returned (RFC 6120 §10.1: stanzas of one stream in order).
    async fn sync(&mut self, id: &str) -> anyhow::Result<String> {
        let ping = format!("<iq type='get' id='{id}' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>", self.domain());
        self.send(&ping).await?;
        self.expect(&format!("id='{id}'")).await
    }
}

impl Script for XmlClient {
    fn domain(&self) -> &str {
        &self.domain
    }

    async fn send(&mut self, xml: &str) -> anyhow::Result<()> {
        XmlClient::send(self, xml).await
    }

    async fn expect(&mut self, needle: &str) -> anyhow::Result<String> {
        XmlClient::expect(self, needle).await
    }

    async fn open(&mut self) -> anyhow::Result<String> {
        XmlClient::open(self).await
    }
}

impl XmlClient {
    pub async fn connect(port: u16, domain: &str) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        Ok(XmlClient {
            io: None,
            tcp: Some(tcp),
            received: String::new(),
            domain: domain.into(),
            timeout: Duration::from_secs(5),
        })
    }

    /// Connects with TLS from the first byte (XEP-0368), ALPN `xmpp-client`.
    pub async fn connect_direct_tls(port: u16, domain: &str) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let name = ServerName::try_from(domain.to_owned())?;
        let tls = tls_connector(Some(b"xmpp-client")).connect(name, tcp).await?;
        Ok(XmlClient {
            io: Some(Box::new(tls)),
            tcp: None,
            received: String::new(),
            domain: domain.into(),
            timeout: Duration::from_secs(5),
        })
    }

    fn io(&mut self) -> &mut (dyn Io + '_) {
        match (&mut self.io, &mut self.tcp) {
            (Some(io), _) => io.as_mut(),
            (None, Some(tcp)) => tcp,
            (None, None) => unreachable!("client has a transport"),
        }
    }

    pub async fn send(&mut self, xml: &str) -> anyhow::Result<()> {
        self.send_bytes(xml.as_bytes()).await
    }

    pub async fn send_bytes(&mut self, data: &[u8]) -> anyhow::Result<()> {
        let io = self.io();
        io.write_all(data).await?;
        io.flush().await?;
        Ok(())
    }

    /// Reads until `needle` has been received; consumes everything up to and
    /// including it and returns that text.
    pub async fn expect(&mut self, needle: &str) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            if let Some(pos) = self.received.find(needle) {
                let rest = self.received.split_off(pos + needle.len());
                return Ok(std::mem::replace(&mut self.received, rest));
            }
            let mut buf = [0u8; 8192];
            let read = tokio::time::timeout_at(deadline, self.io().read(&mut buf)).await;
            match read {
                Err(_) => bail!("timed out waiting for {needle:?}; received: {:?}", self.received),
                Ok(Ok(0)) => bail!("connection closed waiting for {needle:?}; received: {:?}", self.received),
                Ok(Ok(n)) => self.received.push_str(&String::from_utf8_lossy(&buf[..n])),
                Ok(Err(e)) => bail!("read error waiting for {needle:?}: {e}; received: {:?}", self.received),
            }
        }
    }

    /// Waits until the server closes the connection; returns what it sent.
    pub async fn expect_closed(&mut self) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let mut buf = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.io().read(&mut buf)).await {
                Err(_) => bail!("connection not closed; received: {:?}", self.received),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(std::mem::take(&mut self.received)),
                Ok(Ok(n)) => self.received.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    }

    pub fn stream_header(&self) -> String {
        format!(
            "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams'>",
            self.domain
        )
    }

    /// Opens the stream and returns the features.
    pub async fn open(&mut self) -> anyhow::Result<String> {
        let header = self.stream_header();
        self.send(&header).await?;
        self.expect("</stream:features>").await
    }

    /// STARTTLS (RFC 6120 §5) on a plain connection; returns the new features.
    pub async fn starttls(&mut self) -> anyhow::Result<String> {
        self.open().await?;
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").await?;
        self.expect("<proceed").await?;
        self.received.clear();
        let tcp = self.tcp.take().context("already on TLS")?;
        let name = ServerName::try_from(self.domain.clone())?;
        self.io = Some(Box::new(tls_connector(None).connect(name, tcp).await?));
        self.open().await
    }

    /// A stream over STARTTLS, authenticated with PLAIN, not bound yet
    /// (to bind, or to resume a session, XEP-0198 §5).
    pub async fn authenticated(port: u16, domain: &str, user: &str, password: &str) -> anyhow::Result<Self> {
        let mut client = Self::connect(port, domain).await?;
        client.starttls().await?;
        client.auth_plain(user, password).await?;
        Ok(client)
    }

    /// A barrier: a ping with a fresh id and its whole answer. Returns only
    /// what arrived before the answer: everything the server queued for this
    /// client before it handled the ping (RFC 6120 §10.1: stanzas of one
    /// stream in order). For stanzas another session causes, sync that
    /// session first, then this one.
    pub async fn barrier(&mut self) -> anyhow::Result<String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = format!("barrier-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let ping = format!("<iq type='get' id='{id}' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>", self.domain);
        self.send(&ping).await?;
        Ok(self.take_stanza(&format!("id='{id}'")).await?.0)
    }

    /// Sends `xml` and returns the whole reply stanza whose id is `id`.
    pub async fn request(&mut self, xml: &str, id: &str) -> anyhow::Result<String> {
        self.send(xml).await?;
        self.reply(id).await
    }

    /// Waits for the stanza whose id is `id` and returns it, from its start
    /// tag to its end (what arrived before it is consumed and dropped).
    pub async fn reply(&mut self, id: &str) -> anyhow::Result<String> {
        Ok(self.take_stanza(&format!("id='{id}'")).await?.1)
    }

    /// Waits for `needle`, which must be inside a start tag (an attribute),
    /// and reads to the end of that element. Returns what arrived before the
    /// element and the element itself; both are consumed.
    pub async fn take_stanza(&mut self, needle: &str) -> anyhow::Result<(String, String)> {
        let mut head = self.expect(needle).await?;
        let start = head.rfind('<').with_context(|| format!("{needle:?} is not in a start tag: {head:?}"))?;
        let mut element = head.split_off(start);
        let name: String = element[1..].chars().take_while(|c| !c.is_whitespace() && !"/>".contains(*c)).collect();
        element.push_str(&self.expect(">").await?);
        if !element.ends_with("/>") {
            let close = format!("</{name}>");
            // Nested elements of the same name (a forwarded message) close first.
            while element.matches(&close).count() < open_tags(&element, &name) {
                element.push_str(&self.expect(&close).await?);
            }
        }
        Ok((head, element))
    }

    /// Opens an external component's stream (XEP-0114 §3) for `self.domain`
    /// and returns the stream id the server sent.
    pub async fn open_component_stream(&mut self) -> anyhow::Result<String> {
        self.send(&format!(
            "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='{}'>",
            self.domain
        ))
        .await?;
        self.expect("<stream:stream").await?;
        let header = self.expect(">").await?;
        let start = header.find(" id='").context("stream header has an id")? + 5;
        let len = header[start..].find('\'').context("stream header has an id")?;
        Ok(header[start..start + len].to_owned())
    }

    /// Sends the XEP-0114 §3 handshake for `secret` on a stream opened with
    /// [`open_component_stream`](Self::open_component_stream).
    pub async fn send_component_handshake(&mut self, stream_id: &str, secret: &str) -> anyhow::Result<()> {
        use sha1::Digest;
        let digest = sha1::Sha1::new().chain_update(stream_id).chain_update(secret).finalize();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.send(&format!("<handshake>{hex}</handshake>")).await
    }

    /// An external component connected and authenticated for `domain`.
    pub async fn component(port: u16, domain: &str, secret: &str) -> anyhow::Result<Self> {
        let mut component = Self::connect(port, domain).await?;
        let id = component.open_component_stream().await?;
        component.send_component_handshake(&id, secret).await?;
        component.expect("<handshake").await?;
        Ok(component)
    }

    /// A bound session that fetched its roster (so it gets roster pushes,
    /// RFC 6121 §2.1.6) and sent initial presence; its reflection (§4.2.2)
    /// has been received and consumed.
    pub async fn online(port: u16, domain: &str, user: &str, password: &str, resource: &str) -> anyhow::Result<Self> {
        let (mut client, jid) = Self::logged_in(port, domain, user, password, resource).await?;
        client
            .request("<iq type='get' id='online-roster'><query xmlns='jabber:iq:roster'/></iq>", "online-roster")
            .await?;
        client.send("<presence/>").await?;
        client.take_stanza(&format!("from='{jid}'")).await?;
        Ok(client)
    }

    /// A bound session over STARTTLS with PLAIN.
    pub async fn logged_in(
        port: u16,
        domain: &str,
        user: &str,
        password: &str,
        resource: &str,
    ) -> anyhow::Result<(Self, String)> {
        let mut client = Self::connect(port, domain).await?;
        client.starttls().await?;
        let jid = client.login_plain(user, password, resource).await?;
        Ok((client, jid))
    }
}

/// How many `<name …>` start tags in `xml` are not self-closing.
fn open_tags(xml: &str, name: &str) -> usize {
    let open = format!("<{name}");
    xml.match_indices(&open)
        .filter(|(at, _)| {
            let rest = &xml[at + open.len()..];
            let tag_end = rest.find('>');
            rest.starts_with(|c: char| c.is_whitespace() || c == '>' || c == '/')
                && tag_end.is_some_and(|end| !rest[..end].ends_with('/'))
        })
        .count()
}
