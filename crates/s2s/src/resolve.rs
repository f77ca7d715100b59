//! Where another server's domain is reached (RFC 6120 §3.2, XEP-0368):
//! DNS SRV records, A/AAAA as fallback, behind a trait so that tests (and
//! the `s2s.hosts` config) point a domain at a fixed address.

use futures::future::BoxFuture;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The standard port of server-to-server streams (RFC 6120 §15.9).
const DEFAULT_PORT: u16 = 5269;

/// One address to try, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// TLS from the first byte (`_xmpps-server._tcp`, XEP-0368).
    pub direct_tls: bool,
}

pub trait Resolver: Send + Sync {
    /// The addresses of `domain`'s server, best first; empty when there is none.
    fn resolve<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Vec<Target>>;
}

/// DNS through hickory with the system's configuration.
pub struct DnsResolver {
    dns: TokioResolver,
}

impl DnsResolver {
    pub fn from_system() -> anyhow::Result<Self> {
        Ok(DnsResolver { dns: TokioResolver::builder_tokio()?.build()? })
    }

    async fn srv(&self, service: &str, domain: &str, direct_tls: bool, out: &mut Vec<Target>) {
        let Ok(lookup) = self.dns.srv_lookup(format!("{service}.{domain}.")).await else { return };
        let mut records: Vec<_> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(srv.clone()),
                _ => None,
            })
            .collect();
        // RFC 2782: lowest priority first; the heaviest first among equals
        // (a weighted random pick matters for load, not for reaching one).
        records.sort_by_key(|srv| (srv.priority, std::cmp::Reverse(srv.weight)));
        for srv in records {
            // RFC 2782: a target of "." means the service is not offered.
            if srv.target.is_root() {
                continue;
            }
            if let Ok(ips) = self.dns.lookup_ip(srv.target.to_ascii()).await {
                out.extend(ips.iter().map(|ip| Target { addr: SocketAddr::new(ip, srv.port), direct_tls }));
            }
        }
    }
}

impl Resolver for DnsResolver {
    fn resolve<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Vec<Target>> {
        Box::pin(async move {
            let mut targets = Vec::new();
            self.srv("_xmpps-server._tcp", domain, true, &mut targets).await;
            self.srv("_xmpp-server._tcp", domain, false, &mut targets).await;
            if targets.is_empty() {
                // RFC 6120 §3.2.2: no SRV records, the domain itself on the default port.
                if let Ok(ips) = self.dns.lookup_ip(format!("{domain}.")).await {
                    targets.extend(
                        ips.iter().map(|ip| Target { addr: SocketAddr::new(ip, DEFAULT_PORT), direct_tls: false }),
                    );
                }
            }
            targets
        })
    }
}

/// Fixed addresses for some domains (`s2s.hosts`), DNS for the others.
pub struct StaticResolver {
    pub hosts: BTreeMap<String, SocketAddr>,
    pub fallback: Option<Arc<dyn Resolver>>,
}

impl Resolver for StaticResolver {
    fn resolve<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Vec<Target>> {
        Box::pin(async move {
            match (self.hosts.get(domain), &self.fallback) {
                (Some(addr), _) => vec![Target { addr: *addr, direct_tls: false }],
                (None, Some(fallback)) => fallback.resolve(domain).await,
                (None, None) => Vec::new(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn configured_hosts_win_and_others_are_unknown_without_dns() {
        let addr: SocketAddr = "127.0.0.2:5269".parse().unwrap();
        let resolver = StaticResolver { hosts: [("peer.test".to_owned(), addr)].into(), fallback: None };
        assert_eq!(resolver.resolve("peer.test").await, [Target { addr, direct_tls: false }]);
        assert!(resolver.resolve("other.test").await.is_empty());
    }
}
