//! The module system: a feature module registers what it adds (disco
//! features and identities, IQ handlers, stanza hooks) through a
//! [`ModuleContext`]; everything is tagged with the module's name so unloading
//! removes exactly what it registered (ejabberd's lesson: no leaked hooks).
//!
//! The registry is read on every stanza, so it is an immutable snapshot behind
//! an `ArcSwap`: readers never lock; (rare) loads and unloads copy and swap.

use crate::config::{ServiceConfig, ServiceKind};
use crate::domains::ServiceHandler;
use crate::Server;
use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use starling_proto::{Element, IqType, Stanza, StanzaError, StanzaKind};
use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// A feature module, in the spirit of Prosody's `mod_*.lua`, typed.
pub trait Module: Send + Sync + Sized + 'static {
    /// Name in `server.modules` and of the config section `[modules.NAME]`.
    const NAME: &'static str;
    /// The module's config section; unknown keys must be rejected
    /// (`#[serde(deny_unknown_fields)]`).
    type Config: DeserializeOwned + Default;
    fn load(config: Self::Config, ctx: &mut ModuleContext) -> Result<Self, ModuleError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("unknown module {0:?}")]
    Unknown(String),
    #[error("module {0:?} is already loaded")]
    AlreadyLoaded(&'static str),
    #[error("modules.{module}: {message}")]
    Config { module: String, message: String },
    #[error("module {module}: IQ handler for {namespace} already registered by {owner}")]
    IqConflict { module: &'static str, namespace: &'static str, owner: &'static str },
    #[error("module {module} serves no domain {domain:?} (configured in [[services]])")]
    ServiceNotServed { module: &'static str, domain: String },
    #[error("module {module}: {message}")]
    Failed { module: &'static str, message: String },
}

/// Who an IQ is addressed to (RFC 6120 §10.3: an IQ to a bare JID, or with no
/// `to`, is handled by the server on behalf of the account).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IqTarget {
    Host,
    Account,
    /// An IQ on a client stream that has not authenticated yet (XEP-0077
    /// registration): the sender has no address; [`IqRequest::stream`] says
    /// which stream it came on, and the reply goes back on that stream.
    Stream,
}

/// A client stream before authentication, as pre-auth IQ handlers and
/// pre-auth stream features see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The client's address (for per-IP limits).
    pub peer: SocketAddr,
    /// The virtual host the stream is for (its header's `to`).
    pub host: String,
    /// TLS is established on the stream.
    pub secure: bool,
}

/// One IQ handler registration; registrations are grouped by payload namespace.
#[derive(Clone)]
struct IqEntry {
    target: IqTarget,
    type_: IqType,
    module: &'static str,
    handler: IqHandler,
}

/// An IQ request as a handler sees it; `stanza.from` is the stamped sender.
pub struct IqRequest {
    pub server: Arc<Server>,
    pub stanza: Stanza,
    /// The unauthenticated stream of an [`IqTarget::Stream`] request (whose
    /// `stanza.from` is then `None`); `None` for every other request.
    pub stream: Option<StreamInfo>,
}

impl IqRequest {
    pub fn payload(&self) -> &Element {
        self.stanza.payload().expect("IQ requests have one payload (checked at parse)")
    }
}

/// A handler's answer: the result payload (if any) or a stanza error.
pub type IqResult = Result<Option<Element>, StanzaError>;
type IqHandler = Arc<dyn Fn(IqRequest) -> BoxFuture<'static, IqResult> + Send + Sync>;

/// Where a stanza hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookPoint {
    /// A stanza a local session sent (`from` stamped with its full JID),
    /// before routing. Presence without `to` (a broadcast) comes here too,
    /// before the core sends it to the account's own resources.
    Outbound(StanzaKind),
    /// A stanza for a local account (bare or full JID, or none for the
    /// account itself), before it is delivered or handled.
    Inbound(StanzaKind),
    /// A stanza to a local address of one routing class (Prosody's
    /// `message/bare`, `iq/host`…); for accounts it runs after `Inbound(kind)`.
    To(StanzaKind, Addressed),
    /// A message for a local account that has no resource to take it
    /// (RFC 6121 §8.5.2.2): the place for offline storage.
    MessageUndeliverable,
    /// A session sent initial presence; the stanza is that presence.
    SessionAvailable,
    /// A session ended; the stanza is its unavailable presence. Runs after
    /// the session left the router.
    SessionClosed,
    /// A stanza that was sent to a session and not acknowledged when its
    /// connection went away and stream management kept the session for
    /// resumption (XEP-0198 §5): run once per such stanza as hibernation
    /// starts, the place to wake the device (XEP-0357).
    HeldForHibernated,
    /// The account's last session ended (after its `SessionClosed`): the
    /// place to drop what was cached for an online account.
    AccountOffline,
}

