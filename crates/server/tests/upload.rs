//! XEP-0363 HTTP File Upload against the real binary: the service a server
//! with no `[[services]]` offers, slots and their errors over XMPP, and the
//! PUT/GET on the HTTP listener with their refusals.

use starling_testkit::{http_request, HttpResponse, TestServer, XmlClient};

const BIN: &str = env!("CARGO_BIN_EXE_starling");
const UPLOAD: &str = "upload.localhost";

fn server(upload_config: &str) -> TestServer {
    TestServer::builder(BIN)
        .config(&format!("[modules.upload]\n{upload_config}"))
        .with_users(&[("alice", "secret"), ("bob", "secret")])
        .expect("server starts")
}

async fn request_slot(client: &mut XmlClient, id: &str, filename: &str, size: usize, content_type: &str) -> String {
    let xml = format!(
        "<iq type='get' id='{id}' to='{UPLOAD}'><request xmlns='urn:xmpp:http:upload:0' \
         filename='{filename}' size='{size}' content-type='{content_type}'/></iq>"
    );
    client.request(&xml, id).await.unwrap()
}

/// The `url` of the slot's `put` or `get` child, unescaped from XML.
fn slot_url(reply: &str, which: &str) -> String {
    let start = reply.find(&format!("<{which} ")).unwrap_or_else(|| panic!("no <{which}> in {reply}"));
    let url = reply[start..].split("url='").nth(1).unwrap();
    url[..url.find('\'').unwrap()].replace("&amp;", "&")
}

/// Sends `url`'s path and query to the server's plain HTTP listener (the
/// slot URLs name the HTTPS one; both serve the same routes).
async fn http(server: &TestServer, method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    let base = format!("https://localhost:{}", server.https_port);
    let path = url.strip_prefix(&base).unwrap_or_else(|| panic!("{url} is not under {base}"));
    http_request(server.http_port, method, path, headers, body).await.unwrap()
}

