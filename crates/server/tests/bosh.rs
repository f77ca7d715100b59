//! XMPP over BOSH (XEP-0124, XEP-0206) against the real server: session
//! creation, login with restart, messages with a TCP client, the request-id
//! rules, termination, inactivity, and XEP-0156 discovery.

use starling_testkit::{bosh_post, http_request, BoshClient, Script, TestServer, XmlClient, NS_HTTPBIND};
use std::collections::HashSet;

const BIN: &str = env!("CARGO_BIN_EXE_starling");

fn server(http: &str) -> TestServer {
    TestServer::builder(BIN).http(http).with_users(&[("alice", "secret"), ("bob", "secret")]).expect("server starts")
}

async fn tcp_bob(server: &TestServer) -> XmlClient {
    XmlClient::logged_in(server.port, "localhost", "bob", "secret", "desk").await.unwrap().0
}

/// A BOSH session of alice/web, bound.
async fn bosh_bound(server: &TestServer, wait: u64) -> BoshClient {
    let (mut client, _) = BoshClient::create(server.http_port, "localhost", wait).await.unwrap();
    client.login_plain("alice", "secret", "web").await.unwrap();
    client
}

#[tokio::test]
async fn session_login_chat_and_terminate() {
    let server = server("");
    let (mut web, created) = BoshClient::create(server.http_port, "localhost", 2).await.unwrap();
    // XEP-0124 §7.1 and XEP-0206 §4: the session attributes, our limits.
    for expected in ["wait='2'", "hold='1'", "requests='2'", "inactivity='60'", "xmpp:version='1.0'"] {
        assert!(created.contains(expected), "{expected}: {created}");
    }
    assert!(created.contains("xmpp:restartlogic='true'"), "XEP-0206 §5: {created}");
    assert!(created.contains("<stream:features") && created.contains("<mechanism>PLAIN</mechanism>"), "{created}");
    // XEP-0206 §5: SASL, then a restart request, then binding.
    let features = web.auth_plain("alice", "secret").await.unwrap();
    assert!(features.contains("urn:ietf:params:xml:ns:xmpp-bind"), "{features}");
    assert_eq!(web.bind("web").await.unwrap(), "alice@localhost/web");

    let mut bob = tcp_bob(&server).await;
    web.send("<message to='bob@localhost/desk' type='chat' id='b1'><body>over bosh</body></message>").await.unwrap();
    let got = bob.expect("</message>").await.unwrap();
    assert!(got.contains("from='alice@localhost/web'") && got.contains("over bosh"), "{got}");
    bob.send("<message to='alice@localhost/web' type='chat' id='t1'><body>over tcp</body></message>").await.unwrap();
    let got = web.expect("</message>").await.unwrap();
    assert!(got.contains("<message xmlns='jabber:client'") && got.contains("over tcp"), "{got}");

    // XEP-0124 §12: a terminate request ends the session; its sid is gone.
    let terminate = web.body("type='terminate'", "<presence type='unavailable' xmlns='jabber:client'/>");
    let ended = bosh_post(server.http_port, &terminate).await.unwrap();
    assert!(ended.contains("type='terminate'"), "{ended}");
    let poll = web.body("", "");
    let gone = bosh_post(server.http_port, &poll).await.unwrap();
    assert!(gone.contains("condition='item-not-found'"), "{gone}");
    bob.sync("unharmed").await.unwrap();
}

#[tokio::test]
async fn request_ids_are_checked() {
    let server = server("");
    let mut bob = tcp_bob(&server).await;
    let mut web = bosh_bound(&server, 1).await;
    web.send("<message to='bob@localhost/desk' id='r1'><body>hi</body></message>").await.unwrap();
    let first = web.next_response().await.unwrap();
    bob.expect("id='r1'").await.unwrap();
    // XEP-0124 §14.3: a request sent again gets the same response again.
    let again = bosh_post(server.http_port, &first_request_again(&web)).await.unwrap();
    assert_eq!(again, first);
    // §14.3: a rid already answered but no longer remembered (out of the
    // window of `requests`) cannot be answered again: the session ends.
    let mut old = bosh_bound(&server, 1).await;
    old.sync("one").await.unwrap();
    old.rid -= 4;
    let stale = old.body("", "");
    let refused = bosh_post(server.http_port, &stale).await.unwrap();
    assert!(refused.contains("type='terminate'") && refused.contains("condition='item-not-found'"), "{refused}");
    // §14.1: a rid outside the window ends the session with item-not-found.
    web.rid += 5;
    let far = web.body("", "");
    let refused = bosh_post(server.http_port, &far).await.unwrap();
    assert!(refused.contains("type='terminate'") && refused.contains("condition='item-not-found'"), "{refused}");
    let poll = web.body("", "");
    let gone = bosh_post(server.http_port, &poll).await.unwrap();
    assert!(gone.contains("condition='item-not-found'"), "{gone}");
    bob.sync("unharmed").await.unwrap();
}

/// The last request `web` sent, with its rid, as it was sent.
fn first_request_again(web: &BoshClient) -> String {
    let rid = web.rid - 1;
    format!(
        "<body xmlns='{NS_HTTPBIND}' rid='{rid}' sid='{}' ><message to='bob@localhost/desk' id='r1'><body>hi</body></message></body>",
        web.sid
    )
}

