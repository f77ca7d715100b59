//! Federation with a real peer: Prosody 0.12 (Debian's `prosody`) serving
//! `p.test` on loopback, as an unprivileged process with its own config in a
//! temp dir, and Starling serving `a.test`. Prosody has no static host map,
//! so a small plugin of the test's (`mod_test_s2s_hosts`) answers its
//! resolver for `a.test`. A raw-XML client on each side: subscriptions both
//! ways, presence (approval, probes, broadcast) and chat both ways. Once
//! with certificates from a CA both trust (SASL EXTERNAL), once with
//! certificates neither trusts (dialback). Skipped when Prosody is absent.

use starling_testkit::{free_port, TestCa, TestServer, XmlClient};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_starling");
const PROSODY: &str = "/usr/bin/prosody";
const PROSODYCTL: &str = "/usr/bin/prosodyctl";
const STARLING_DOMAIN: &str = "a.test";
const PROSODY_DOMAIN: &str = "p.test";
const PASSWORD: &str = "secret";

/// Resolves the domains in `test_s2s_hosts` to fixed addresses by
/// replacing the SRV resolver mod_s2s asks (looked up at each connection).
const HOSTS_PLUGIN: &str = r#"
module:set_global();
local manual = require "net.resolvers.manual";
local service = require "net.resolvers.service";
local hosts = module:get_option("test_s2s_hosts", {});
local original = service.new;
service.new = function(hostname, service_name, proto, extra)
	local target = hosts[hostname];
	if not target then return original(hostname, service_name, proto, extra); end
	if service_name ~= "xmpp-server" then return manual.new({}, proto, extra); end
	return manual.new({ { proto .. "4", target[1], target[2], extra } }, proto, extra);
end
module:log("info", "s2s addresses fixed for the test");
"#;

struct Prosody {
    child: Child,
    dir: tempfile::TempDir,
    c2s_port: u16,
    s2s_port: u16,
}

/// Whether `prosody` can run here; a test that cannot says so and passes.
fn prosody_available() -> bool {
    if Path::new(PROSODY).exists() && Path::new(PROSODYCTL).exists() {
        return true;
    }
    eprintln!("skipped: {PROSODY} is not installed (apt-get install prosody)");
    false
}

/// Runs `program` as the `prosody` user when we are root (Prosody refuses
/// to keep root, and the test should not need it).
fn unprivileged(program: &str) -> Command {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        return Command::new(program);
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=prosody", "--regid=prosody", "--clear-groups", "--", program]);
    cmd
}

