//! Accept loops for client ports: a semaphore caps connections; accept errors
//! (e.g. out of file descriptors) back off instead of spinning.

use crate::session::ClientService;
use crate::tcp::TcpFraming;
use crate::tls::TlsContext;
use crate::transport::Transport;
use starling_core::Server;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// A bound client port.
pub struct Listener {
    tcp: TcpListener,
    direct_tls: bool,
}

impl Listener {
    pub async fn bind(addr: SocketAddr, direct_tls: bool) -> std::io::Result<Self> {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        Ok(Listener { tcp: socket.listen(4096)?, direct_tls })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Serves client connections on `listeners` until shutdown, then waits for
/// the sessions to close their streams.
pub async fn serve(service: Arc<ClientService>, tls: Arc<TlsContext>, listeners: Vec<Listener>) {
    let slots = Arc::new(Semaphore::new(service.server.config.c2s.max_connections));
    let mut accept_loops = JoinSet::new();
    for listener in listeners {
        let ctx = (service.clone(), tls.clone(), slots.clone());
        accept_loops.spawn(accept_loop(listener, ctx));
    }
    accept_loops.join_all().await;
}

type Shared = (Arc<ClientService>, Arc<TlsContext>, Arc<Semaphore>);

async fn accept_loop(listener: Listener, (service, tls, slots): Shared) {
    let server: &Arc<Server> = &service.server;
    let mut shutdown = server.shutdown.subscribe();
    let mut sessions = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("semaphore never closed"),
            _ = starling_core::server::shutting_down(&mut shutdown) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.tcp.accept() => accepted,
            _ = starling_core::server::shutting_down(&mut shutdown) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (service, tls, direct_tls) = (service.clone(), tls.clone(), listener.direct_tls);
        sessions.spawn(async move {
            let io = if direct_tls {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.direct.clone());
                let handshake = Duration::from_secs(service.server.config.limits.handshake_timeout_secs);
                // Boxed so the handshake state is freed once done, not kept
                // in every idle connection's task.
                match tokio::time::timeout(handshake, Box::pin(acceptor.accept(tcp))).await {
                    Ok(Ok(stream)) => Transport::Tls(Box::new(stream)),
                    _ => return drop(permit),
                }
            } else {
                Transport::Plain(tcp)
            };
            let framing = TcpFraming::new(tls, io, peer, &service.server.config.limits);
            service.run(framing).await;
            drop(permit);
        });
        // Reap finished sessions so the set does not grow with history.
        while sessions.try_join_next().is_some() {}
    }
    // Shutdown: sessions saw the same signal and are closing their streams.
    let grace = Duration::from_secs(server.config.server.shutdown_grace_secs);
    let _ = tokio::time::timeout(grace, sessions.join_all()).await;
}
