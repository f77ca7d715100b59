//! Federation with ejabberd (Debian's `ejabberd`, 23.01) serving `e.test`
//! on loopback as its own unprivileged node, with its config, spool and
//! logs in a temp dir; Starling serves `a.test`. ejabberd resolves peers
//! with Erlang's DNS client only, so the test answers its queries with a
//! small DNS server of its own (named in the node's `inetrc`): SRV records
//! put `a.test` at 127.0.0.1 on Starling's port. Once with certificates
//! from a CA both trust (SASL EXTERNAL both ways), once with untrusted ones
//! (dialback). Skipped when ejabberd is absent.

use starling_testkit::{free_port, TestCa, TestServer, XmlClient};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_starling");
const EJABBERDCTL: &str = "/usr/sbin/ejabberdctl";
const STARLING_DOMAIN: &str = "a.test";
const EJABBERD_DOMAIN: &str = "e.test";
const PASSWORD: &str = "secret";

/// A DNS server (RFC 1035 §4.1, UDP) for `domains`, all at 127.0.0.1 on
/// `port`: SRV `_xmpp-server._tcp.DOMAIN`; every other query gets
/// NXDOMAIN. Runs until the test ends.
async fn fake_dns(domains: Vec<String>, port: u16) -> u16 {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dns_port = socket.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else { return };
            if let Some(answer) = dns_answer(&buf[..n], &domains, port) {
                let _ = socket.send_to(&answer, from).await;
            }
        }
    });
    dns_port
}

fn dns_answer(query: &[u8], domains: &[String], port: u16) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut i = 12;
    let mut labels = Vec::new();
    while *query.get(i)? != 0 {
        let len = query[i] as usize;
        labels.push(String::from_utf8_lossy(query.get(i + 1..i + 1 + len)?).to_lowercase());
        i += 1 + len;
    }
    let question_end = i + 5;
    let qtype = u16::from_be_bytes([*query.get(i + 1)?, *query.get(i + 2)?]);
    let name = labels.join(".");
    let rdata = match name.strip_prefix("_xmpp-server._tcp.") {
        Some(domain) if qtype == 33 && domains.iter().any(|d| d == domain) => {
            // Priority 0, weight 0, the port, and as target the address
            // written as a name: ejabberd resolves targets with the
            // system's resolver, which cannot know a.test, and takes an
            // address literal as it is.
            let mut srv = vec![0, 0, 0, 0];
            srv.extend_from_slice(&port.to_be_bytes());
            for label in "127.0.0.1".split('.') {
                srv.push(label.len() as u8);
                srv.extend_from_slice(label.as_bytes());
            }
            srv.push(0);
            srv
        }
        _ => Vec::new(),
    };
    let found = !rdata.is_empty();
    let mut answer = query[..2].to_vec();
    // Response, recursion desired and available; NXDOMAIN unless found.
    answer.extend_from_slice(&[0x81, if found { 0x80 } else { 0x83 }]);
    answer.extend_from_slice(&[0, 1, 0, u8::from(found), 0, 0, 0, 0]);
    answer.extend_from_slice(query.get(12..question_end)?);
    if found {
        // The name by pointer to the question, the type, IN, TTL 60.
        answer.extend_from_slice(&[0xc0, 12]);
        answer.extend_from_slice(&qtype.to_be_bytes());
        answer.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        answer.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        answer.extend_from_slice(&rdata);
    }
    Some(answer)
}

struct Ejabberd {
    dir: tempfile::TempDir,
    node: String,
    child: Child,
    c2s_port: u16,
    s2s_port: u16,
}