#[tokio::test]
async fn a_fresh_server_offers_upload_and_a_file_goes_up_and_down() {
    let server = server("");
    let mut alice = server.online("alice", "phone").await.unwrap();

    // XEP-0363 §2: the service is in the host's items, with its limit in disco#info.
    let items = alice
        .request(
            "<iq type='get' id='i' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
            "i",
        )
        .await
        .unwrap();
    assert!(items.contains(&format!("jid='{UPLOAD}'")) && items.contains("name='HTTP File Upload'"), "{items}");
    let info = alice
        .request(
            &format!("<iq type='get' id='d' to='{UPLOAD}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
            "d",
        )
        .await
        .unwrap();
    for needle in
        ["category='store'", "type='file'", "var='urn:xmpp:http:upload:0'", "var='max-file-size'", "104857600"]
    {
        assert!(info.contains(needle), "{needle} in {info}");
    }

    // §4: a slot; the file name keeps its ending, percent-encoded (RFC 3986).
    let content = "hello, upload\n";
    let slot = request_slot(&mut alice, "s", "très cool.txt", content.len(), "text/plain").await;
    assert!(slot.contains("type='result'"), "{slot}");
    let (put, get) = (slot_url(&slot, "put"), slot_url(&slot, "get"));
    assert!(get.starts_with(&format!("https://localhost:{}/upload/", server.https_port)), "{get}");
    assert!(get.ends_with("/tr%C3%A8s%20cool.txt"), "{get}");
    assert!(put.starts_with(&get) && put.contains("sig="), "{put}");

    // Nothing is served before the upload.
    assert_eq!(http(&server, "GET", &get, &[], "").await.status, 404);

    // §5: the PUT stores it (201), the GET serves the same bytes, marked so
    // that a browser never runs it on our origin (§11.1).
    let stored = http(&server, "PUT", &put, &[("Content-Type", "text/plain")], content).await;
    assert_eq!(stored.status, 201, "{stored:?}");
    let fetched = http(&server, "GET", &get, &[], "").await;
    assert_eq!((fetched.status, fetched.body.as_str()), (200, content), "{fetched:?}");
    assert_eq!(fetched.header("content-type"), Some("text/plain"));
    assert_eq!(fetched.header("x-content-type-options"), Some("nosniff"));
    assert!(fetched.header("content-security-policy").is_some_and(|c| c.contains("default-src 'none'")));
    assert_eq!(fetched.header("access-control-allow-origin"), Some("*"), "§10: web clients elsewhere");

    // A slot takes one upload.
    let again = http(&server, "PUT", &put, &[("Content-Type", "text/plain")], "other content\n").await;
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(http(&server, "GET", &get, &[], "").await.body, content);

    // §10: CORS preflight for PUT from a browser.
    let preflight = http(&server, "OPTIONS", &put, &[("Origin", "https://web.example")], "").await;
    assert!(preflight.header("access-control-allow-methods").is_some_and(|m| m.contains("PUT")), "{preflight:?}");
}

#[tokio::test]
async fn slot_requests_beyond_the_limits_are_refused_with_the_limit() {
    let server = server("max_file_bytes = 1000\nquota_bytes = 1500\n");
    let mut alice = server.online("alice", "phone").await.unwrap();

    // §4 (errors): not-acceptable with <file-too-large/> and the maximum.
    let refused = request_slot(&mut alice, "big", "big.bin", 1001, "application/octet-stream").await;
    assert!(refused.contains("type='error'") && refused.contains("<not-acceptable "), "{refused}");
    assert!(
        refused.contains("<file-too-large xmlns='urn:xmpp:http:upload:0'><max-file-size>1000</max-file-size>"),
        "{refused}"
    );
    let content = "x".repeat(1000);
    let slot = request_slot(&mut alice, "ok", "a.bin", content.len(), "application/octet-stream").await;
    let put = slot_url(&slot, "put");
    assert_eq!(http(&server, "PUT", &put, &[], &content).await.status, 201);

    // §4 (errors): a quota is a temporary error; other accounts are not affected.
    let over = request_slot(&mut alice, "quota", "b.bin", 600, "application/octet-stream").await;
    assert!(over.contains("type='wait'") && over.contains("<resource-constraint "), "{over}");
    assert!(over.contains("quota"), "{over}");
    let mut bob = server.online("bob", "laptop").await.unwrap();
    let slot = request_slot(&mut bob, "bob", "b.bin", 600, "application/octet-stream").await;
    assert!(slot.contains("<slot "), "{slot}");

    // Bad requests: no size, an empty name, a content type with a line break.
    for (id, attrs) in [
        ("nosize", "filename='a.txt'"),
        ("noname", "filename='..' size='5'"),
        ("badtype", "filename='a.txt' size='5' content-type='text/plain&#10;X: y'"),
    ] {
        let reply = alice
            .request(
                &format!(
                    "<iq type='get' id='{id}' to='{UPLOAD}'><request xmlns='urn:xmpp:http:upload:0' {attrs}/></iq>"
                ),
                id,
            )
            .await
            .unwrap();
        assert!(reply.contains("<bad-request "), "{id}: {reply}");
    }
}

#[tokio::test]
async fn puts_that_do_not_match_their_slot_store_nothing() {
    let server = server("");
    let mut alice = server.online("alice", "phone").await.unwrap();
    let content = "0123456789";
    let slot = request_slot(&mut alice, "s", "f.txt", content.len(), "text/plain").await;
    let (put, get) = (slot_url(&slot, "put"), slot_url(&slot, "get"));

    // A forged signature, or a grant edited to allow more: forbidden.
    let forged = format!("{}0000", &put[..put.len() - 4]);
    assert_eq!(http(&server, "PUT", &forged, &[], content).await.status, 403);
    let bigger = put.replace(&format!("size={}", content.len()), "size=11");
    assert_eq!(http(&server, "PUT", &bigger, &[], "0123456789a").await.status, 403);
    // §5: the length must be the slot's size, the type the slot's type.
    assert_eq!(http(&server, "PUT", &put, &[], "012345678").await.status, 400);
    assert_eq!(http(&server, "PUT", &put, &[("Content-Type", "text/html")], content).await.status, 400);
    // A path that tries to leave the upload directory.
    let escape = get.replace("/f.txt", "/..%2F..%2Fupload.key");
    assert_eq!(http(&server, "GET", &escape, &[], "").await.status, 404);
    assert_eq!(http(&server, "GET", &get, &[], "").await.status, 404, "nothing was stored");

    // The slot still works after the refusals.
    assert_eq!(http(&server, "PUT", &put, &[("Content-Type", "text/plain; charset=utf-8")], content).await.status, 201);
    assert_eq!(http(&server, "GET", &get, &[], "").await.body, content);
}

/// go-sendxmpp (Debian) uploads a file over XEP-0363 and sends its URL to
/// bob; the URL serves the same bytes. CI installs go-sendxmpp (.ci/run).
#[tokio::test]
async fn go_sendxmpp_uploads_a_file_that_downloads_the_same() {
    let Ok(go_sendxmpp) = which("go-sendxmpp") else {
        eprintln!("SKIPPED: go-sendxmpp is not installed (apt-get install go-sendxmpp)");
        return;
    };
    let server = server("");
    let mut bob = server.online("bob", "laptop").await.unwrap();
    let file = server.path().join("report.txt");
    let content = "quarterly figures: 42\n".repeat(100);
    std::fs::write(&file, &content).unwrap();
    let mut command = std::process::Command::new(go_sendxmpp);
    command
        .args(["-u", "alice@localhost", "-p", "secret", "-n", "-f", "/dev/null"])
        .arg("-j")
        .arg(format!("127.0.0.1:{}", server.port))
        .arg("-h")
        .arg(&file)
        .arg("bob@localhost")
        // Go reads extra trust roots from here: the server's self-signed
        // certificate, for the HTTPS PUT (-n covers only the XMPP stream).
        .env("SSL_CERT_FILE", server.certificate());
    let sent = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    assert!(sent.status.success(), "go-sendxmpp: {}", String::from_utf8_lossy(&sent.stderr));
    let (_, message) = bob.take_stanza("<message ").await.unwrap();
    let url =
        message.split("<url>").nth(1).and_then(|u| u.split("</url>").next()).unwrap_or_else(|| panic!("{message}"));
    let fetched = http(&server, "GET", url, &[], "").await;
    assert_eq!((fetched.status, fetched.body.len()), (200, content.len()));
    assert_eq!(fetched.body, content);
}

fn which(program: &str) -> std::io::Result<std::path::PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| std::io::ErrorKind::NotFound.into())
}
