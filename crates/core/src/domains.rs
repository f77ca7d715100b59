//! The domain routing table (RFC 6120 §10.4): for each domain, who takes the
//! stanzas addressed to it or to any address at it (`room@domain/nick`).
//! The hosts and service domains come from the config; external components
//! attach their link when they authenticate and detach it when they leave;
//! every other domain goes to the federation route (s2s) once one is set.

use crate::config::{Config, ServiceKind};
use crate::router::{try_queue, DeliveryError, Outbound};
use crate::Server;
use dashmap::DashMap;
use futures::future::BoxFuture;
use starling_proto::{Element, Stanza, StanzaError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;

/// What kind of domain an address is at: for modules that decide by it
/// (only local contacts have sessions to look at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainKind {
    /// One of `server.hosts`: accounts live here.
    Host,
    /// A service domain served by a module in this process.
    Service,
    /// A service domain served by an external component (XEP-0114).
    Component,
    /// Any other domain: another server's.
    Remote,
}

/// Takes every stanza addressed to a service domain a module serves.
pub type ServiceHandler = Arc<dyn Fn(Arc<Server>, Stanza) -> BoxFuture<'static, ()> + Send + Sync>;

/// Where a stanza goes, by the domain of its `to`.
#[derive(Clone)]
pub enum Route {
    /// Local accounts' sessions, offline storage and the server's own handlers.
    Host,
    /// A module's service; `None` when that module is not loaded.
    Service(Option<ServiceHandler>),
    /// An external component; `None` while it is not connected.
    Component(Option<ComponentLink>),
    /// Another server, through the federation route; `None` when federation
    /// is off (stanzas bounce with `remote-server-not-found`).
    Remote(Option<Arc<dyn RemoteRoute>>),
}

/// Where stanzas to other servers go: the s2s crate registers one with
/// [`DomainTable::set_remote`], so the core does not depend on it.
pub trait RemoteRoute: Send + Sync {
    /// Queues `stanza` (from one of our domains) for the server of its `to`
    /// domain without waiting. A stanza that cannot be queued comes back
    /// with the error its sender gets (boxed: the happy path stays small).
    fn send(&self, stanza: Stanza) -> Result<(), Box<(Stanza, StanzaError)>>;
}

/// The authenticated stream of an external component, as the rest of the
/// server sees it: a bounded queue like a client session's.
#[derive(Debug, Clone)]
pub struct ComponentLink {
    id: u64,
    pub domain: String,
    tx: mpsc::Sender<Outbound>,
}

impl ComponentLink {
    /// Queues a stanza; on failure the element comes back for the bounce.
    pub fn queue(&self, el: Element) -> Result<(), (DeliveryError, Element)> {
        try_queue(&self.tx, el)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    #[error("no component is configured for {0}")]
    Unknown(String),
    /// RFC 6120 §4.9.3.3: another stream already serves the domain.
    #[error("a component is already connected for {0}")]
    Conflict(String),
}

#[derive(Debug)]
struct Service {
    domain: String,
    host: String,
    name: Option<String>,
    component_secret: Option<String>,
}

#[derive(Debug, Default)]
pub struct DomainTable {
    hosts: Vec<String>,
    /// In config order (the order of disco#items).
    services: Vec<Service>,
    by_domain: HashMap<String, usize>,
    components: DashMap<String, ComponentLink>,
    next_link: AtomicU64,
    remote: OnceLock<Arc<dyn RemoteRoute>>,
}

impl std::fmt::Debug for dyn RemoteRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteRoute")
    }
}

impl DomainTable {
    pub fn new(config: &Config) -> Self {
        let hosts = &config.server.hosts;
        let services: Vec<Service> = config
            .services
            .iter()
            .map(|s| Service {
                domain: s.domain.clone(),
                host: s.parent_host(hosts).unwrap_or(&hosts[0]).to_owned(),
                name: s.name.clone(),
                component_secret: match s.kind() {
                    ServiceKind::Component { secret } => Some(secret.to_owned()),
                    ServiceKind::Module(_) => None,
                },
            })
            .collect();
        let by_domain = services.iter().enumerate().map(|(i, s)| (s.domain.clone(), i)).collect();
        DomainTable {
            hosts: hosts.clone(),
            services,
            by_domain,
            components: DashMap::new(),
            next_link: AtomicU64::new(0),
            remote: OnceLock::new(),
        }
    }

    fn service(&self, domain: &str) -> Option<&Service> {
        self.by_domain.get(domain).map(|&i| &self.services[i])
    }