impl Ejabberd {
    fn ctl(&self) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new(EJABBERDCTL);
        cmd.arg("--config-dir").arg(d).arg("--config").arg(d.join("ejabberd.yml"));
        cmd.arg("--spool").arg(d.join("spool")).arg("--logs").arg(d.join("logs")).arg("--node").arg(&self.node);
        cmd
    }

    fn start(ca: &Path, cert_and_key: &str, dns_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        for sub in ["spool", "logs"] {
            std::fs::create_dir_all(path(sub)).unwrap();
        }
        std::fs::copy(ca, path("ca.pem")).unwrap();
        std::fs::write(path("e.test.pem"), cert_and_key).unwrap();
        std::fs::write(
            path("inetrc"),
            // `localhost` for Erlang distribution (ejabberdctl reaches the
            // node by it), everything else from the test's DNS.
            // The system's files first: reading them resets the name servers.
            format!(
                "{{resolv_conf, \"\"}}.\n{{hosts_file, \"\"}}.\n{{nameserver, {{127,0,0,1}}, {dns_port}}}.\n\
                 {{host, {{127,0,0,1}}, [\"localhost\"]}}.\n{{lookup, [file, dns]}}.\n"
            ),
        )
        .unwrap();
        let (c2s_port, s2s_port) = (free_port(), free_port());
        let d = |name: &str| path(name).display().to_string();
        std::fs::write(
            path("ejabberd.yml"),
            format!(
                r#"hosts: ["{EJABBERD_DOMAIN}"]
loglevel: info
certfiles: ["{pem}"]
ca_file: "{ca}"
s2s_use_starttls: required
outgoing_s2s_families: [ipv4]
s2s_dns_timeout: 5
auth_method: internal
listen:
  - port: {c2s_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: true
  - port: {s2s_port}
    ip: "127.0.0.1"
    module: ejabberd_s2s_in
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  s2s:
    allow: all
modules:
  mod_roster: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_version: {{}}
  mod_s2s_dialback: {{}}
"#,
                pem = d("e.test.pem"),
                ca = d("ca.pem"),
            ),
        )
        .unwrap();
        let node = format!("starling_s2s_{}_{}@localhost", std::process::id(), free_port());
        // The node and every ejabberdctl call read this cookie (ejabberdctl
        // passes <config-dir>/vm.args to erl): without it they share
        // ~ejabberd/.erlang.cookie, which two nodes starting at once on a
        // fresh machine each create with their own value, and the loser's
        // ejabberdctl is then refused ("Invalid challenge reply").
        // Random: the node listens on loopback, and whoever knows its
        // cookie can run code in it.
        let mut raw = [0u8; 16];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut raw).unwrap();
        let cookie: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(path("vm.args"), format!("-setcookie {cookie}\n")).unwrap();
        let owner = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        if owner {
            // ejabberdctl runs the node as the `ejabberd` user.
            let chown = Command::new("chown").arg("-R").arg("ejabberd:ejabberd").arg(dir.path()).status().unwrap();
            assert!(chown.success());
        }
        let mut ejabberd = Ejabberd { child: Command::new("true").spawn().unwrap(), dir, node, c2s_port, s2s_port };
        // A process group of its own: the node runs under su, as a
        // grandchild, and must not outlive the test.
        ejabberd.child = ejabberd
            .ctl()
            .arg("foreground")
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = ejabberd.ctl().arg("started").stdout(Stdio::null()).status().unwrap();
        assert!(started.success(), "ejabberd did not start:\n{}", ejabberd.log());
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", c2s_port)).is_err() {
            assert!(Instant::now() < deadline, "ejabberd does not listen:\n{}", ejabberd.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        let registered =
            ejabberd.ctl().args(["register", "bob", EJABBERD_DOMAIN, PASSWORD]).stdout(Stdio::null()).status().unwrap();
        assert!(registered.success(), "ejabberdctl register failed:\n{}", ejabberd.log());
        ejabberd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/ejabberd.log")).unwrap_or_default()
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        let _ = self.ctl().arg("stop").stdout(Stdio::null()).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
    }
}