#[tokio::test]
async fn unknown_sessions_and_bad_requests_get_terminating_bodies() {
    let server = server("");
    let port = server.http_port;
    // XEP-0124 §17: non-legacy clients get HTTP 200 with the condition.
    let unknown = bosh_post(port, &format!("<body xmlns='{NS_HTTPBIND}' rid='1' sid='nope'/>")).await.unwrap();
    assert!(unknown.contains("condition='item-not-found'"), "{unknown}");
    let bad = bosh_post(port, "this is not XML").await.unwrap();
    assert!(bad.contains("condition='bad-request'"), "{bad}");
    let no_rid = bosh_post(port, &format!("<body xmlns='{NS_HTTPBIND}' to='localhost'/>")).await.unwrap();
    assert!(no_rid.contains("condition='bad-request'"), "{no_rid}");
    let elsewhere =
        bosh_post(port, &format!("<body xmlns='{NS_HTTPBIND}' rid='1' to='example.net' wait='1' hold='1'/>"))
            .await
            .unwrap();
    assert!(elsewhere.contains("condition='host-unknown'"), "{elsewhere}");
    // A session is still created fine afterwards.
    let mut web = bosh_bound(&server, 1).await;
    web.sync("fine").await.unwrap();
}

#[tokio::test]
async fn inactive_sessions_are_reaped() {
    let server = server("bosh_inactivity_secs = 1");
    let mut bob = tcp_bob(&server).await;
    let mut web = bosh_bound(&server, 1).await;
    // Directed presence to bob: when the session ends he gets unavailable
    // presence (RFC 6121 §4.6.3), the barrier for the reaping.
    web.send("<presence to='bob@localhost/desk' xmlns='jabber:client'/>").await.unwrap();
    bob.expect("<presence").await.unwrap();
    web.next_response().await.unwrap();
    // No more requests: after `inactivity` the session is lost (XEP-0124 §7.1).
    let gone = bob.expect("type='unavailable'").await.unwrap();
    assert!(gone.contains("from='alice@localhost/web'"), "{gone}");
    let poll = web.body("", "");
    let reply = bosh_post(server.http_port, &poll).await.unwrap();
    assert!(reply.contains("condition='item-not-found'"), "{reply}");
}

#[tokio::test]
async fn a_thousand_abandoned_sessions_are_all_reaped() {
    const SESSIONS: usize = 1000;
    let server = server("bosh_inactivity_secs = 1");
    let mut bob = tcp_bob(&server).await;
    let port = server.http_port;
    // XEP-0124 §7.1: sessions created and never polled again, 50 at a time.
    let mut sids = HashSet::new();
    let mut creating = tokio::task::JoinSet::new();
    for n in 0..SESSIONS {
        creating.spawn(async move { BoshClient::create(port, "localhost", 1).await.map(|(client, _)| client.sid) });
        if n % 50 == 49 {
            while let Some(sid) = creating.join_next().await {
                sids.insert(sid.unwrap().unwrap());
            }
        }
    }
    assert_eq!(sids.len(), SESSIONS, "distinct sids");
    bob.sync("during").await.unwrap();
    // §7.2 `inactivity`, §10: each is lost a second after its last
    // response; the log counts them out (`live`: sessions left).
    let ended = |log: &str| log.matches("BOSH session ended").count();
    let log = server.log_until("every session reaped", |log| ended(log) == SESSIONS).await.unwrap();
    assert!(log.lines().any(|line| line.contains("BOSH session ended") && line.ends_with("live=0")), "none left");
    let sid = sids.iter().next().unwrap();
    let gone = bosh_post(port, &format!("<body xmlns='{NS_HTTPBIND}' rid='1000001' sid='{sid}'/>")).await.unwrap();
    assert!(gone.contains("condition='item-not-found'"), "{gone}");
    // Other sessions were unharmed, and new ones work.
    bob.sync("after").await.unwrap();
    let mut web = bosh_bound(&server, 1).await;
    web.sync("new").await.unwrap();
}

#[tokio::test]
async fn host_meta_advertises_both_endpoints() {
    let server = server("");
    let port = server.http_port;
    // XEP-0156 §3: JSON and XRD, behind a TLS proxy by default (wss, https).
    let json = http_request(port, "GET", "/.well-known/host-meta.json", &[], "").await.unwrap();
    assert_eq!(json.status, 200);
    assert_eq!(json.header("access-control-allow-origin"), Some("*"));
    let links: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    let href = |rel: &str| {
        links["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["rel"] == rel)
            .map(|l| l["href"].as_str().unwrap().to_owned())
    };
    assert_eq!(href("urn:xmpp:alt-connections:websocket").unwrap(), format!("wss://localhost:{port}/xmpp-websocket"));
    assert_eq!(href("urn:xmpp:alt-connections:xbosh").unwrap(), format!("https://localhost:{port}/http-bind"));
    let xrd = http_request(port, "GET", "/.well-known/host-meta", &[], "").await.unwrap();
    assert!(xrd.body.contains("<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>"), "{}", xrd.body);
    assert!(xrd.body.contains(&format!("href='https://localhost:{port}/http-bind'")), "{}", xrd.body);
    // CORS preflight for browser BOSH clients.
    let preflight =
        http_request(port, "OPTIONS", "/http-bind", &[("Origin", "https://app.example")], "").await.unwrap();
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert!(preflight.header("access-control-allow-methods").unwrap().contains("POST"));
}

#[tokio::test]
async fn public_url_and_cors_origins_are_configurable() {
    let server = server("public_url = \"https://xmpp.example.com/\"\ncors_origins = [\"https://app.example\"]");
    let port = server.http_port;
    let json = http_request(port, "GET", "/.well-known/host-meta.json", &[("Origin", "https://app.example")], "")
        .await
        .unwrap();
    assert!(json.body.contains("wss://xmpp.example.com/xmpp-websocket"), "{}", json.body);
    assert_eq!(json.header("access-control-allow-origin"), Some("https://app.example"));
    let other = http_request(port, "GET", "/.well-known/host-meta.json", &[("Origin", "https://evil.example")], "")
        .await
        .unwrap();
    assert_eq!(other.header("access-control-allow-origin"), None);
}
