//! The module system: a feature module registers what it adds (disco
//! features and identities, IQ handlers, stanza hooks) through a
//! [`ModuleContext`]; everything is tagged with the module's name so unloading
//! removes exactly what it registered (ejabberd's lesson: no leaked hooks).
//!
//! The registry is read on every stanza, so it is an immutable snapshot behind
//! an `ArcSwap`: readers never lock; (rare) loads and unloads copy and swap.

use crate::Server;
use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use starling_proto::{Element, IqType, Stanza, StanzaError, StanzaKind};
use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
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
    #[error("module {module}: {message}")]
    Failed { module: &'static str, message: String },
}

/// Who an IQ is addressed to (RFC 6120 §10.3: an IQ to a bare JID, or with no
/// `to`, is handled by the server on behalf of the account).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IqTarget {
    Host,
    Account,
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
    /// A message for a local account that has no resource to take it
    /// (RFC 6121 §8.5.2.2): the place for offline storage.
    MessageUndeliverable,
    /// A session sent initial presence; the stanza is that presence.
    SessionAvailable,
    /// A session ended; the stanza is its unavailable presence. Runs after
    /// the session left the router.
    SessionClosed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookResult {
    Continue,
    /// The hook took the stanza; later hooks and the default action are skipped.
    Handled,
}

type StanzaHook = Arc<dyn Fn(Arc<Server>, Stanza) -> BoxFuture<'static, HookResult> + Send + Sync>;

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
    iq: HashMap<&'static str, Vec<IqEntry>>,
    /// Sorted by descending priority.
    hooks: Vec<(HookPoint, i32, &'static str, StanzaHook)>,
    /// Extra `<stream:features/>` children after authentication.
    stream_features: Vec<(&'static str, Element)>,
    /// `hooks` grouped by point, built on (un)load so that running the
    /// hooks of a stanza costs one map lookup and no allocation.
    by_point: HashMap<HookPoint, Arc<[StanzaHook]>>,
}

impl Registry {
    fn index_hooks(&mut self) {
        self.hooks.sort_by_key(|(_, prio, _, _)| -prio);
        let mut by_point: HashMap<HookPoint, Vec<StanzaHook>> = HashMap::new();
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
}

impl ModuleContext {
    pub fn add_feature(&mut self, var: &'static str) {
        self.registered.features.push((self.module, var));
    }

    pub fn add_identity(&mut self, category: &'static str, type_: &'static str, name: Option<&'static str>) {
        self.registered.identities.push((self.module, Identity { category, type_, name }));
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

    /// Runs `hook` at `point`; higher priorities run first.
    pub fn hook<F, Fut>(&mut self, point: HookPoint, priority: i32, hook: F)
    where
        F: Fn(Arc<Server>, Stanza) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HookResult> + Send + 'static,
    {
        let hook: StanzaHook = Arc::new(move |server, stanza| Box::pin(hook(server, stanza)));
        self.registered.hooks.push((point, priority, self.module, hook));
    }
}

#[derive(Default)]
pub struct ModuleRegistry {
    snapshot: ArcSwap<Registry>,
    /// Loaded module instances; a lock is fine here, only (un)loading takes it.
    loaded: Mutex<Vec<(&'static str, Box<dyn Any + Send + Sync>)>>,
}

impl ModuleRegistry {
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
        let mut ctx = ModuleContext { module: M::NAME, registered: Registry::default() };
        let instance = M::load(cfg, &mut ctx)?;
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
        next.hooks.extend(new.hooks);
        next.stream_features.extend(new.stream_features);
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
        next.iq.retain(|_, entries| {
            entries.retain(|e| e.module != name);
            !entries.is_empty()
        });
        next.hooks.retain(|(_, _, m, _)| *m != name);
        next.stream_features.retain(|(m, _)| *m != name);
        next.index_hooks();
        self.snapshot.store(Arc::new(next));
        true
    }

    pub fn loaded(&self) -> Vec<&'static str> {
        self.loaded.lock().expect("module registry lock").iter().map(|(n, _)| *n).collect()
    }

    /// Disco features, sorted and deduplicated.
    pub fn features(&self) -> Vec<&'static str> {
        let mut f: Vec<_> = self.snapshot.load().features.iter().map(|(_, v)| *v).collect();
        f.sort_unstable();
        f.dedup();
        f
    }

    pub fn identities(&self) -> Vec<Identity> {
        self.snapshot.load().identities.iter().map(|(_, i)| i.clone()).collect()
    }

    pub(crate) fn iq_handler(&self, target: IqTarget, type_: IqType, namespace: &str) -> Option<IqHandler> {
        let snapshot = self.snapshot.load();
        let entries = snapshot.iq.get(namespace)?;
        entries.iter().find(|e| e.target == target && e.type_ == type_).map(|e| e.handler.clone())
    }

    pub(crate) fn hooks(&self, point: HookPoint) -> Option<Arc<[StanzaHook]>> {
        self.snapshot.load().by_point.get(&point).cloned()
    }

    pub fn stream_features(&self) -> Vec<Element> {
        self.snapshot.load().stream_features.iter().map(|(_, f)| f.clone()).collect()
    }
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
            ctx.handle_iq(IqTarget::Host, IqType::Get, "urn:example:probe", |_| async { Ok(None) });
            ctx.hook(HookPoint::MessageUndeliverable, 10, |_, _| async { HookResult::Handled });
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
        assert!(registry.iq_handler(IqTarget::Host, IqType::Get, "urn:example:probe").is_some());
        assert!(registry.iq_handler(IqTarget::Host, IqType::Set, "urn:example:probe").is_none());
        assert!(registry.iq_handler(IqTarget::Account, IqType::Get, "urn:example:probe").is_none());
        assert_eq!(registry.hooks(HookPoint::MessageUndeliverable).map_or(0, |h| h.len()), 1);
        assert!(matches!(registry.load::<Probe>(None), Err(ModuleError::AlreadyLoaded(_))));

        assert!(registry.unload("probe"));
        assert!(registry.features().is_empty());
        assert!(registry.identities().is_empty());
        assert!(registry.iq_handler(IqTarget::Host, IqType::Get, "urn:example:probe").is_none());
        assert!(registry.hooks(HookPoint::MessageUndeliverable).is_none());
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