/// Starling's alice and ejabberd's bob subscribe to each other, see each
/// other's presence, chat both ways, and bob joins a room on Starling.
/// `valid`: certificates from a CA both trust; else ejabberd's comes from a
/// CA nobody trusts, Starling keeps its self-signed one, and each side lets
/// the other use dialback.
async fn federate(valid: bool) {
    if !Path::new(EJABBERDCTL).exists() {
        eprintln!("skipped: {EJABBERDCTL} is not installed (apt-get install ejabberd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, untrusted) = (TestCa::new().unwrap(), TestCa::new().unwrap());
    let root = dir.path().join("ca.pem");
    ca.write_root(&root).unwrap();
    let e = if valid { &ca } else { &untrusted }.issue(EJABBERD_DOMAIN, dir.path()).unwrap();
    let pem = std::fs::read_to_string(&e.cert).unwrap() + &std::fs::read_to_string(&e.key).unwrap();
    let (certificate, insecure) = if valid {
        let a = ca.issue(STARLING_DOMAIN, dir.path()).unwrap();
        let (cert, key) = (a.cert.display(), a.key.display());
        (format!("[tls.certificates.\"{STARLING_DOMAIN}\"]\ncert = \"{cert}\"\nkey = \"{key}\"\n"), "")
    } else {
        (String::new(), "insecure_domains = [\"e.test\"]\n")
    };
    let starling_port = free_port();
    let domains = vec![STARLING_DOMAIN.into(), format!("conference.{STARLING_DOMAIN}")];
    let dns_port = fake_dns(domains, starling_port).await;
    let ejabberd = Ejabberd::start(&root, &pem, dns_port);
    let starling = TestServer::builder(BIN)
        .domain(STARLING_DOMAIN)
        .s2s_port(starling_port)
        .s2s(&format!(
            "hosts = {{ \"{EJABBERD_DOMAIN}\" = \"127.0.0.1:{}\" }}\nca_file = \"{}\"\n{insecure}",
            ejabberd.s2s_port,
            root.display()
        ))
        .config(&certificate)
        .with_users(&[("alice", PASSWORD)])
        .unwrap();
    let context = |what: &str| format!("{what}\n--- starling:\n{}\n--- ejabberd:\n{}", starling.log(), ejabberd.log());

    let mut alice = starling.online("alice", "phone").await.unwrap();
    let mut bob = XmlClient::online(ejabberd.c2s_port, EJABBERD_DOMAIN, "bob", PASSWORD, "desk")
        .await
        .unwrap_or_else(|e| panic!("{}", context(&e.to_string())));

    alice.send("<presence to='bob@e.test' type='subscribe'/>").await.unwrap();
    bob.take_stanza("type='subscribe'").await.unwrap_or_else(|e| panic!("{}", context(&e.to_string())));
    bob.send("<presence to='alice@a.test' type='subscribed'/>").await.unwrap();
    alice.take_stanza("type='subscribed'").await.unwrap_or_else(|e| panic!("{}", context(&e.to_string())));
    alice.expect("from='bob@e.test/desk'").await.unwrap();

    bob.send("<presence to='alice@a.test' type='subscribe'/>").await.unwrap();
    alice.take_stanza("type='subscribe'").await.unwrap();
    alice.send("<presence to='bob@e.test' type='subscribed'/>").await.unwrap();
    bob.take_stanza("type='subscribed'").await.unwrap();
    bob.expect("alice@a.test/phone").await.unwrap();

    // A new session of Alice's probes ejabberd and gets Bob's presence.
    let mut laptop = starling.online("alice", "laptop").await.unwrap();
    laptop.expect("from='bob@e.test/desk'").await.unwrap();

    alice
        .send("<message to='bob@e.test' type='chat' id='m1'><body>hello from starling</body></message>")
        .await
        .unwrap();
    bob.expect("hello from starling").await.unwrap();
    bob.send("<message to='alice@a.test/phone' type='chat' id='m2'><body>hello from ejabberd</body></message>")
        .await
        .unwrap();
    let (_, message) = alice.take_stanza("id='m2'").await.unwrap();
    assert!(message.contains("hello from ejabberd"), "{message}");

    let muc = "<x xmlns='http://jabber.org/protocol/muc'/>";
    alice.send(&format!("<presence to='tea@conference.a.test/Alice'>{muc}</presence>")).await.unwrap();
    alice.expect("<subject").await.unwrap();
    bob.send(&format!("<presence to='tea@conference.a.test/Bob'>{muc}</presence>")).await.unwrap();
    bob.expect("<subject").await.unwrap_or_else(|e| panic!("{}", context(&e.to_string())));
    alice.expect("from='tea@conference.a.test/Bob'").await.unwrap();
    bob.send(
        "<message to='tea@conference.a.test' type='groupchat' id='g1'><body>ejabberd in the room</body></message>",
    )
    .await
    .unwrap();
    let (_, message) = alice.take_stanza("from='tea@conference.a.test/Bob'").await.unwrap();
    assert!(message.contains("ejabberd in the room"), "{message}");

    let (used, unused) = match valid {
        true => ("authenticated (SASL EXTERNAL)", "authenticated (dialback)"),
        false => ("authenticated (dialback)", "authenticated (SASL EXTERNAL)"),
    };
    let log = starling.log();
    assert!(log.contains(used) && !log.contains(unused), "{log}");
    let log = ejabberd.log();
    let mechanism = if valid { "EXTERNAL" } else { "dialback" };
    assert!(log.contains(&format!("Accepted inbound s2s {mechanism} authentication a.test -> e.test")), "{log}");
}

#[tokio::test]
async fn ejabberd_with_valid_certificates_uses_sasl_external() {
    federate(true).await;
}

#[tokio::test]
async fn ejabberd_with_untrusted_certificates_uses_dialback() {
    federate(false).await;
}
