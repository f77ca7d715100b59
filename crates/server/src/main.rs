//! `starling`: the server binary. It reads the config, opens the store,
//! loads modules, starts the listeners and handles signals; the admin
//! commands work on the same store.

mod certs;
mod users;

use anyhow::Context;
use clap::{Parser, Subcommand};
use starling_core::config::{Config, LogFormat};
use starling_core::Server;
use starling_storage::SqlStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "starling", version, about = "Starling XMPP server")]
struct Cli {
    /// TOML config file (default: built-in defaults, domain localhost, data in ./data).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Write the process id here once listening.
        #[arg(long)]
        pidfile: Option<PathBuf>,
    },
    /// Manage accounts.
    #[command(subcommand)]
    User(users::UserCommand),
    /// Check the config file and exit.
    CheckConfig,
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(Config::parse("")?),
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = load_config(cli.config.as_deref())?;
    if let Command::CheckConfig = cli.command {
        // Loading the modules into a scratch registry checks their sections too.
        let registry = starling_core::ModuleRegistry::new(&config.services);
        for name in &config.server.modules {
            starling_modules::load(&registry, name, config.modules.get(name).cloned())?;
        }
        println!("config OK");
        return Ok(());
    }
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { pidfile } => serve(config, pidfile).await,
            Command::User(cmd) => users::run(&config, cmd).await,
            Command::CheckConfig => unreachable!("handled above"),
        }
    })
}

async fn open_store(config: &Config) -> anyhow::Result<SqlStore> {
    std::fs::create_dir_all(&config.server.data_dir)
        .with_context(|| format!("creating data directory {}", config.server.data_dir.display()))?;
    let url = config.database_url();
    SqlStore::open(&url, config.server.database_max_connections)
        .await
        .with_context(|| format!("opening database {}", redact(&url)))
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

async fn serve(config: Config, pidfile: Option<PathBuf>) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let certificates = certs::load_certificates(&config)?;
    // Federation: built before the client TLS context takes the certificates.
    let s2s_tls = match config.s2s.enabled {
        true => Some(starling_s2s::S2sTls::new(&certificates, &config.s2s)?),
        false => None,
    };
    let tls = Arc::new(starling_c2s::TlsContext::new(certificates)?);
    let mut listeners = Vec::new();
    for (addrs, direct_tls) in [(&config.c2s.listen, false), (&config.c2s.direct_tls_listen, true)] {
        for addr in addrs {
            let listener = starling_c2s::Listener::bind(*addr, direct_tls)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            tracing::info!(%addr, direct_tls, "listening for clients");
            listeners.push(listener);
        }
    }
    // XEP-0114: the component port is only opened when a component is configured.
    let mut component_listeners = Vec::new();
    if config.services.iter().any(|s| s.secret.is_some()) {
        for addr in &config.component.listen {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
            tracing::info!(%addr, "listening for components");
            component_listeners.push(listener);
        }
    }
    let mut s2s_listeners = Vec::new();
    if config.s2s.enabled {
        for (addrs, direct_tls) in [(&config.s2s.listen, false), (&config.s2s.direct_tls_listen, true)] {
            for addr in addrs {
                let tcp = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
                tracing::info!(%addr, direct_tls, "listening for servers");
                s2s_listeners.push(starling_s2s::S2sListener { tcp, direct_tls });
            }
        }
    }
    let mut http_listeners = Vec::new();
    for (addrs, tls) in [(&config.http.listen, false), (&config.http.tls_listen, true)] {
        for addr in addrs {
            let listener = starling_http::HttpListener::bind(*addr, tls)
                .await
                .with_context(|| format!("listening for HTTP on {addr}"))?;
            tracing::info!(%addr, tls, "listening for WebSocket and BOSH clients");
            http_listeners.push(listener);
        }
    }
    let modules = config.server.modules.clone();
    let mut sections = config.modules.clone();
    let server = Server::new(config, Arc::new(store.clone()));
    for name in &modules {
        starling_modules::load(&server.modules, name, sections.remove(name))?;
    }
    if let Some(pidfile) = &pidfile {
        std::fs::write(pidfile, std::process::id().to_string())?;
    }
    tracing::info!(hosts = ?server.config.server.hosts, modules = ?server.modules.loaded(), "Starling started");
    let clients = starling_c2s::ClientService::new(server.clone())?;
    let serving = tokio::spawn(starling_c2s::serve(clients.clone(), tls.clone(), listeners));
    // The same service: SM resumption and auth throttling span transports.
    let serving_http = tokio::spawn(starling_http::serve(clients, tls, http_listeners));
    let components = tokio::spawn(starling_component::serve(server.clone(), component_listeners));
    let federation = match s2s_tls {
        Some(s2s_tls) => {
            let s2s = starling_s2s::S2s::new(server.clone(), s2s_tls)?;
            server.domains.set_remote(s2s.clone());
            Some(tokio::spawn(starling_s2s::serve(s2s, s2s_listeners)))
        }
        None => None,
    };
    wait_for_signal().await?;
    tracing::info!(sessions = server.router.session_count(), "shutting down");
    server.shutdown.send_replace(true);
    serving.await?;
    serving_http.await?;
    components.await?;
    if let Some(federation) = federation {
        federation.await?;
    }
    store.close().await;
    if let Some(pidfile) = &pidfile {
        let _ = std::fs::remove_file(pidfile);
    }
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}
