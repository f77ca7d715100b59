//! The typed configuration root, read from one TOML file. Every section
//! rejects unknown keys so a typo is an error naming the key, not a silent default.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub c2s: C2sConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    /// The XEP-0114 listener for external components.
    pub component: ComponentListenConfig,
    /// Federation: streams to and from other servers (RFC 6120, `jabber:server`).
    pub s2s: S2sConfig,
    /// Service domains `[[services]]`, each served by a module or by an
    /// external component.
    pub services: Vec<ServiceConfig>,
    /// Per-module sections `[modules.NAME]`; which modules run is
    /// `server.modules`.
    pub modules: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Virtual hosts served (the domain part of users' addresses).
    pub hosts: Vec<String>,
    pub data_dir: PathBuf,
    /// `sqlite://PATH` (default: `starling.db` in data_dir) or
    /// `postgres://user@host:port/db`; the env var STARLING_DATABASE_URL wins.
    pub database_url: Option<String>,
    pub database_max_connections: u32,
    /// Feature modules to load, by name.
    pub modules: Vec<String>,
    /// Seconds to wait for sessions to close on shutdown.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct C2sConfig {
    /// Listeners with STARTTLS (RFC 6120 §5).
    pub listen: Vec<SocketAddr>,
    /// Listeners with TLS from the first byte (XEP-0368), ALPN `xmpp-client`.
    pub direct_tls_listen: Vec<SocketAddr>,
    /// Refuse to authenticate before STARTTLS (RFC 6120 §5.3.1 mandatory-to-negotiate).
    pub require_encryption: bool,
    /// What happens when a client binds a resource already in use (RFC 6120 §7.7.2.2).
    pub resource_conflict: ResourceConflict,
    pub max_connections: usize,
    /// Seconds a session whose connection was lost waits to be resumed
    /// (XEP-0198 §5, advertised as `max`); 0 disables resumption.
    pub resume_timeout_secs: u64,
    /// Sessions of one account waiting to be resumed; a newer one ends the oldest.
    pub max_hibernated_per_account: usize,
    /// Stanzas sent and not acknowledged (XEP-0198) before the session stops
    /// taking more from its queue until the client acknowledges.
    pub max_unacked_stanzas: usize,
    /// Stanzas held for an inactive client (XEP-0352) before they are all sent.
    pub csi_max_held: usize,
    /// Seconds a FAST login token (XEP-0484) is valid; it is renewed when
    /// used past half of that.
    pub fast_token_lifetime_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComponentListenConfig {
    /// Ports external components (XEP-0114, `jabber:component:accept`)
    /// connect to; only opened when a service has a `secret`.
    pub listen: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S2sConfig {
    /// Federation on: stanzas to other domains go to their servers. Off,
    /// they bounce with `remote-server-not-found` and nothing listens.
    pub enabled: bool,
    /// Listeners for other servers' streams (STARTTLS).
    pub listen: Vec<SocketAddr>,
    /// Listeners with TLS from the first byte (XEP-0368), ALPN `xmpp-server`.
    pub direct_tls_listen: Vec<SocketAddr>,
    /// Refuse streams (both ways) that do not negotiate TLS.
    pub require_encryption: bool,
    /// Only peers whose certificate is valid for their domain are
    /// accepted, outgoing and incoming, except those in `insecure_domains`
    /// (which may then authenticate with dialback, XEP-0220). False lets
    /// every peer use dialback.
    pub require_valid_certificates: bool,
    /// Domains that may authenticate with dialback without a valid certificate.
    pub insecure_domains: Vec<String>,
    /// Domains never federated with, either way.
    pub deny: Vec<String>,
    /// PEM file of CA certificates trusted for peers' certificates, instead
    /// of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Where to connect for a domain instead of DNS (`"peer.example" =
    /// "192.0.2.1:5269"`).
    pub hosts: BTreeMap<String, SocketAddr>,
    /// Streams to and from other servers at once; more are refused.
    pub max_connections: usize,
    /// Stanzas queued for one remote domain (while its stream is being set
    /// up or written) before new ones bounce.
    pub queue: usize,
    /// Seconds from connecting to an authenticated stream, both ways.
    pub handshake_timeout_secs: u64,
    /// Seconds without traffic after which a stream is closed.
    pub idle_timeout_secs: u64,
    /// Stanzas per second one incoming stream may send (a second's worth at
    /// once); beyond, it is read more slowly. 0: no limit.
    pub max_stanzas_per_second: u32,
}

/// One service domain (`[[services]]`): listed in its host's disco#items
/// (XEP-0030), and every stanza to the domain or an address at it
/// (`room@domain/nick`) goes to whoever serves it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub domain: String,
    /// The host whose disco#items lists the service; default: the host the
    /// domain is a subdomain of.
    pub host: Option<String>,
    /// The name in disco#items.
    pub name: Option<String>,
    /// Served by this module (one in `server.modules`)…
    pub module: Option<String>,
    /// …with these options for this domain.
    pub options: Option<toml::Table>,
    /// …or by an external component (XEP-0114) that authenticates with this secret.
    pub secret: Option<String>,
}

/// Service modules and the subdomain (and disco#items name) each gets under
/// every host when no `[[services]]` entry names the module.
const DEFAULT_SERVICES: [(&str, &str, &str); 3] = [
    ("pubsub", "pubsub", "Publish-Subscribe"),
    ("upload", "upload", "HTTP File Upload"),
    ("muc", "conference", "Chatrooms"),
];

/// Who serves a service domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind<'a> {
    Module(&'a str),
    Component { secret: &'a str },
}

impl ServiceConfig {
    /// Validation made sure exactly one of `module` and `secret` is set.
    pub fn kind(&self) -> ServiceKind<'_> {
        match (&self.module, &self.secret) {
            (Some(module), _) => ServiceKind::Module(module),
            (None, secret) => ServiceKind::Component { secret: secret.as_deref().unwrap_or_default() },
        }
    }

    /// The host whose disco#items lists it (validation made sure there is one).
    pub fn parent_host<'a>(&'a self, hosts: &'a [String]) -> Option<&'a str> {
        if let Some(host) = &self.host {
            return Some(host);
        }
        // The longest host the domain is under, so `a.b.example.com` goes to `b.example.com`.
        hosts
            .iter()
            .filter(|h| self.domain.strip_suffix(h.as_str()).is_some_and(|rest| rest.ends_with('.')))
            .max_by_key(|h| h.len())
            .map(String::as_str)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceConflict {
    /// Disconnect the existing session with `<conflict/>` and bind the new one.
    Replace,
    /// Refuse the new bind with `<conflict/>`.
    Refuse,
    /// Bind the new session under a server-generated resource.
    Rename,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest stanza accepted, in bytes (advertised with XEP-0478).
    pub max_stanza_bytes: usize,
    pub max_depth: usize,
    pub max_attributes: usize,
    /// Seconds from TCP accept to a bound resource.
    pub handshake_timeout_secs: u64,
    /// Seconds without any byte from the client (whitespace keepalives count).
    pub idle_timeout_secs: u64,
    /// Stanzas queued towards one session before new ones bounce with
    /// `<resource-constraint/>`.
    pub session_queue: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// PBKDF2 iterations for new SCRAM credentials (≥ 4096).
    pub scram_iterations: u32,
    /// Offer SASL PLAIN (only ever over TLS unless `plain_without_tls`).
    pub plain: bool,
    /// Offer PLAIN on unencrypted streams: for benchmarks on loopback only.
    pub plain_without_tls: bool,
    /// Failed attempts on one stream before it is closed.
    pub max_failures_per_stream: u32,
    /// Failures from one IP address within `throttle_window_secs` after which
    /// every further attempt from it waits `throttle_delay_ms` (doubling).
    pub throttle_after: u32,
    pub throttle_window_secs: u64,
    pub throttle_delay_ms: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Certificate per host; hosts without one get a self-signed certificate
    /// generated at first start in `data_dir/certs`.
    pub certificates: BTreeMap<String, CertificateConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Clients over HTTP: RFC 7395 WebSocket at `/xmpp-websocket`, XEP-0206
/// BOSH at `/http-bind`, XEP-0156 discovery at `/.well-known/host-meta[.json]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Plain HTTP listeners, meant behind a TLS-terminating reverse proxy.
    pub listen: Vec<SocketAddr>,
    /// HTTPS listeners with the hosts' certificates (SNI).
    pub tls_listen: Vec<SocketAddr>,
    /// Count streams on the plain listeners as encrypted (the proxy in front
    /// does TLS): needed for PLAIN and `c2s.require_encryption`. Set it to
    /// false when the plain listener is reachable without TLS.
    pub plain_is_secure: bool,
    /// Base URL advertised by host-meta (XEP-0156), e.g.
    /// `https://xmpp.example.com`; by default the request's Host header.
    pub public_url: Option<String>,
    /// Origins allowed by CORS (`Access-Control-Allow-Origin`); `*` for any.
    pub cors_origins: Vec<String>,
    /// Longest a BOSH request is held waiting for data (XEP-0124 `wait`).
    pub bosh_max_wait_secs: u64,
    /// Most BOSH requests held at once per session (XEP-0124 `hold`).
    pub bosh_max_hold: u32,
    /// Seconds without any BOSH request before the session counts as lost
    /// (XEP-0124 `inactivity`; stream management may then keep it).
    pub bosh_inactivity_secs: u64,
    /// BOSH sessions at once; more are refused.
    pub bosh_max_sessions: usize,
    /// Seconds between our WebSocket pings on a quiet connection; 0 = none.
    pub websocket_ping_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// tracing filter, e.g. `info` or `starling_c2s=debug,info`; RUST_LOG wins.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hosts: vec!["localhost".into()],
            data_dir: PathBuf::from("./data"),
            database_url: None,
            database_max_connections: 8,
            modules: [
                "disco",
                "ping",
                "version",
                "time",
                "roster",
                "offline",
                "blocking",
                "carbons",
                "vcard",
                "private",
                "last",
                "contact_addresses",
                "caps",
                "register",
                "upload",
                "mam",
                "push",
                "muc",
                "pubsub",
            ]
            .map(String::from)
            .to_vec(),
            shutdown_grace_secs: 5,
        }
    }
}

impl Default for C2sConfig {
    fn default() -> Self {
        C2sConfig {
            listen: vec!["0.0.0.0:5222".parse().expect("valid literal")],
            direct_tls_listen: vec!["0.0.0.0:5223".parse().expect("valid literal")],
            require_encryption: true,
            resource_conflict: ResourceConflict::Replace,
            max_connections: 19_000,
            resume_timeout_secs: 300,
            max_hibernated_per_account: 5,
            max_unacked_stanzas: 1000,
            csi_max_held: 100,
            fast_token_lifetime_secs: 14 * 86_400,
        }
    }
}

impl Default for ComponentListenConfig {
    fn default() -> Self {
        ComponentListenConfig { listen: vec!["127.0.0.1:5347".parse().expect("valid literal")] }
    }
}

impl Default for S2sConfig {
    fn default() -> Self {
        S2sConfig {
            enabled: true,
            listen: vec!["0.0.0.0:5269".parse().expect("valid literal")],
            direct_tls_listen: Vec::new(),
            require_encryption: true,
            require_valid_certificates: true,
            insecure_domains: Vec::new(),
            deny: Vec::new(),
            ca_file: None,
            hosts: BTreeMap::new(),
            max_connections: 1000,
            queue: 256,
            handshake_timeout_secs: 30,
            idle_timeout_secs: 600,
            max_stanzas_per_second: 1000,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            max_attributes: 64,
            handshake_timeout_secs: 30,
            idle_timeout_secs: 900,
            session_queue: 1024,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            scram_iterations: 4096,
            plain: true,
            plain_without_tls: false,
            max_failures_per_stream: 3,
            throttle_after: 5,
            throttle_window_secs: 60,
            throttle_delay_ms: 500,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: vec!["127.0.0.1:5280".parse().expect("valid literal")],
            tls_listen: vec!["0.0.0.0:5443".parse().expect("valid literal")],
            plain_is_secure: true,
            public_url: None,
            cors_origins: vec!["*".into()],
            bosh_max_wait_secs: 60,
            bosh_max_hold: 1,
            bosh_inactivity_secs: 60,
            bosh_max_sessions: 10_000,
            websocket_ping_secs: 60,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: LogFormat::Text }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.into(), message },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: PathBuf::new(), message: e.to_string() })?;
        config.add_default_services();
        config.validate()?;
        Ok(config)
    }

    /// Gives each service module in `server.modules` that no `[[services]]`
    /// names a domain under every host (`upload.example.org`…), so a server
    /// with no config file offers what people expect of one.
    fn add_default_services(&mut self) {
        for (module, subdomain, name) in DEFAULT_SERVICES {
            let named = self.services.iter().any(|s| s.module.as_deref() == Some(module));
            if named || !self.server.modules.iter().any(|m| m == module) {
                continue;
            }
            for host in &self.server.hosts {
                let domain = format!("{subdomain}.{host}");
                if self.is_local_host(&domain) || self.services.iter().any(|s| s.domain == domain) {
                    continue;
                }
                self.services.push(ServiceConfig {
                    domain,
                    host: Some(host.clone()),
                    name: Some(name.to_string()),
                    module: Some(module.to_string()),
                    options: None,
                    secret: None,
                });
            }
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| Err(ConfigError::Invalid { key, message: message.into() });
        if self.server.hosts.is_empty() {
            return invalid("server.hosts", "at least one host is required");
        }
        for host in &self.server.hosts {
            if starling_proto::BareJid::new(host).map_or(true, |j| j.node().is_some()) {
                return invalid("server.hosts", &format!("{host:?} is not a valid domain"));
            }
        }
        for host in self.tls.certificates.keys() {
            if !self.server.hosts.contains(host) {
                return invalid("tls.certificates", &format!("{host:?} is not in server.hosts"));
            }
        }
        if self.auth.scram_iterations < 4096 {
            return invalid("auth.scram_iterations", "must be at least 4096");
        }
        if self.limits.max_stanza_bytes < 10_000 {
            return invalid("limits.max_stanza_bytes", "must be at least 10000 (RFC 6120 §13.12)");
        }
        if self.limits.session_queue == 0 {
            return invalid("limits.session_queue", "must be at least 1");
        }
        if self.c2s.max_unacked_stanzas == 0 || self.c2s.max_hibernated_per_account == 0 {
            return invalid("c2s", "max_unacked_stanzas and max_hibernated_per_account must be at least 1");
        }
        if self.c2s.listen.is_empty() && self.c2s.direct_tls_listen.is_empty() {
            return invalid("c2s.listen", "no listener configured");
        }
        self.validate_services()?;
        if self.s2s.queue == 0 || self.s2s.max_connections == 0 || self.s2s.handshake_timeout_secs == 0 {
            return invalid("s2s", "queue, max_connections and handshake_timeout_secs must be at least 1");
        }
        if self.http.bosh_max_wait_secs == 0 || self.http.bosh_inactivity_secs == 0 {
            return invalid("http", "bosh_max_wait_secs and bosh_inactivity_secs must be at least 1");
        }
        if let Some(url) = &self.http.public_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return invalid("http.public_url", "must start with https:// or http://");
            }
        }
        for name in self.modules.keys() {
            if !self.server.modules.contains(name) {
                return invalid("modules", &format!("section [modules.{name}] for a module not in server.modules"));
            }
        }
        Ok(())
    }

    fn validate_services(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid { key: "services", message });
        let mut seen = std::collections::HashSet::new();
        for service in &self.services {
            let domain = &service.domain;
            // Addresses are compared in their normalised form (RFC 7622 §3.2: lowercase).
            if starling_proto::BareJid::new(domain).map_or(true, |j| j.node().is_some() || j.as_str() != domain) {
                return invalid(format!("{domain:?} is not a valid domain in normalised (lowercase) form"));
            }
            if self.is_local_host(domain) || !seen.insert(domain) {
                return invalid(format!("{domain:?} is configured twice (or is also in server.hosts)"));
            }
            match service.parent_host(&self.server.hosts) {
                Some(host) if self.is_local_host(host) => {}
                Some(host) => return invalid(format!("{domain:?}: host {host:?} is not in server.hosts")),
                None => return invalid(format!("{domain:?} is under no host of server.hosts: set `host`")),
            }
            match (&service.module, &service.secret) {
                (Some(module), None) if self.server.modules.contains(module) => {}
                (Some(module), None) => {
                    return invalid(format!("{domain:?}: module {module:?} is not in server.modules"));
                }
                (None, Some(secret)) if service.options.is_none() && !secret.is_empty() => {}
                (None, Some(_)) => {
                    return invalid(format!("{domain:?}: a component needs a non-empty secret and takes no options"));
                }
                _ => return invalid(format!("{domain:?}: set either `module` or (for a component) `secret`")),
            }
        }
        Ok(())
    }

    /// The database URL: STARLING_DATABASE_URL, else config, else SQLite in data_dir.
    pub fn database_url(&self) -> String {
        std::env::var("STARLING_DATABASE_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| self.server.database_url.clone())
            .unwrap_or_else(|| format!("sqlite://{}", self.server.data_dir.join("starling.db").display()))
    }

    pub fn is_local_host(&self, domain: &str) -> bool {
        self.server.hosts.iter().any(|h| h == domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.server.hosts, ["localhost"]);
        assert_eq!(c.limits.max_stanza_bytes, 262_144);
        assert!(c.c2s.require_encryption);
    }

    #[test]
    fn service_modules_get_a_domain_under_each_host_unless_configured() {
        let domains = |toml: &str| -> Vec<String> {
            Config::parse(toml).unwrap().services.into_iter().map(|s| s.domain).collect()
        };
        let hosts = "[server]\nhosts = [\"a.example\", \"b.example\"]\nmodules = [\"upload\"]\n";
        assert_eq!(domains(hosts), ["upload.a.example", "upload.b.example"]);
        let named = format!("{hosts}[[services]]\ndomain = \"files.a.example\"\nmodule = \"upload\"\n");
        assert_eq!(domains(&named), ["files.a.example"]);
        assert!(domains("[server]\nmodules = [\"disco\"]\n").is_empty(), "only for loaded modules");
        assert_eq!(
            domains(""),
            ["pubsub.localhost", "upload.localhost", "conference.localhost"],
            "a server with no config file"
        );
    }

    #[test]
    fn example_config_is_valid_and_documents_the_defaults() {
        let example = Config::parse(include_str!("../../../starling.example.toml")).unwrap();
        let defaults = Config::default();
        assert_eq!(format!("{:?}", example.limits), format!("{:?}", defaults.limits));
        assert_eq!(format!("{:?}", example.auth), format!("{:?}", defaults.auth));
        assert_eq!(format!("{:?}", example.c2s), format!("{:?}", defaults.c2s));
        assert_eq!(format!("{:?}", example.component), format!("{:?}", defaults.component));
        assert_eq!(format!("{:?}", example.http), format!("{:?}", defaults.http));
        assert_eq!(format!("{:?}", example.s2s), format!("{:?}", defaults.s2s));
        assert_eq!(example.server.modules, defaults.server.modules);
    }

    #[test]
    fn services_are_validated() {
        let base = "[server]\nhosts = [\"example.com\"]\nmodules = [\"disco\"]\n";
        let parse = |services: &str| Config::parse(&format!("{base}{services}"));
        let ok = parse("[[services]]\ndomain = \"a.b.example.com\"\nsecret = \"s\"\n").unwrap();
        assert_eq!(ok.services[0].parent_host(&ok.server.hosts), Some("example.com"));
        assert_eq!(ok.services[0].kind(), ServiceKind::Component { secret: "s" });
        for (services, why) in [
            ("[[services]]\ndomain = \"c.example.org\"\nsecret = \"s\"\n", "under no host"),
            ("[[services]]\ndomain = \"c.example.com\"\n", "either"),
            ("[[services]]\ndomain = \"c.example.com\"\nsecret = \"s\"\nmodule = \"disco\"\n", "either"),
            ("[[services]]\ndomain = \"c.example.com\"\nsecret = \"\"\n", "non-empty"),
            ("[[services]]\ndomain = \"c.example.com\"\nmodule = \"muc\"\n", "not in server.modules"),
            ("[[services]]\ndomain = \"example.com\"\nsecret = \"s\"\n", "twice"),
            ("[[services]]\ndomain = \"GW.example.com\"\nsecret = \"s\"\n", "lowercase"),
            ("[[services]]\ndomain = \"c.example.com\"\nsecret = \"s\"\nhost = \"x.org\"\n", "not in server.hosts"),
        ] {
            let e = parse(services).unwrap_err().to_string();
            assert!(e.contains("services") && e.contains(why), "{services}: {e}");
        }
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = Config::parse("[c2s]\nrequire_encyption = false\n").unwrap_err().to_string();
        assert!(e.contains("require_encyption"), "{e}");
    }

    #[test]
    fn bad_value_is_an_error_naming_the_key() {
        let e = Config::parse("[auth]\nscram_iterations = 10\n").unwrap_err().to_string();
        assert!(e.contains("auth.scram_iterations"), "{e}");
        let e = Config::parse("[limits]\nmax_stanza_bytes = \"big\"\n").unwrap_err().to_string();
        assert!(e.contains("max_stanza_bytes"), "{e}");
        let e = Config::parse("[server]\nhosts = [\"a@b\"]\n").unwrap_err().to_string();
        assert!(e.contains("server.hosts"), "{e}");
    }
}