impl Prosody {
    /// `ca`: the PEM file of roots Prosody trusts; `cert`: its certificate
    /// and key for p.test; `secure`: `s2s_secure_auth`.
    fn start(ca: &Path, cert: (&Path, &Path), secure: bool, starling_s2s_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::create_dir_all(path("data")).unwrap();
        std::fs::create_dir_all(path("plugins")).unwrap();
        // Where Prosody looks for certificates by default; empty, but present.
        std::fs::create_dir_all(path("certs")).unwrap();
        std::fs::write(path("plugins/mod_test_s2s_hosts.lua"), HOSTS_PLUGIN).unwrap();
        for (from, to) in [(ca, "ca.pem"), (cert.0, "p.test.crt"), (cert.1, "p.test.key")] {
            std::fs::copy(from, path(to)).unwrap();
        }
        let (c2s_port, s2s_port) = (free_port(), free_port());
        let d = |name: &str| path(name).display().to_string();
        let config = format!(
            r#"
pidfile = "{pid}"
certificates = "{certs}"
data_path = "{data}"
plugin_paths = {{ "{plugins}" }}
log = {{ {{ levels = {{ min = "debug" }}, to = "file", filename = "{log}" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s_port} }}
s2s_ports = {{ {s2s_port} }}
c2s_direct_tls_ports = {{}}
s2s_direct_tls_ports = {{}}
component_ports = {{}}
http_ports = {{}}
https_ports = {{}}
modules_enabled = {{ "roster", "saslauth", "tls", "dialback", "disco", "ping", "version", "test_s2s_hosts" }}
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = {secure}
test_s2s_hosts = {{
  ["{STARLING_DOMAIN}"] = {{ "127.0.0.1", {starling_s2s_port} }},
  ["conference.{STARLING_DOMAIN}"] = {{ "127.0.0.1", {starling_s2s_port} }},
}}
ssl = {{ cafile = "{ca}" }}
VirtualHost "{PROSODY_DOMAIN}"
  ssl = {{ certificate = "{crt}", key = "{key}", cafile = "{ca}" }}
"#,
            pid = d("prosody.pid"),
            certs = d("certs"),
            data = d("data"),
            plugins = d("plugins"),
            log = d("prosody.log"),
            ca = d("ca.pem"),
            crt = d("p.test.crt"),
            key = d("p.test.key"),
        );
        std::fs::write(path("prosody.cfg.lua"), config).unwrap();
        if Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n")) {
            let chown = Command::new("chown").arg("-R").arg("prosody:prosody").arg(dir.path()).status().unwrap();
            assert!(chown.success());
        }
        let registered = unprivileged(PROSODYCTL)
            .arg("--config")
            .arg(path("prosody.cfg.lua"))
            .args(["register", "bob", PROSODY_DOMAIN, PASSWORD])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(registered.success(), "prosodyctl register failed");
        let child = unprivileged(PROSODY)
            .arg("-F")
            .arg("--config")
            .arg(path("prosody.cfg.lua"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut prosody = Prosody { child, dir, c2s_port, s2s_port };
        prosody.wait_listening();
        prosody
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prosody.log")).unwrap_or_default()
    }

    /// Until both ports accept connections (its listeners are up).
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in [self.c2s_port, self.s2s_port] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(status) = self.child.try_wait().unwrap() {
                    panic!("prosody exited with {status}:\n{}", self.log());
                }
                assert!(Instant::now() < deadline, "prosody did not listen:\n{}", self.log());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn toml_path(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

/// Starling's alice and Prosody's bob subscribe to each other, see each
/// other's presence and chat both ways.
async fn federate(starling: &TestServer, prosody: &Prosody) {
    let mut alice = starling.online("alice", "phone").await.unwrap();
    let mut bob = XmlClient::online(prosody.c2s_port, PROSODY_DOMAIN, "bob", PASSWORD, "desk").await.unwrap();
    let context = |what: &str| format!("{what}\n--- starling:\n{}\n--- prosody:\n{}", starling.log(), prosody.log());

    alice.send("<presence to='bob@p.test' type='subscribe'/>").await.unwrap();
    let request = bob.take_stanza("type='subscribe'").await.unwrap_or_else(|e| panic!("{}", context(&e.to_string())));
    assert!(request.1.contains("alice@a.test"), "{}", request.1);
    bob.send("<presence to='alice@a.test' type='subscribed'/>").await.unwrap();
    alice.take_stanza("type='subscribed'").await.unwrap();
    alice.expect("from='bob@p.test/desk'").await.unwrap();

    bob.send("<presence to='alice@a.test' type='subscribe'/>").await.unwrap();
    let request = alice.take_stanza("type='subscribe'").await.unwrap_or_else(|e| panic!("{}", context(&e.to_string())));
    assert!(request.1.contains("from='bob@p.test'"), "{}", request.1);
    alice.send("<presence to='bob@p.test' type='subscribed'/>").await.unwrap();
    bob.take_stanza("type='subscribed'").await.unwrap();
    bob.expect("alice@a.test/phone").await.unwrap();

    // A new session of Alice's probes Prosody and gets Bob's presence.
    let mut laptop = starling.online("alice", "laptop").await.unwrap();
    laptop.expect("from='bob@p.test/desk'").await.unwrap();
    bob.send("<presence><show>away</show></presence>").await.unwrap();
    let (_, away) = alice.take_stanza("from='bob@p.test/desk'").await.unwrap();
    assert!(away.contains("<show>away</show>"), "{away}");

    alice
        .send("<message to='bob@p.test' type='chat' id='m1'><body>hello from starling</body></message>")
        .await
        .unwrap();
    bob.expect("hello from starling").await.unwrap_or_else(|e| panic!("{}", context(&e.to_string())));
    bob.send("<message to='alice@a.test/phone' type='chat' id='m2'><body>hello from prosody</body></message>")
        .await
        .unwrap();
    let (_, message) = alice.take_stanza("id='m2'").await.unwrap();
    assert!(message.contains("from='bob@p.test/desk'") && message.contains("hello from prosody"), "{message}");

    // Bob joins a room on Starling (XEP-0045) and talks in it.
    let muc = "<x xmlns='http://jabber.org/protocol/muc'/>";
    alice.send(&format!("<presence to='tea@conference.a.test/Alice'>{muc}</presence>")).await.unwrap();
    alice.expect("<subject").await.unwrap();
    bob.send(&format!("<presence to='tea@conference.a.test/Bob'>{muc}</presence>")).await.unwrap();
    let joined = bob.expect("<subject").await.unwrap_or_else(|e| panic!("{}", context(&e.to_string())));
    assert!(joined.contains("from='tea@conference.a.test/Alice'"), "{joined}");
    alice.expect("from='tea@conference.a.test/Bob'").await.unwrap();
    bob.send("<message to='tea@conference.a.test' type='groupchat' id='g1'><body>prosody in the room</body></message>")
        .await
        .unwrap();
    let (_, message) = alice.take_stanza("from='tea@conference.a.test/Bob'").await.unwrap();
    assert!(message.contains("prosody in the room"), "{message}");
}

fn starling(s2s_port: u16, prosody_port: u16, s2s: &str, extra: &str) -> TestServer {
    TestServer::builder(BIN)
        .domain(STARLING_DOMAIN)
        .s2s_port(s2s_port)
        .s2s(&format!("hosts = {{ \"{PROSODY_DOMAIN}\" = \"127.0.0.1:{prosody_port}\" }}\n{s2s}"))
        .config(extra)
        .with_users(&[("alice", PASSWORD)])
        .expect("starling starts")
}

fn issued(ca: &TestCa, dir: &Path, domain: &str) -> (PathBuf, PathBuf) {
    let cert = ca.issue(domain, dir).unwrap();
    (cert.cert, cert.key)
}

#[tokio::test]
async fn prosody_with_valid_certificates_uses_sasl_external() {
    if !prosody_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new().unwrap();
    let root = dir.path().join("ca.pem");
    ca.write_root(&root).unwrap();
    let (p_cert, p_key) = issued(&ca, dir.path(), PROSODY_DOMAIN);
    let (a_cert, a_key) = issued(&ca, dir.path(), STARLING_DOMAIN);
    let starling_port = free_port();
    let prosody = Prosody::start(&root, (&p_cert, &p_key), true, starling_port);
    let starling = starling(
        starling_port,
        prosody.s2s_port,
        &format!("ca_file = {}\n", toml_path(&root)),
        &format!(
            "[tls.certificates.\"{STARLING_DOMAIN}\"]\ncert = {}\nkey = {}\n",
            toml_path(&a_cert),
            toml_path(&a_key)
        ),
    );
    federate(&starling, &prosody).await;
    let log = starling.log();
    assert!(log.contains("authenticated (SASL EXTERNAL)"), "{log}");
    assert!(!log.contains("authenticated (dialback)"), "{log}");
    // Both ways: Prosody accepted ours and used it for its own stream.
    let log = prosody.log();
    assert!(log.contains("Accepting SASL EXTERNAL identity from a.test"), "{log}");
    assert!(log.contains("SASL EXTERNAL with a.test succeeded"), "{log}");
}

#[tokio::test]
async fn prosody_with_untrusted_certificates_uses_dialback() {
    if !prosody_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Prosody's certificate comes from a CA nobody trusts; Starling's is
    // its self-signed one. Each trusts only an unrelated root.
    let (untrusted, trusted) = (TestCa::new().unwrap(), TestCa::new().unwrap());
    let root = dir.path().join("ca.pem");
    trusted.write_root(&root).unwrap();
    let (p_cert, p_key) = issued(&untrusted, dir.path(), PROSODY_DOMAIN);
    let starling_port = free_port();
    let prosody = Prosody::start(&root, (&p_cert, &p_key), false, starling_port);
    let starling = starling(
        starling_port,
        prosody.s2s_port,
        &format!("ca_file = {}\ninsecure_domains = [\"{PROSODY_DOMAIN}\"]\n", toml_path(&root)),
        "",
    );
    federate(&starling, &prosody).await;
    let log = starling.log();
    assert!(log.contains("authenticated (dialback)"), "{log}");
    assert!(!log.contains("authenticated (SASL EXTERNAL)"), "{log}");
    // Prosody asked Starling, the authoritative server, about the key.
    let log = prosody.log();
    assert!(log.contains("<db:verify") && log.contains("connection a.test->p.test is now authenticated"), "{log}");
}
