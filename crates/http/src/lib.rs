//! Clients over HTTP, on one listener: RFC 7395 WebSocket (`ws.rs`), XEP-0124
//! / XEP-0206 BOSH (`bosh.rs`) and XEP-0156 discovery (`host_meta.rs`). Both
//! transports are framings of `starling_c2s`, so negotiation, the bound
//! session and every limit are the TCP ones.

mod bosh;
mod host_meta;
mod ws;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::routing::get;
use axum::Router;
use starling_c2s::{ClientService, TlsContext};
use starling_core::config::HttpConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::task::TaskTracker;

/// A bound HTTP port, plain or HTTPS.
pub struct HttpListener {
    tcp: TcpListener,
    tls: bool,
}

impl HttpListener {
    pub async fn bind(addr: SocketAddr, tls: bool) -> std::io::Result<Self> {
        Ok(HttpListener { tcp: TcpListener::bind(addr).await?, tls })
    }
}

/// What every request handler shares.
struct Shared {
    service: Arc<ClientService>,
    bosh: Arc<bosh::Registry>,
    /// Sessions outlive their upgrade or HTTP request; shutdown waits for them.
    sessions: TaskTracker,
}

impl Shared {
    fn config(&self) -> &HttpConfig {
        &self.service.server.config.http
    }
}

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    /// Served over our TLS, or over a plain listener trusted to sit behind
    /// a TLS-terminating proxy (`http.plain_is_secure`).
    secure: bool,
}

/// Serves HTTP clients on `listeners` until shutdown, then waits (at most
/// `server.shutdown_grace_secs`) for their sessions to close.
pub async fn serve(service: Arc<ClientService>, tls: Arc<TlsContext>, listeners: Vec<HttpListener>) {
    let server = service.server.clone();
    let shared = Arc::new(Shared { service, bosh: Arc::default(), sessions: TaskTracker::new() });
    // HTTP/1.1 only: WebSocket over HTTP/2 needs extended CONNECT (RFC 8441).
    let mut tls_config = (*tls.starttls).clone();
    tls_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config));
    let mut servers = tokio::task::JoinSet::new();
    for listener in listeners {
        let secure = listener.tls || shared.config().plain_is_secure;
        let app = router(AppState { shared: shared.clone(), secure });
        let mut shutdown = server.shutdown.subscribe();
        let stop = async move { starling_core::server::shutting_down(&mut shutdown).await };
        if listener.tls {
            let handshake = Duration::from_secs(server.config.limits.handshake_timeout_secs);
            let tls = TlsListener::spawn(listener.tcp, acceptor.clone(), handshake, server.shutdown.subscribe());
            let service = app.into_make_service_with_connect_info::<SocketAddr>();
            servers.spawn(async move {
                let _ = axum::serve(axum::serve::ListenerExt::tap_io(tls, |_| ()), service)
                    .with_graceful_shutdown(stop)
                    .await;
            });
        } else {
            let service = app.into_make_service_with_connect_info::<SocketAddr>();
            servers.spawn(async move {
                let _ = axum::serve(listener.tcp, service).with_graceful_shutdown(stop).await;
            });
        }
    }
    servers.join_all().await;
    shared.sessions.close();
    let grace = Duration::from_secs(server.config.server.shutdown_grace_secs);
    let _ = tokio::time::timeout(grace, shared.sessions.wait()).await;
}

fn router(state: AppState) -> Router {
    // A BOSH body holds stanzas and its own wrapper; bodies over the limit
    // get a BOSH error (`bosh.rs`), far larger ones are cut off here.
    let server = state.shared.service.server.clone();
    let body_limit = 2 * bosh::max_body_bytes(&server.config.limits);
    let modules = server
        .modules
        .http_routes()
        .into_iter()
        .fold(Router::new(), |app, (path, routes)| app.nest(path, routes(server.clone())));
    Router::new()
        .route("/xmpp-websocket", get(ws::upgrade))
        .route("/http-bind", axum::routing::post(bosh::request).options(bosh::preflight))
        .route("/.well-known/host-meta", get(host_meta::xrd))
        .route("/.well-known/host-meta.json", get(host_meta::json))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
        // After the body limit: module routes (uploads) stream their bodies
        // and enforce limits of their own.
        .merge(modules)
}

/// CORS response headers for a request from `headers`' Origin (BOSH and
/// host-meta are fetched by browser clients, XEP-0124 §4, XEP-0156 §3.2.2).
fn cors(config: &HttpConfig, headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    let origin = headers.get(header::ORIGIN);
    let allowed = if config.cors_origins.iter().any(|o| o == "*") {
        Some(HeaderValue::from_static("*"))
    } else {
        out.insert(header::VARY, HeaderValue::from_static("Origin"));
        origin.filter(|o| config.cors_origins.iter().any(|c| c.as_bytes() == o.as_bytes())).cloned()
    };
    if let Some(allowed) = allowed {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Content-Type"));
        out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    }
    out
}

/// An HTTPS listener for `axum::serve`: handshakes run in tasks of their
/// own (a slow client must not hold up the others) and finished ones queue.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    fn spawn(
        tcp: TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        handshake: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let local = tcp.local_addr().expect("a bound listener has an address");
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = tcp.accept() => accepted,
                    _ = starling_core::server::shutting_down(&mut shutdown) => return,
                };
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTPS accept failed; backing off");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(Ok(tls)) = tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        TlsListener { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop ended (shutdown): graceful shutdown stops
            // calling accept right after, so wait for it.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
