//! A `starling serve` child process for one test.
//!
//! Storage: by default each server keeps an SQLite database in its own temp
//! data dir. When `STARLING_DATABASE_URL` names a PostgreSQL server (as
//! `.ci/run` arranges), each server gets a fresh database of its own there
//! (`CREATE DATABASE starling_t_…` through that URL, which needs the
//! CREATEDB privilege), handed to the child process in the same variable and
//! dropped with the `TestServer`. Tests running in parallel thus never see
//! each other's accounts. Any other value of the variable (an SQLite URL
//! would be one file shared by every server) is removed from the children.

use crate::XmlClient;
use anyhow::{anyhow, bail, Context};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The variable the server reads its database URL from (it wins over the config).
pub const DATABASE_URL_VAR: &str = "STARLING_DATABASE_URL";

pub struct TestServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    binary: PathBuf,
    /// Dropped after `child` is killed (fields drop after `Drop::drop`).
    database: Option<FreshDatabase>,
    pub domain: String,
    /// STARTTLS port.
    pub port: u16,
    /// Direct TLS port.
    pub tls_port: u16,
    /// External component (XEP-0114) port; open when a component is configured.
    pub component_port: u16,
    /// Plain HTTP port (WebSocket, BOSH, host-meta).
    pub http_port: u16,
    /// HTTPS port.
    pub https_port: u16,
    /// Server-to-server (federation) port, on 127.0.0.1.
    pub s2s_port: u16,
    /// The passwords `add_user` set, for [`login`](Self::login) and [`online`](Self::online).
    passwords: Mutex<HashMap<String, String>>,
}

pub struct TestServerBuilder {
    binary: PathBuf,
    domain: String,
    extra_config: String,
    c2s_config: String,
    http_config: String,
    s2s_config: String,
    s2s_port: Option<u16>,
    require_encryption: bool,
}

/// A loopback port free right now (a test that must know a server's port
/// before starting it, e.g. to point another server at it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl TestServerBuilder {
    /// Configures an external component (XEP-0114) for `domain`.
    pub fn component(self, domain: &str, secret: &str) -> Self {
        self.config(&format!("[[services]]\ndomain = \"{domain}\"\nsecret = \"{secret}\"\n"))
    }

    /// Extra TOML appended to the generated config (its own sections only).
    pub fn config(mut self, toml: &str) -> Self {
        self.extra_config.push_str(toml);
        self.extra_config.push('\n');
        self
    }

    /// Extra `key = value` lines for the generated `[c2s]` section.
    pub fn c2s(mut self, toml: &str) -> Self {
        self.c2s_config.push_str(toml);
        self.c2s_config.push('\n');
        self
    }

    /// Starts the server and makes an account for each `(user, password)`.
    pub fn with_users(self, users: &[(&str, &str)]) -> anyhow::Result<TestServer> {
        let server = self.start()?;
        for (user, password) in users {
            server.add_user(user, password)?;
        }
        Ok(server)
    }

    /// Extra `key = value` lines for the generated `[http]` section.
    pub fn http(mut self, toml: &str) -> Self {
        self.http_config.push_str(toml);
        self.http_config.push('\n');
        self
    }

    /// The domain served (default `localhost`).
    pub fn domain(mut self, domain: &str) -> Self {
        self.domain = domain.to_owned();
        self
    }

    /// Extra `key = value` lines for the generated `[s2s]` section.
    pub fn s2s(mut self, toml: &str) -> Self {
        self.s2s_config.push_str(toml);
        self.s2s_config.push('\n');
        self
    }

    /// The federation port (default: a free one), for a server another
    /// one is told about before either starts.
    pub fn s2s_port(mut self, port: u16) -> Self {
        self.s2s_port = Some(port);
        self
    }

    pub fn require_encryption(mut self, yes: bool) -> Self {
        self.require_encryption = yes;
        self
    }

    pub fn start(self) -> anyhow::Result<TestServer> {
        let dir = tempfile::tempdir()?;
        let database = match std::env::var(DATABASE_URL_VAR) {
            Ok(url) if is_postgres(&url) => Some(FreshDatabase::create(&url)?),
            _ => None,
        };
        let mut server = TestServer {
            child: None,
            dir,
            binary: self.binary,
            database,
            domain: self.domain,
            port: 0,
            tls_port: 0,
            component_port: 0,
            http_port: 0,
            https_port: 0,
            s2s_port: 0,
            passwords: Mutex::default(),
        };
        // A free port can be taken by another process before the server
        // binds it (tests run in parallel): then again with other ports.
        for attempt in 1.. {
            (server.port, server.tls_port, server.component_port) = (free_port(), free_port(), free_port());
            (server.http_port, server.https_port) = (free_port(), free_port());
            server.s2s_port = self.s2s_port.unwrap_or_else(free_port);
            let config = format!(
                "[server]\nhosts = [\"{domain}\"]\ndata_dir = \"{data}\"\n\n[c2s]\nlisten = [\"127.0.0.1:{port}\"]\n\
                 direct_tls_listen = [\"127.0.0.1:{tls_port}\"]\nrequire_encryption = {req}\n{c2s}\n\
                 [component]\nlisten = [\"127.0.0.1:{component_port}\"]\n\n\
                 [http]\nlisten = [\"127.0.0.1:{http_port}\"]\ntls_listen = [\"127.0.0.1:{https_port}\"]\n{http}\n\
                 [s2s]\nlisten = [\"127.0.0.1:{s2s_port}\"]\n{s2s}\n{extra}",
                domain = server.domain,
                data = server.data_dir().display(),
                port = server.port,
                tls_port = server.tls_port,
                component_port = server.component_port,
                http_port = server.http_port,
                https_port = server.https_port,
                http = self.http_config,
                s2s_port = server.s2s_port,
                s2s = self.s2s_config,
                req = self.require_encryption,
                c2s = self.c2s_config,
                extra = self.extra_config,
            );
            std::fs::write(server.config_path(), config)?;
            match server.spawn() {
                Err(e) if attempt < 5 && format!("{e:#}").contains("Address already in use") => {
                    std::fs::write(server.path().join("server.log"), "")?;
                }
                result => return result.map(|()| server),
            }
        }
        unreachable!("the loop returns")
    }
}