    pub fn kind(&self, domain: &str) -> DomainKind {
        if self.hosts.iter().any(|h| h == domain) {
            return DomainKind::Host;
        }
        match self.service(domain) {
            Some(s) if s.component_secret.is_some() => DomainKind::Component,
            Some(_) => DomainKind::Service,
            None => DomainKind::Remote,
        }
    }

    pub fn is_host(&self, domain: &str) -> bool {
        self.kind(domain) == DomainKind::Host
    }

    /// The service domains listed under `host`, with their names, in config order.
    pub fn services_of<'a>(&'a self, host: &'a str) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        self.services.iter().filter(move |s| s.host == host).map(|s| (s.domain.as_str(), s.name.as_deref()))
    }

    /// The shared secret of the component configured for `domain`.
    pub fn component_secret(&self, domain: &str) -> Option<&str> {
        self.service(domain)?.component_secret.as_deref()
    }

    /// Makes `tx` the link of the component serving `domain`; one at a time.
    pub fn attach_component(&self, domain: &str, tx: mpsc::Sender<Outbound>) -> Result<ComponentLink, AttachError> {
        if self.kind(domain) != DomainKind::Component {
            return Err(AttachError::Unknown(domain.to_owned()));
        }
        match self.components.entry(domain.to_owned()) {
            dashmap::Entry::Occupied(_) => Err(AttachError::Conflict(domain.to_owned())),
            dashmap::Entry::Vacant(slot) => {
                let id = self.next_link.fetch_add(1, Ordering::Relaxed);
                Ok(slot.insert(ComponentLink { id, domain: domain.to_owned(), tx }).clone())
            }
        }
    }

    /// Removes the link (if it is still the domain's): the domain's stanzas bounce from now on.
    pub fn detach_component(&self, link: &ComponentLink) {
        self.components.remove_if(&link.domain, |_, current| current.id == link.id);
    }

    pub fn component(&self, domain: &str) -> Option<ComponentLink> {
        self.components.get(domain).map(|l| l.clone())
    }

    /// Sets the route to other servers (once, at start).
    pub fn set_remote(&self, route: Arc<dyn RemoteRoute>) {
        if self.remote.set(route).is_err() {
            tracing::warn!("a second federation route was not set");
        }
    }

    /// The route to other servers, if federation is on.
    pub fn remote(&self) -> Option<Arc<dyn RemoteRoute>> {
        self.remote.get().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> DomainTable {
        let config = Config::parse(
            "[server]\nhosts = [\"example.com\", \"example.net\"]\nmodules = [\"disco\"]\n\
             [[services]]\ndomain = \"gw.example.com\"\nsecret = \"s\"\nname = \"Gateway\"\n\
             [[services]]\ndomain = \"rooms.example.com\"\nmodule = \"disco\"\n\
             [[services]]\ndomain = \"other.example.org\"\nhost = \"example.net\"\nsecret = \"t\"\n",
        )
        .unwrap();
        DomainTable::new(&config)
    }

    #[test]
    fn domains_are_classified_and_listed_under_their_host() {
        let table = table();
        assert_eq!(table.kind("example.com"), DomainKind::Host);
        assert_eq!(table.kind("gw.example.com"), DomainKind::Component);
        assert_eq!(table.kind("rooms.example.com"), DomainKind::Service);
        assert_eq!(table.kind("sub.gw.example.com"), DomainKind::Remote, "only the domain itself");
        assert_eq!(table.kind("example.org"), DomainKind::Remote);
        let listed: Vec<_> = table.services_of("example.com").collect();
        assert_eq!(listed, [("gw.example.com", Some("Gateway")), ("rooms.example.com", None)]);
        assert_eq!(table.services_of("example.net").map(|(d, _)| d).collect::<Vec<_>>(), ["other.example.org"]);
        assert_eq!(table.component_secret("gw.example.com"), Some("s"));
        assert_eq!(table.component_secret("rooms.example.com"), None);
    }

    #[test]
    fn one_component_link_per_domain() {
        let table = table();
        let (tx, _rx) = mpsc::channel(1);
        let first = table.attach_component("gw.example.com", tx.clone()).unwrap();
        assert_eq!(
            table.attach_component("gw.example.com", tx.clone()).unwrap_err(),
            AttachError::Conflict("gw.example.com".into())
        );
        assert!(matches!(table.attach_component("rooms.example.com", tx.clone()), Err(AttachError::Unknown(_))));
        table.detach_component(&first);
        assert!(table.component("gw.example.com").is_none());
        let second = table.attach_component("gw.example.com", tx).unwrap();
        table.detach_component(&first);
        assert_eq!(
            table.component("gw.example.com").map(|l| l.id),
            Some(second.id),
            "a stale detach keeps the new link"
        );
    }
}