/// The routing class of a local address (RFC 6120 §10.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Addressed {
    /// The server itself: `example.com`.
    Host,
    /// An account: `user@example.com` (or no `to`: the sender's own account).
    Bare,
    /// One session: `user@example.com/resource`.
    Full,
}

/// A `[[services]]` domain a module is configured to serve.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceDomain {
    pub domain: String,
    /// The service's `options` table (empty when none is given).
    pub options: toml::Table,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookResult {
    Continue,
    /// The hook took the stanza; later hooks and the default action are skipped.
    Handled,
}

/// Hooks share the stanza (`Arc`) instead of each getting a deep copy: a
/// message passes several hooks on its way (blocking, carbons…).
type StanzaHook = Arc<dyn Fn(Arc<Server>, Arc<Stanza>) -> BoxFuture<'static, HookResult> + Send + Sync>;

/// Returns a changed stanza to go on with instead (copy on write: a filter
/// that changes nothing returns `None` and copies nothing).
type StanzaFilter = Arc<dyn Fn(Arc<Server>, Arc<Stanza>) -> BoxFuture<'static, Option<Stanza>> + Send + Sync>;

/// One step of the pipeline at a hook point, in priority order: a hook that
/// looks (and may take the stanza), or a filter that may change it for the
/// steps after it and for delivery (XEP-0359 stanza ids, say).
#[derive(Clone)]
pub(crate) enum Step {
    Hook(StanzaHook),
    Filter(StanzaFilter),
}

/// Computes a stream feature from the loaded modules when features are sent
/// (for features that depend on what every module registered, like
/// XEP-0115's verification string).
type StreamFeatureFn = Arc<dyn Fn(&ModuleRegistry) -> Option<Element> + Send + Sync>;

/// Returns a child to add to a session's available presence broadcast
/// before it is recorded and routed (XEP-0153's avatar hash, say). It sees
/// a copy of the presence and can only add one child: the addresses, type
/// and the client's own children stay as the client sent them.
type PresenceDecorator = Arc<dyn Fn(Arc<Server>, Arc<Stanza>) -> BoxFuture<'static, Option<Element>> + Send + Sync>;

/// Computes a stream feature offered before authentication on one stream
/// (XEP-0077's `<register/>`), or `None`.
type PreAuthFeatureFn = Arc<dyn Fn(&StreamInfo) -> Option<Element> + Send + Sync>;

/// Builds the HTTP routes a module serves on the HTTP listeners (XEP-0363
/// uploads…), nested under the module's path; called once per listener set
/// when HTTP serving starts.
pub type HttpRoutes = Arc<dyn Fn(Arc<Server>) -> axum::Router + Send + Sync>;

/// A disco identity (XEP-0030 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub category: &'static str,
    pub type_: &'static str,
    pub name: Option<&'static str>,
}

