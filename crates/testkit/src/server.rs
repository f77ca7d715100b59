//! A `starling serve` child process for one test.

use anyhow::{bail, Context};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    binary: PathBuf,
    pub domain: String,
    /// STARTTLS port.
    pub port: u16,
    /// Direct TLS port.
    pub tls_port: u16,
}

pub struct TestServerBuilder {
    binary: PathBuf,
    domain: String,
    extra_config: String,
    require_encryption: bool,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl TestServerBuilder {
    /// Extra TOML appended to the generated config (its own sections only).
    pub fn config(mut self, toml: &str) -> Self {
        self.extra_config.push_str(toml);
        self.extra_config.push('\n');
        self
    }

    pub fn require_encryption(mut self, yes: bool) -> Self {
        self.require_encryption = yes;
        self
    }

    pub fn start(self) -> anyhow::Result<TestServer> {
        let dir = tempfile::tempdir()?;
        let (port, tls_port) = (free_port(), free_port());
        let config = format!(
            "[server]\nhosts = [\"{domain}\"]\ndata_dir = \"{data}\"\n\n[c2s]\nlisten = [\"127.0.0.1:{port}\"]\n\
             direct_tls_listen = [\"127.0.0.1:{tls_port}\"]\nrequire_encryption = {req}\n\n{extra}",
            domain = self.domain,
            data = dir.path().join("data").display(),
            req = self.require_encryption,
            extra = self.extra_config,
        );
        std::fs::write(dir.path().join("starling.toml"), config)?;
        let mut server = TestServer { child: None, dir, binary: self.binary, domain: self.domain, port, tls_port };
        server.spawn()?;
        Ok(server)
    }
}

impl TestServer {
    /// `binary` is the built server, e.g. `env!("CARGO_BIN_EXE_starling")`.
    pub fn builder(binary: impl Into<PathBuf>) -> TestServerBuilder {
        TestServerBuilder {
            binary: binary.into(),
            domain: "localhost".into(),
            extra_config: String::new(),
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

    /// Starts (or restarts) the server and waits until it listens.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.pidfile());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("server.log"))?;
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(self.config_path())
            .arg("serve")
            .arg("--pidfile")
            .arg(self.pidfile())
            .env("RUST_LOG", "debug")
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

    /// Runs `starling --config … ARGS` (the admin CLI) and returns stdout.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.binary).arg("--config").arg(self.config_path()).args(args).output()?;
        if !out.status.success() {
            bail!("starling {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    pub fn add_user(&self, user: &str, password: &str) -> anyhow::Result<String> {
        let jid = format!("{user}@{}", self.domain);
        self.cli(&["user", "add", &jid, password])?;
        Ok(jid)
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