impl TestServer {
    /// `binary` is the built server, e.g. `env!("CARGO_BIN_EXE_starling")`.
    pub fn builder(binary: impl Into<PathBuf>) -> TestServerBuilder {
        TestServerBuilder {
            binary: binary.into(),
            domain: "localhost".into(),
            extra_config: String::new(),
            c2s_config: String::new(),
            http_config: String::new(),
            s2s_config: String::new(),
            s2s_port: None,
            require_encryption: true,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("starling.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.path().join("starling.pid")
    }

    /// The PostgreSQL database this server uses, if any (see the module doc);
    /// `None` means SQLite in `data_dir()`.
    pub fn database_url(&self) -> Option<&str> {
        self.database.as_ref().map(|db| db.url.as_str())
    }

    /// `starling --config …` with this server's database in the environment.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--config").arg(self.config_path());
        match &self.database {
            Some(db) => cmd.env(DATABASE_URL_VAR, &db.url),
            None => cmd.env_remove(DATABASE_URL_VAR),
        };
        cmd
    }

    /// Starts (or restarts) the server and waits until it listens.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.pidfile());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("server.log"))?;
        let child = self
            .command()
            .arg("serve")
            .arg("--pidfile")
            .arg(self.pidfile())
            .env("RUST_LOG", "debug")
            // Plain text: tests search the log.
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning starling")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.pidfile().exists() {
            if let Some(status) = self.child.as_mut().expect("just spawned").try_wait()? {
                bail!("starling exited with {status}:\n{}", self.log());
            }
            if Instant::now() > deadline {
                bail!("starling did not start:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The server's log so far (debug level).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Waits (at most 30 s) until the server's log satisfies `done`, for
    /// what only the log shows; returns the log.
    pub async fn log_until(&self, what: &str, done: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if done(&log) {
                return Ok(log);
            }
            if tokio::time::Instant::now() > deadline {
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                bail!(
                    "timed out waiting for {what}; the server log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs `starling --config … ARGS` (the admin CLI) and returns stdout.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.command().args(args).output()?;
        if !out.status.success() {
            bail!("starling {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    pub fn add_user(&self, user: &str, password: &str) -> anyhow::Result<String> {
        let jid = format!("{user}@{}", self.domain);
        self.cli(&["user", "add", &jid, password])?;
        self.passwords.lock().expect("not poisoned").insert(user.to_owned(), password.to_owned());
        Ok(jid)
    }

    fn password(&self, user: &str) -> anyhow::Result<String> {
        let passwords = self.passwords.lock().expect("not poisoned");
        passwords.get(user).cloned().with_context(|| format!("{user} was not added with add_user"))
    }

    /// A bound session of `user` (made with [`add_user`](Self::add_user) or
    /// [`TestServerBuilder::with_users`]), see [`XmlClient::logged_in`].
    pub async fn login(&self, user: &str, resource: &str) -> anyhow::Result<XmlClient> {
        let password = self.password(user)?;
        Ok(XmlClient::logged_in(self.port, &self.domain, user, &password, resource).await?.0)
    }

    /// A session of `user` with roster and initial presence, see [`XmlClient::online`].
    pub async fn online(&self, user: &str, resource: &str) -> anyhow::Result<XmlClient> {
        let password = self.password(user)?;
        XmlClient::online(self.port, &self.domain, user, &password, resource).await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        Command::new("kill").arg("-TERM").arg(child.id().to_string()).status()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                child.kill()?;
                bail!("starling did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGKILL (a crash: no shutdown work) and waits until the process
    /// is gone; [`spawn`](Self::spawn) starts it again.
    pub fn kill(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        child.kill()?;
        Ok(child.wait()?)
    }

    pub fn certificate(&self) -> PathBuf {
        self.data_dir().join("certs").join(format!("{}.crt", self.domain))
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` with its database (the path) replaced by `name`; query kept.
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let authority = url.find("://").context("database URL without scheme")? + 3;
    let (base, query) = url.split_at(url[authority..].find('?').map_or(url.len(), |q| authority + q));
    let path = base[authority..].find('/').map_or(base.len(), |p| authority + p);
    Ok(format!("{}/{name}{query}", &base[..path]))
}

/// A database of its own on the PostgreSQL server that `admin_url` reaches.
struct FreshDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl FreshDatabase {
    fn create(admin_url: &str) -> anyhow::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        // Unique across tests, test processes and machines sharing a server.
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let salt = std::collections::hash_map::RandomState::new().hash_one((n, SystemTime::now()));
        let name = format!("starling_t_{}_{n}_{:08x}", std::process::id(), salt as u32);
        let url = with_database(admin_url, &name)?;
        run_sql(admin_url, format!("CREATE DATABASE \"{name}\""))
            .with_context(|| format!("creating database {name} for a test server"))?;
        Ok(FreshDatabase { admin_url: admin_url.to_owned(), name, url })
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        // FORCE (PostgreSQL 13+) ends connections the killed server left.
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        if let Err(e) = run_sql(&self.admin_url, sql) {
            eprintln!("testkit: could not drop test database {}: {e:#}", self.name);
        }
    }
}

/// Runs one statement outside a transaction (CREATE/DROP DATABASE need that).
/// On a thread of its own with its own runtime, so that it works from sync
/// code and from inside a test's tokio runtime alike.
fn run_sql(url: &str, sql: String) -> anyhow::Result<()> {
    use sqlx::Connection;
    let url = url.to_owned();
    std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), async {
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
                conn.close().await?;
                anyhow::Ok(())
            })
            .await
            .context("PostgreSQL did not answer in 30 s")?
        })
    })
    .join()
    .map_err(|_| anyhow!("database thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_is_replaced_in_urls() {
        let cases = [
            ("postgres://u:p@127.0.0.1:5433/starling", "postgres://u:p@127.0.0.1:5433/t1"),
            ("postgres://u@h/db?sslmode=disable", "postgres://u@h/t1?sslmode=disable"),
            ("postgresql://h:1", "postgresql://h:1/t1"),
            ("postgres://h?application_name=x/y", "postgres://h/t1?application_name=x/y"),
            ("postgres:///db?host=/run/pg", "postgres:///t1?host=/run/pg"),
        ];
        for (url, want) in cases {
            assert_eq!(with_database(url, "t1").unwrap(), want, "{url}");
        }
    }
}