/// A snapshot of everything loaded modules registered.
#[derive(Default, Clone)]
struct Registry {
    features: Vec<(&'static str, &'static str)>,
    identities: Vec<(&'static str, Identity)>,
    /// What an account's disco#info shows besides `account/registered`
    /// (services the server runs for each account, like XEP-0163 PEP).
    account_features: Vec<(&'static str, &'static str)>,
    account_identities: Vec<(&'static str, Identity)>,
    iq: HashMap<&'static str, Vec<IqEntry>>,
    /// Sorted by descending priority.
    hooks: Vec<(HookPoint, i32, &'static str, Step)>,
    /// Extra `<stream:features/>` children after authentication.
    stream_features: Vec<(&'static str, Element)>,
    /// Stream features computed when they are sent, after the fixed ones.
    stream_feature_fns: Vec<(&'static str, StreamFeatureFn)>,
    /// `<stream:features/>` children before authentication, per stream.
    pre_auth_features: Vec<(&'static str, PreAuthFeatureFn)>,
    /// XEP-0128 extension forms of the server's disco#info answer.
    disco_extensions: Vec<(&'static str, Element)>,
    /// In load order.
    presence_decorators: Vec<(&'static str, PresenceDecorator)>,
    /// Service domains and the module serving each.
    services: HashMap<String, (&'static str, ServiceHandler)>,
    /// HTTP routes by path prefix (`/upload`), with the module serving each.
    http_routes: Vec<(&'static str, &'static str, HttpRoutes)>,
    /// Bumped by every load and unload, so values derived from the whole
    /// registry can be cached.
    generation: u64,
    /// `hooks` grouped by point, built on (un)load so that running the
    /// hooks of a stanza costs one map lookup and no allocation.
    by_point: HashMap<HookPoint, Arc<[Step]>>,
}

impl Registry {
    fn index_hooks(&mut self) {
        self.hooks.sort_by_key(|(_, prio, _, _)| -prio);
        let mut by_point: HashMap<HookPoint, Vec<Step>> = HashMap::new();
        for (point, _, _, hook) in &self.hooks {
            by_point.entry(*point).or_default().push(hook.clone());
        }
        self.by_point = by_point.into_iter().map(|(p, hooks)| (p, hooks.into())).collect();
    }
}

/// What one module registers while it loads.
#[derive(Default)]
pub struct ModuleContext {
    module: &'static str,
    registered: Registry,
    /// The service domains configured for this module.
    services: Vec<ServiceDomain>,
}

impl ModuleContext {
    pub fn add_feature(&mut self, var: &'static str) {
        self.registered.features.push((self.module, var));
    }

    pub fn add_identity(&mut self, category: &'static str, type_: &'static str, name: Option<&'static str>) {
        self.registered.identities.push((self.module, Identity { category, type_, name }));
    }

    /// Adds a feature to every account's disco#info (XEP-0030 §3.1 for a bare JID).
    pub fn add_account_feature(&mut self, var: &'static str) {
        self.registered.account_features.push((self.module, var));
    }

    /// Adds an identity to every account's disco#info (XEP-0163's `pubsub/pep`).
    pub fn add_account_identity(&mut self, category: &'static str, type_: &'static str, name: Option<&'static str>) {
        self.registered.account_identities.push((self.module, Identity { category, type_, name }));
    }

    /// Handles IQs of `type_` (get or set) whose payload is in `namespace`.
    pub fn handle_iq<F, Fut>(&mut self, target: IqTarget, type_: IqType, namespace: &'static str, handler: F)
    where
        F: Fn(IqRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = IqResult> + Send + 'static,
    {
        let handler: IqHandler = Arc::new(move |req| Box::pin(handler(req)));
        let entry = IqEntry { target, type_, module: self.module, handler };
        self.registered.iq.entry(namespace).or_default().push(entry);
    }

    /// Adds a child to the stream features offered after authentication
    /// (XEP-0237's `<ver/>`, say).
    pub fn add_stream_feature(&mut self, feature: Element) {
        self.registered.stream_features.push((self.module, feature));
    }

    /// Adds a stream feature computed from the loaded modules each time
    /// post-authentication features are sent; `None` adds nothing. Keep it
    /// cheap (cache on [`ModuleRegistry::generation`]).
    pub fn add_stream_feature_with<F>(&mut self, feature: F)
    where
        F: Fn(&ModuleRegistry) -> Option<Element> + Send + Sync + 'static,
    {
        self.registered.stream_feature_fns.push((self.module, Arc::new(feature)));
    }

    /// Adds a stream feature offered before authentication (after the SASL
    /// mechanisms), computed per stream; `None` adds nothing. The c2s layer
    /// offers none of these before TLS when encryption is required.
    pub fn add_pre_auth_feature<F>(&mut self, feature: F)
    where
        F: Fn(&StreamInfo) -> Option<Element> + Send + Sync + 'static,
    {
        self.registered.pre_auth_features.push((self.module, Arc::new(feature)));
    }

    /// Adds an XEP-0128 extended information form (`<x xmlns='jabber:x:data'
    /// type='result'/>` with a hidden FORM_TYPE) to the server's disco#info.
    pub fn add_disco_extension(&mut self, form: Element) {
        self.registered.disco_extensions.push((self.module, form));
    }

    /// Runs `decorator` on each available presence a session sends (no
    /// `type`; broadcast, or directed such as a MUC join); a returned element
    /// replaces the presence's child of the same name and namespace, or is
    /// appended, before the server records and routes it.
    pub fn decorate_presence<F, Fut>(&mut self, decorator: F)
    where
        F: Fn(Arc<Server>, Arc<Stanza>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<Element>> + Send + 'static,
    {
        let decorator: PresenceDecorator = Arc::new(move |server, stanza| Box::pin(decorator(server, stanza)));
        self.registered.presence_decorators.push((self.module, decorator));
    }

    /// The `[[services]]` domains configured for this module: it must serve
    /// each with [`serve_domain`](Self::serve_domain).
    pub fn services(&self) -> &[ServiceDomain] {
        &self.services
    }

    /// Takes every stanza addressed to `domain` or to an address at it;
    /// `domain` is one of [`services`](Self::services).
    pub fn serve_domain<F, Fut>(&mut self, domain: &str, handler: F)
    where
        F: Fn(Arc<Server>, Stanza) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler: ServiceHandler = Arc::new(move |server, stanza| Box::pin(handler(server, stanza)));
        self.registered.services.insert(domain.to_owned(), (self.module, handler));
    }

    /// Serves the routes `routes` builds under `path` (e.g. `/upload`) on the
    /// HTTP listeners.
    pub fn serve_http<F>(&mut self, path: &'static str, routes: F)
    where
        F: Fn(Arc<Server>) -> axum::Router + Send + Sync + 'static,
    {
        self.registered.http_routes.push((self.module, path, Arc::new(routes)));
    }

    /// Runs `hook` at `point`; higher priorities run first.
    pub fn hook<F, Fut>(&mut self, point: HookPoint, priority: i32, hook: F)
    where
        F: Fn(Arc<Server>, Arc<Stanza>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HookResult> + Send + 'static,
    {
        let hook: StanzaHook = Arc::new(move |server, stanza| Box::pin(hook(server, stanza)));
        self.registered.hooks.push((point, priority, self.module, Step::Hook(hook)));
    }

    /// Runs `filter` at `point` among the hooks (by the same priorities): a
    /// stanza it returns replaces the one the later steps and delivery see.
    pub fn filter<F, Fut>(&mut self, point: HookPoint, priority: i32, filter: F)
    where
        F: Fn(Arc<Server>, Arc<Stanza>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<Stanza>> + Send + 'static,
    {
        let filter: StanzaFilter = Arc::new(move |server, stanza| Box::pin(filter(server, stanza)));
        self.registered.hooks.push((point, priority, self.module, Step::Filter(filter)));
    }
}

#[derive(Default)]
pub struct ModuleRegistry {
    snapshot: ArcSwap<Registry>,
    /// `[[services]]` served by modules: (module name, domain).
    service_domains: Vec<(String, ServiceDomain)>,
    /// Loaded module instances; a lock is fine here, only (un)loading takes it.
    loaded: Mutex<Vec<(&'static str, Box<dyn Any + Send + Sync>)>>,
}

impl ModuleRegistry {
    /// A registry whose modules serve the module services of `services`.
    pub fn new(services: &[ServiceConfig]) -> Self {
        let service_domains = services
            .iter()
            .filter_map(|s| match s.kind() {
                ServiceKind::Module(module) => Some((
                    module.to_owned(),
                    ServiceDomain { domain: s.domain.clone(), options: s.options.clone().unwrap_or_default() },
                )),
                ServiceKind::Component { .. } => None,
            })
            .collect();
        ModuleRegistry { service_domains, ..Default::default() }
    }

    /// Loads module `M` with its config section (absent = defaults).
    pub fn load<M: Module>(&self, config: Option<toml::Value>) -> Result<(), ModuleError> {
        let config_error = |e: toml::de::Error| ModuleError::Config { module: M::NAME.into(), message: e.to_string() };
        let cfg: M::Config = match config {
            Some(v) => v.try_into().map_err(config_error)?,
            None => M::Config::default(),
        };
        let mut loaded = self.loaded.lock().expect("module registry lock");
        if loaded.iter().any(|(n, _)| *n == M::NAME) {
            return Err(ModuleError::AlreadyLoaded(M::NAME));
        }
        let services = self.service_domains.iter().filter(|(m, _)| m == M::NAME).map(|(_, s)| s.clone()).collect();
        let mut ctx = ModuleContext { module: M::NAME, registered: Registry::default(), services };
        let instance = M::load(cfg, &mut ctx)?;
        let served = &ctx.registered.services;
        if let Some(missing) = ctx.services.iter().find(|s| !served.contains_key(&s.domain)) {
            return Err(ModuleError::ServiceNotServed { module: M::NAME, domain: missing.domain.clone() });
        }
        if let Some(stray) = served.keys().find(|d| !ctx.services.iter().any(|s| &s.domain == *d)) {
            return Err(ModuleError::Failed {
                module: M::NAME,
                message: format!("{stray:?} is not in its [[services]]"),
            });
        }
        let mut next = Registry::clone(&self.snapshot.load());
        let new = ctx.registered;
        for (namespace, entries) in new.iq {
            let existing = next.iq.entry(namespace).or_default();
            for entry in entries {
                if let Some(owner) = existing.iter().find(|e| e.target == entry.target && e.type_ == entry.type_) {
                    return Err(ModuleError::IqConflict { module: M::NAME, namespace, owner: owner.module });
                }
                existing.push(entry);
            }
        }
        next.features.extend(new.features);
        next.identities.extend(new.identities);
        next.account_features.extend(new.account_features);
        next.account_identities.extend(new.account_identities);
        next.hooks.extend(new.hooks);
        next.stream_features.extend(new.stream_features);
        next.stream_feature_fns.extend(new.stream_feature_fns);
        next.pre_auth_features.extend(new.pre_auth_features);
        next.disco_extensions.extend(new.disco_extensions);
        next.presence_decorators.extend(new.presence_decorators);
        next.services.extend(new.services);
        next.http_routes.extend(new.http_routes);
        next.generation += 1;
        next.index_hooks();
        self.snapshot.store(Arc::new(next));
        loaded.push((M::NAME, Box::new(instance)));
        tracing::debug!(module = M::NAME, "module loaded");
        Ok(())
    }

    /// Unloads a module and everything it registered; false if not loaded.
    pub fn unload(&self, name: &str) -> bool {
        let mut loaded = self.loaded.lock().expect("module registry lock");
        let Some(pos) = loaded.iter().position(|(n, _)| *n == name) else {
            return false;
        };
        loaded.remove(pos);
        let mut next = Registry::clone(&self.snapshot.load());
        next.features.retain(|(m, _)| *m != name);
        next.identities.retain(|(m, _)| *m != name);
        next.account_features.retain(|(m, _)| *m != name);
        next.account_identities.retain(|(m, _)| *m != name);
        next.iq.retain(|_, entries| {
            entries.retain(|e| e.module != name);
            !entries.is_empty()
        });
        next.hooks.retain(|(_, _, m, _)| *m != name);
        next.stream_features.retain(|(m, _)| *m != name);
        next.stream_feature_fns.retain(|(m, _)| *m != name);
        next.pre_auth_features.retain(|(m, _)| *m != name);
        next.disco_extensions.retain(|(m, _)| *m != name);
        next.presence_decorators.retain(|(m, _)| *m != name);
        next.services.retain(|_, (m, _)| *m != name);
        next.http_routes.retain(|(m, _, _)| *m != name);
        next.generation += 1;
        next.index_hooks();
        self.snapshot.store(Arc::new(next));
        true
    }

    pub fn loaded(&self) -> Vec<&'static str> {
        self.loaded.lock().expect("module registry lock").iter().map(|(n, _)| *n).collect()
    }

    /// Disco features, sorted and deduplicated.
    pub fn features(&self) -> Vec<&'static str> {
        sorted_vars(&self.snapshot.load().features)
    }

    pub fn identities(&self) -> Vec<Identity> {
        self.snapshot.load().identities.iter().map(|(_, i)| i.clone()).collect()
    }

    /// Features of every account's disco#info, sorted and deduplicated.
    pub fn account_features(&self) -> Vec<&'static str> {
        sorted_vars(&self.snapshot.load().account_features)
    }

    pub fn account_identities(&self) -> Vec<Identity> {
        self.snapshot.load().account_identities.iter().map(|(_, i)| i.clone()).collect()
    }

    pub(crate) fn iq_handler(&self, target: IqTarget, type_: IqType, namespace: &str) -> Option<IqHandler> {
        let snapshot = self.snapshot.load();
        let entries = snapshot.iq.get(namespace)?;
        entries.iter().find(|e| e.target == target && e.type_ == type_).map(|e| e.handler.clone())
    }

    pub(crate) fn hooks(&self, point: HookPoint) -> Option<Arc<[Step]>> {
        self.snapshot.load().by_point.get(&point).cloned()
    }

    /// The fixed stream features, then the computed ones.
    pub fn stream_features(&self) -> Vec<Element> {
        let snapshot = self.snapshot.load_full();
        let mut features: Vec<Element> = snapshot.stream_features.iter().map(|(_, f)| f.clone()).collect();
        features.extend(snapshot.stream_feature_fns.iter().filter_map(|(_, f)| f(self)));
        features
    }

    /// The features modules offer on `stream` before authentication, in load order.
    pub fn pre_auth_features(&self, stream: &StreamInfo) -> Vec<Element> {
        self.snapshot.load().pre_auth_features.iter().filter_map(|(_, f)| f(stream)).collect()
    }

    /// XEP-0128 forms for the server's disco#info, in load order.
    pub fn disco_extensions(&self) -> Vec<Element> {
        self.snapshot.load().disco_extensions.iter().map(|(_, x)| x.clone()).collect()
    }

    pub(crate) fn presence_decorators(&self) -> Vec<PresenceDecorator> {
        self.snapshot.load().presence_decorators.iter().map(|(_, d)| d.clone()).collect()
    }

    /// The HTTP routes of the loaded modules, by path prefix.
    pub fn http_routes(&self) -> Vec<(&'static str, HttpRoutes)> {
        self.snapshot.load().http_routes.iter().map(|(_, path, routes)| (*path, routes.clone())).collect()
    }

    /// The handler of a module's service domain, if its module is loaded.
    pub(crate) fn service_handler(&self, domain: &str) -> Option<ServiceHandler> {
        self.snapshot.load().services.get(domain).map(|(_, h)| h.clone())
    }

    /// Changes whenever a module is loaded or unloaded.
    pub fn generation(&self) -> u64 {
        self.snapshot.load().generation
    }
}

/// The features registered, sorted, each once.
fn sorted_vars(registered: &[(&'static str, &'static str)]) -> Vec<&'static str> {
    let mut vars: Vec<_> = registered.iter().map(|(_, v)| *v).collect();
    vars.sort_unstable();
    vars.dedup();
    vars
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    struct Probe;

    #[derive(Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ProbeConfig {
        #[serde(default)]
        feature: Option<String>,
    }

    impl Module for Probe {
        const NAME: &'static str = "probe";
        type Config = ProbeConfig;
        fn load(config: ProbeConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
            assert!(config.feature.is_none() || config.feature.as_deref() == Some("x"));
            ctx.add_feature("urn:example:probe");
            ctx.add_identity("client", "bot", None);
            ctx.add_account_feature("urn:example:probe#account");
            ctx.add_account_identity("pubsub", "pep", None);
            ctx.handle_iq(IqTarget::Host, IqType::Get, "urn:example:probe", |_| async { Ok(None) });
            ctx.hook(HookPoint::MessageUndeliverable, 10, |_, _| async { HookResult::Handled });
            ctx.add_disco_extension(Element::bare("x", "jabber:x:data"));
            ctx.add_stream_feature_with(|modules| Some(Element::bare("n", modules.features().len().to_string())));
            ctx.decorate_presence(|_, _| async { None });
            ctx.handle_iq(IqTarget::Stream, IqType::Set, "urn:example:probe", |_| async { Ok(None) });
            ctx.add_pre_auth_feature(|s| s.secure.then(|| Element::bare("pre", "urn:example:probe")));
            Ok(Probe)
        }
    }

    struct Rival;

    impl Module for Rival {
        const NAME: &'static str = "rival";
        type Config = ProbeConfig;
        fn load(_: ProbeConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
            ctx.handle_iq(IqTarget::Host, IqType::Get, "urn:example:probe", |_| async { Ok(None) });
            Ok(Rival)
        }
    }

    #[test]
    fn unload_removes_everything_the_module_registered() {
        let registry = ModuleRegistry::default();
        registry.load::<Probe>(None).unwrap();
        assert_eq!(registry.features(), ["urn:example:probe"]);
        assert_eq!(registry.identities().len(), 1);
        assert_eq!(registry.account_features(), ["urn:example:probe#account"]);
        assert_eq!(registry.account_identities().len(), 1);
        assert!(registry.iq_handler(IqTarget::Host, IqType::Get, "urn:example:probe").is_some());
        assert!(registry.iq_handler(IqTarget::Host, IqType::Set, "urn:example:probe").is_none());
        assert!(registry.iq_handler(IqTarget::Account, IqType::Get, "urn:example:probe").is_none());
        assert_eq!(registry.hooks(HookPoint::MessageUndeliverable).map_or(0, |h| h.len()), 1);
        assert_eq!(registry.disco_extensions().len(), 1);
        assert_eq!(registry.stream_features(), [Element::bare("n", "1")], "computed from the registry");
        assert_eq!(registry.presence_decorators().len(), 1);
        assert!(registry.iq_handler(IqTarget::Stream, IqType::Set, "urn:example:probe").is_some());
        let mut stream =
            StreamInfo { peer: "192.0.2.1:5222".parse().unwrap(), host: "example.com".into(), secure: true };
        assert_eq!(registry.pre_auth_features(&stream), [Element::bare("pre", "urn:example:probe")]);
        stream.secure = false;
        assert!(registry.pre_auth_features(&stream).is_empty(), "computed per stream");
        stream.secure = true;
        let generation = registry.generation();
        assert!(matches!(registry.load::<Probe>(None), Err(ModuleError::AlreadyLoaded(_))));
        assert_eq!(registry.generation(), generation, "a failed load changes nothing");

        assert!(registry.unload("probe"));
        assert!(registry.features().is_empty());
        assert!(registry.identities().is_empty());
        assert!(registry.account_features().is_empty() && registry.account_identities().is_empty());
        assert!(registry.iq_handler(IqTarget::Host, IqType::Get, "urn:example:probe").is_none());
        assert!(registry.hooks(HookPoint::MessageUndeliverable).is_none());
        assert!(registry.disco_extensions().is_empty());
        assert!(registry.stream_features().is_empty());
        assert!(registry.presence_decorators().is_empty());
        assert!(registry.iq_handler(IqTarget::Stream, IqType::Set, "urn:example:probe").is_none());
        assert!(registry.pre_auth_features(&stream).is_empty());
        assert!(registry.generation() > generation);
        assert!(registry.loaded().is_empty());
        assert!(!registry.unload("probe"));
    }

    #[test]
    fn conflicting_iq_handlers_and_bad_config_are_refused() {
        let registry = ModuleRegistry::default();
        registry.load::<Probe>(None).unwrap();
        assert!(matches!(registry.load::<Rival>(None), Err(ModuleError::IqConflict { .. })));
        assert_eq!(registry.loaded(), ["probe"], "a failed load registers nothing");
        registry.unload("probe");
        let bad: toml::Value = toml::from_str("unknown_key = 1").unwrap();
        let err = registry.load::<Probe>(Some(bad)).unwrap_err().to_string();
        assert!(err.contains("modules.probe") && err.contains("unknown_key"), "{err}");
    }
}
