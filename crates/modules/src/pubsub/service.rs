//! One pubsub service as a requester sees it (XEP-0060): an account's PEP
//! service (XEP-0163) or a service domain. Every request is checked
//! against the node's affiliations and access model here, then applied
//! through the store; notifications go out through `notify`.

use super::interests::Interests;
use super::node::{
    deliver_option, subscribe_options_form, AccessModel, NodeConfig, PublishModel, SendLast, PUBLISH_OPTIONS,
};
use super::{notify, xml, PubsubConfig};
use crate::store::store_error;
use starling_core::Server;
use starling_proto::xmpp_parsers::data_forms::{DataForm, DataFormType};
use starling_proto::xmpp_parsers::ns as xns;
use starling_proto::xmpp_parsers::pubsub::owner::{self, Owner, Payload as OwnerPayload};
use starling_proto::xmpp_parsers::pubsub::pubsub::{self as ps, PubSub};
use starling_proto::xmpp_parsers::pubsub::{NodeName, Subscription};
use starling_proto::xmpp_parsers::rsm::{First, SetQuery, SetResult};
use starling_proto::{BareJid, Element, Jid, StanzaError};
use starling_storage::{PubsubItem, PubsubSubscription, StoreError};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A stanza error with a `pubsub#errors` condition (XEP-0060 §7.1.3 and others).
pub fn pubsub_error(error: StanzaError, condition: &str) -> StanzaError {
    error.with_app_condition(Element::bare(condition, xns::PUBSUB_ERRORS))
}

/// §6.3.6.2: options the service does not take are bad-request + invalid-options.
fn invalid_options<T>(parsed: Result<T, StanzaError>) -> Result<T, StanzaError> {
    parsed
        .map_err(|e| pubsub_error(StanzaError::bad_request(), "invalid-options").with_text(e.text.unwrap_or_default()))
}

/// §7.1.5: the node's configuration is not what publish-options require.
fn precondition_not_met() -> StanzaError {
    pubsub_error(StanzaError::conflict(), "precondition-not-met")
}

/// Whose service it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    /// XEP-0163: the account's own service, at its bare JID.
    Pep(BareJid),
    /// A pubsub service domain (`pubsub.example.com`).
    Domain(BareJid),
}

impl Service {
    /// The store's key for the service.
    pub fn key(&self) -> &str {
        match self {
            Service::Pep(jid) | Service::Domain(jid) => jid.as_str(),
        }
    }

    pub fn jid(&self) -> Jid {
        match self {
            Service::Pep(jid) | Service::Domain(jid) => Jid::from(jid.clone()),
        }
    }
}

/// §4.1 affiliations, ordered by what they allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Affiliation {
    Outcast,
    None,
    PublishOnly,
    Member,
    Publisher,
    Owner,
}

impl Affiliation {
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::PublishOnly => "publish-only",
            Affiliation::Member => "member",
            Affiliation::Publisher => "publisher",
            Affiliation::Owner => "owner",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "publish-only" => Affiliation::PublishOnly,
            "member" => Affiliation::Member,
            "publisher" => Affiliation::Publisher,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

/// A request to one service from `from`.
pub struct Request<'a> {
    pub server: &'a Arc<Server>,
    pub config: &'a PubsubConfig,
    pub interests: &'a Interests,
    pub service: Service,
    pub from: Jid,
}

type Reply = Result<Option<Element>, StanzaError>;

fn node_name(node: Option<&NodeName>) -> Result<&str, StanzaError> {
    node.map(|n| n.0.as_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| pubsub_error(StanzaError::bad_request(), "nodeid-required"))
}

pub fn parse_config(stored: &str) -> Result<NodeConfig, StanzaError> {
    serde_json::from_str(stored).map_err(|e| {
        tracing::error!(error = %e, "stored pubsub node configuration does not parse");
        StanzaError::internal_server_error()
    })
}

fn config_json(config: &NodeConfig) -> String {
    serde_json::to_string(config).expect("a node configuration serializes")
}

impl Request<'_> {
    fn store(&self) -> &dyn starling_storage::Store {
        self.server.store.as_ref()
    }

    fn requester(&self) -> BareJid {
        self.from.to_bare()
    }

    pub async fn node(&self, node: &str) -> Result<Option<NodeConfig>, StanzaError> {
        let stored = self.store().pubsub_node(self.service.key(), node).await.map_err(store_error)?;
        stored.as_deref().map(parse_config).transpose()
    }

    async fn existing_node(&self, node: &str) -> Result<NodeConfig, StanzaError> {
        self.node(node).await?.ok_or_else(StanzaError::item_not_found)
    }

    /// The requester's affiliation with a node; on PEP the account owns every node.
    pub async fn affiliation(&self, node: &str) -> Result<Affiliation, StanzaError> {
        affiliation_of(self.server, &self.service, node, &self.requester()).await
    }

    async fn require_owner(&self, node: &str) -> Result<NodeConfig, StanzaError> {
        let config = self.existing_node(node).await?;
        if self.affiliation(node).await? != Affiliation::Owner {
            return Err(StanzaError::forbidden());
        }
        Ok(config)
    }

    /// The per-service limit (§18.2 max-nodes-exceeded): one more node may be created.
    async fn check_node_count(&self) -> Result<(), StanzaError> {
        let count = self.store().pubsub_nodes(self.service.key()).await.map_err(store_error)?.len();
        if count >= self.config.max_nodes_per_service {
            let text = format!("at most {} nodes per service", self.config.max_nodes_per_service);
            return Err(pubsub_error(StanzaError::not_allowed(), "max-nodes-exceeded").with_text(text));
        }
        Ok(())
    }

    async fn create_node(&self, node: &str, config: &NodeConfig) -> Result<(), StanzaError> {
        self.check_node_count().await?;
        match self
            .store()
            .create_pubsub_node(self.service.key(), node, &config_json(config), self.requester().as_str())
            .await
        {
            Ok(()) => Ok(()),
            Err(StoreError::AlreadyExists) => Err(StanzaError::conflict()),
            Err(e) => Err(store_error(e)),
        }
    }

    pub async fn handle_pubsub(&self, payload: &Element, set: bool) -> Reply {
        // The RSM <set/> (XEP-0059) travels beside <items/>; the typed parser takes one child.
        let mut rsm = None;
        let mut request = Element::bare("pubsub", xns::PUBSUB);
        for child in payload.children() {
            if child.is("set", xns::RSM) {
                rsm = Some(
                    SetQuery::try_from(child.clone())
                        .map_err(|e| StanzaError::bad_request().with_text(e.to_string()))?,
                );
            } else {
                request.append_child(child.clone());
            }
        }
        if let Some(unsubscribe) = payload.get_child("unsubscribe", xns::PUBSUB) {
            // The typed <unsubscribe/> keeps its attributes private: read them here.
            return if set { self.unsubscribe(unsubscribe).await } else { Err(StanzaError::bad_request()) };
        }
        let parsed = PubSub::try_from(request).map_err(|e| StanzaError::bad_request().with_text(e.to_string()))?;
        match (set, parsed) {
            (true, PubSub::Publish { publish, publish_options }) => self.publish(publish, publish_options).await,
            (true, PubSub::Retract(retract)) => self.retract(retract).await,
            (true, PubSub::Create { create, configure }) => self.create(create, configure).await,
            (true, PubSub::Subscribe { subscribe: Some(subscribe), options }) => {
                self.subscribe(subscribe, options.and_then(|o| o.form)).await
            }
            (false, PubSub::Subscribe { subscribe: None, options: Some(options) }) => self.options(options).await,
            (true, PubSub::Subscribe { subscribe: None, options: Some(options) }) => self.set_options(options).await,
            (false, PubSub::Items(items)) => self.items(items, rsm).await,
            (false, PubSub::Subscriptions(subscriptions)) => self.own_subscriptions(subscriptions.node).await,
            (false, PubSub::Affiliations(affiliations)) => self.own_affiliations(affiliations.node).await,
            _ => Err(StanzaError::feature_not_implemented()),
        }
    }

    pub async fn handle_owner(&self, payload: &Element, set: bool) -> Reply {
        let parsed =
            Owner::try_from(payload.clone()).map_err(|e| StanzaError::bad_request().with_text(e.to_string()))?;
        match (set, parsed.payload) {
            (false, OwnerPayload::Configure { node, .. }) => {
                let node = node_name(node.as_ref())?;
                let config = self.require_owner(node).await?;
                Ok(Some(xml::configure_form(node, &config)))
            }
            (true, OwnerPayload::Configure { node, form }) => self.configure(node_name(node.as_ref())?, form).await,
            (false, OwnerPayload::Default { .. }) => Ok(Some(xml::owner_default(&self.default_config()))),
            (true, OwnerPayload::Delete { node, .. }) => self.delete(&node.0).await,
            (true, OwnerPayload::Purge { node }) => self.purge(&node.0).await,
            (false, OwnerPayload::Affiliations { node, .. }) => {
                self.require_owner(&node.0).await?;
                let affiliations =
                    self.store().pubsub_affiliations(self.service.key(), &node.0).await.map_err(store_error)?;
                Ok(Some(xml::owner_affiliations(&node.0, &affiliations)))
            }
            (true, OwnerPayload::Affiliations { node, .. }) => self.set_affiliations(&node.0, payload).await,
            (false, OwnerPayload::Subscriptions { node, .. }) => {
                self.require_owner(&node.0).await?;
                let subs = self.store().pubsub_subscriptions(self.service.key(), &node.0).await.map_err(store_error)?;
                Ok(Some(xml::owner_subscriptions(&node.0, &subs)))
            }
            (true, OwnerPayload::Subscriptions { node, subscriptions }) => {
                self.set_subscriptions(&node.0, subscriptions).await
            }
            _ => Err(StanzaError::feature_not_implemented()),
        }
    }

    fn default_config(&self) -> NodeConfig {
        match self.service {
            Service::Pep(_) => NodeConfig::pep(),
            Service::Domain(_) => NodeConfig::default(),
        }
    }

    /// §7.1 publish, with §7.1.5 publish-options and auto-create.
    async fn publish(&self, publish: ps::Publish, options: Option<ps::PublishOptions>) -> Reply {
        let node = node_name(Some(&publish.node))?;
        let limit = self.config.max_items_per_node;
        let options = options.and_then(|o| o.form);
        if options.as_ref().is_some_and(|f| f.form_type().is_some_and(|t| t != PUBLISH_OPTIONS)) {
            return Err(pubsub_error(StanzaError::bad_request(), "invalid-options"));
        }
        let [item] = <[ps::Item; 1]>::try_from(publish.items).map_err(|_| {
            pubsub_error(StanzaError::bad_request(), "item-required").with_text("publish exactly one item")
        })?;
        let payload = item.payload.ok_or_else(|| pubsub_error(StanzaError::bad_request(), "payload-required"))?;
        let serialized = String::from(&payload);
        if serialized.len() > self.config.max_payload_bytes {
            let text = format!("payloads are limited to {} bytes", self.config.max_payload_bytes);
            return Err(pubsub_error(StanzaError::not_acceptable(), "payload-too-big").with_text(text));
        }
        let config = match self.node(node).await? {
            Some(config) => self.check_existing(node, config, options.as_ref()).await?,
            None => {
                // §7.1.4 auto-create: the default configuration with the preconditions applied.
                if let Service::Pep(owner) = &self.service {
                    if *owner != self.requester() {
                        return Err(StanzaError::forbidden());
                    }
                }
                let mut config = self.default_config();
                if let Some(form) = &options {
                    config.apply(form, limit).map_err(|_| precondition_not_met())?;
                }
                match self.create_node(node, &config).await {
                    Ok(()) => config,
                    // Another publish created it meanwhile: publish to that one.
                    Err(e) if e.condition == "conflict" => {
                        let config = self.existing_node(node).await?;
                        self.check_existing(node, config, options.as_ref()).await?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let id = item.id.map(|id| id.0).filter(|id| !id.is_empty()).unwrap_or_else(random_id);
        if config.persist_items {
            let published_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
            let stored = PubsubItem {
                id: id.clone(),
                publisher: self.requester().to_string(),
                payload: serialized,
                published_at: i64::try_from(published_at).unwrap_or(i64::MAX),
            };
            let keep = config.max_items.resolve(limit);
            self.store().publish_pubsub_item(self.service.key(), node, &stored, keep).await.map_err(store_error)?;
        }
        let event = xml::published(node, &id, Some(&self.requester()), Some(payload));
        notify::broadcast(self.server, self.interests, &self.service, node, &config, event).await;
        Ok(Some(xml::publish_result(node, &id)))
    }

    /// §7.1.5 preconditions, then §7.1.3.1 the right to publish, on an existing node.
    async fn check_existing(
        &self,
        node: &str,
        config: NodeConfig,
        options: Option<&DataForm>,
    ) -> Result<NodeConfig, StanzaError> {
        if let Some(form) = options {
            let limit = self.config.max_items_per_node;
            if !config.satisfies(form, limit).map_err(|_| precondition_not_met())? {
                return Err(precondition_not_met());
            }
        }
        self.check_publisher(node, &config).await?;
        Ok(config)
    }

    async fn check_publisher(&self, node: &str, config: &NodeConfig) -> Result<(), StanzaError> {
        let affiliation = self.affiliation(node).await?;
        let allowed = match config.publish_model {
            PublishModel::Open => affiliation != Affiliation::Outcast,
            PublishModel::Publishers => {
                affiliation >= Affiliation::Publisher || affiliation == Affiliation::PublishOnly
            }
            PublishModel::Subscribers => {
                affiliation >= Affiliation::Publisher
                    || self.subscription(node).await?.is_some_and(|s| s.state == "subscribed")
            }
        };
        if !allowed {
            return Err(StanzaError::forbidden());
        }
        Ok(())
    }

    async fn subscription(&self, node: &str) -> Result<Option<PubsubSubscription>, StanzaError> {
        let subs =
            self.store().pubsub_subscriptions_of(self.service.key(), self.from.as_str()).await.map_err(store_error)?;
        let mut found = subs.into_iter().find(|s| s.node == node);
        if found.is_none() && self.from.resource().is_some() {
            let bare = self.store().pubsub_subscriptions_of(self.service.key(), self.requester().as_str()).await;
            found = bare.map_err(store_error)?.into_iter().find(|s| s.node == node);
        }
        Ok(found)
    }

    /// §7.2 retract.
    async fn retract(&self, retract: ps::Retract) -> Reply {
        let node = retract.node.0.as_str();
        let config = self.existing_node(node).await?;
        let affiliation = self.affiliation(node).await?;
        let [item] = <[ps::Item; 1]>::try_from(retract.items)
            .map_err(|_| pubsub_error(StanzaError::bad_request(), "item-required"))?;
        let id = item.id.map(|id| id.0).ok_or_else(|| pubsub_error(StanzaError::bad_request(), "item-required"))?;
        let stored = self.store().pubsub_item(self.service.key(), node, &id).await.map_err(store_error)?;
        let stored = stored.ok_or_else(StanzaError::item_not_found)?;
        if affiliation < Affiliation::Publisher && stored.publisher != self.requester().as_str() {
            return Err(StanzaError::forbidden());
        }
        self.store().retract_pubsub_item(self.service.key(), node, &id).await.map_err(store_error)?;
        if retract.notify || config.notify_retract {
            notify::broadcast(self.server, self.interests, &self.service, node, &config, xml::retracted(node, &id))
                .await;
        }
        Ok(None)
    }

    /// §6.5 items, by id, the newest `max_items`, or a page (XEP-0059).
    async fn items(&self, items: ps::Items, rsm: Option<SetQuery>) -> Reply {
        let node = items.node.0.as_str();
        let config = self.existing_node(node).await?;
        check_read(self.server, &self.service, node, &config, &self.from).await?;
        let capacity = config.max_items.resolve(self.config.max_items_per_node);
        let store = self.store();
        let mut page = None;
        let found: Vec<PubsubItem> = if !items.items.is_empty() {
            let mut found = Vec::new();
            for id in items.items.iter().filter_map(|i| i.id.as_ref()) {
                found.extend(store.pubsub_item(self.service.key(), node, &id.0).await.map_err(store_error)?);
            }
            found
        } else {
            let limit = items.max_items.map_or(capacity, |n| (n as usize).min(capacity));
            let all = store.pubsub_items(self.service.key(), node, limit).await.map_err(store_error)?;
            match rsm {
                Some(query) => {
                    let (slice, result) = paginate(all, &query)?;
                    page = Some(result);
                    slice
                }
                None => all,
            }
        };
        let mut result = xml::items_result(node, &found)?;
        if let Some(page) = page {
            result.append_child(page.into());
        }
        Ok(Some(result))
    }

    /// §8.1 create, with an optional configuration (§8.1.3).
    async fn create(&self, create: ps::Create, configure: Option<ps::Configure>) -> Reply {
        if let Service::Pep(owner) = &self.service {
            if *owner != self.requester() {
                return Err(StanzaError::forbidden());
            }
        }
        let mut config = self.default_config();
        if let Some(form) = configure.and_then(|c| c.form) {
            config.apply(&form, self.config.max_items_per_node)?;
        }
        let (node, instant) = match create.node {
            Some(node) if !node.0.is_empty() => (node.0, false),
            // §8.1.2 instant nodes: the service names it.
            _ => (random_id(), true),
        };
        self.create_node(&node, &config).await?;
        Ok(instant.then(|| xml::created(&node)))
    }

    /// §8.2 configure.
    async fn configure(&self, node: &str, form: Option<DataForm>) -> Reply {
        let mut config = self.require_owner(node).await?;
        let Some(form) = form.filter(|f| f.type_ != DataFormType::Cancel) else {
            return Ok(None);
        };
        config.apply(&form, self.config.max_items_per_node)?;
        match self.store().configure_pubsub_node(self.service.key(), node, &config_json(&config)).await {
            Ok(()) => {}
            Err(StoreError::NotFound) => return Err(StanzaError::item_not_found()),
            Err(e) => return Err(store_error(e)),
        }
        if config.notify_config {
            notify::broadcast(self.server, self.interests, &self.service, node, &config, xml::configuration(node))
                .await;
        }
        Ok(None)
    }

    /// §8.4 delete: subscribers learn it first (§8.4.2).
    async fn delete(&self, node: &str) -> Reply {
        let config = self.require_owner(node).await?;
        if config.notify_delete {
            notify::broadcast(self.server, self.interests, &self.service, node, &config, xml::deleted(node)).await;
        }
        self.store().delete_pubsub_node(self.service.key(), node).await.map_err(store_error)?;
        Ok(None)
    }

    /// §8.5 purge.
    async fn purge(&self, node: &str) -> Reply {
        let config = self.require_owner(node).await?;
        self.store().purge_pubsub_node(self.service.key(), node).await.map_err(store_error)?;
        if config.notify_retract {
            notify::broadcast(self.server, self.interests, &self.service, node, &config, xml::purged(node)).await;
        }
        Ok(None)
    }

    /// §6.1 subscribe (§6.3.7 with options); §6.1.7 the last item follows.
    async fn subscribe(&self, subscribe: ps::Subscribe, options: Option<DataForm>) -> Reply {
        let node = node_name(subscribe.node.as_ref())?;
        // §6.1.3.1: only one's own address may be subscribed.
        if subscribe.jid.to_bare() != self.requester() {
            return Err(pubsub_error(StanzaError::bad_request(), "invalid-jid"));
        }
        let config = self.existing_node(node).await?;
        let deliver = match &options {
            Some(form) => invalid_options(deliver_option(form, true))?,
            None => true,
        };
        let state = match check_read(self.server, &self.service, node, &config, &self.from).await {
            Ok(()) => "subscribed",
            // §6.1.2: authorize nodes take the request and wait for the owner.
            Err(_)
                if config.access_model == AccessModel::Authorize
                    && self.affiliation(node).await? != Affiliation::Outcast =>
            {
                "pending"
            }
            Err(e) => return Err(e),
        };
        let sub = PubsubSubscription {
            node: node.to_owned(),
            jid: subscribe.jid.to_string(),
            subid: random_id(),
            state: state.to_owned(),
            deliver,
        };
        self.store().set_pubsub_subscription(self.service.key(), &sub).await.map_err(store_error)?;
        if state == "subscribed" && config.send_last_published_item != SendLast::Never {
            notify::send_last(self.server, &self.service, node, &config, &subscribe.jid).await;
        }
        Ok(Some(xml::subscription(&sub)))
    }

    /// The requester's own subscription named by an `<options/>` request (§6.3.4).
    async fn options_subscription(&self, options: &ps::Options) -> Result<PubsubSubscription, StanzaError> {
        let node = node_name(options.node.as_ref())?;
        if options.jid.to_bare() != self.requester() {
            // §6.3.4.1: only one's own subscription.
            return Err(StanzaError::forbidden());
        }
        self.existing_node(node).await?;
        let subs = self.store().pubsub_subscriptions(self.service.key(), node).await.map_err(store_error)?;
        // §6.3.4.2: no such subscriber.
        subs.into_iter()
            .find(|s| s.jid == options.jid.as_str())
            .ok_or_else(|| pubsub_error(StanzaError::unexpected_request(), "not-subscribed"))
    }

    /// §6.3.3: the subscription's options form.
    async fn options(&self, options: ps::Options) -> Reply {
        let sub = self.options_subscription(&options).await?;
        let form = subscribe_options_form(sub.deliver);
        Ok(Some(xml::options(ps::Options { form: Some(form), ..options })))
    }

    /// §6.3.5 and §6.3.6: the subscriber changes its options.
    async fn set_options(&self, options: ps::Options) -> Reply {
        let sub = self.options_subscription(&options).await?;
        let Some(form) = options.form else {
            return Err(pubsub_error(StanzaError::bad_request(), "invalid-options"));
        };
        let deliver = invalid_options(deliver_option(&form, sub.deliver))?;
        let sub = PubsubSubscription { deliver, ..sub };
        self.store().set_pubsub_subscription(self.service.key(), &sub).await.map_err(store_error)?;
        Ok(None)
    }

    /// §6.2 unsubscribe.
    async fn unsubscribe(&self, unsubscribe: &Element) -> Reply {
        let node = unsubscribe
            .attr("node")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| pubsub_error(StanzaError::bad_request(), "nodeid-required"))?;
        let jid = unsubscribe
            .attr("jid")
            .and_then(|j| Jid::new(j).ok())
            .ok_or_else(|| pubsub_error(StanzaError::bad_request(), "jid-required"))?;
        if jid.to_bare() != self.requester() {
            return Err(pubsub_error(StanzaError::bad_request(), "invalid-jid"));
        }
        self.existing_node(node).await?;
        let removed = self
            .store()
            .remove_pubsub_subscription(self.service.key(), node, jid.as_str())
            .await
            .map_err(store_error)?;
        if !removed {
            // §6.2.3.2.
            return Err(pubsub_error(StanzaError::unexpected_request(), "not-subscribed"));
        }
        Ok(None)
    }

    /// §5.6 the requester's subscriptions.
    async fn own_subscriptions(&self, node: Option<NodeName>) -> Reply {
        let mut subs =
            self.store().pubsub_subscriptions_of(self.service.key(), self.from.as_str()).await.map_err(store_error)?;
        if self.from.resource().is_some() {
            let bare = self.store().pubsub_subscriptions_of(self.service.key(), self.requester().as_str()).await;
            subs.extend(bare.map_err(store_error)?);
        }
        subs.retain(|s| node.as_ref().is_none_or(|n| n.0 == s.node));
        Ok(Some(xml::subscriptions(&subs)))
    }

    /// §5.7 the requester's affiliations.
    async fn own_affiliations(&self, node: Option<NodeName>) -> Reply {
        let mut affiliations = match &self.service {
            Service::Pep(owner) if *owner == self.requester() => {
                let nodes = self.store().pubsub_nodes(self.service.key()).await.map_err(store_error)?;
                nodes.into_iter().map(|n| (n, Affiliation::Owner.as_str().to_owned())).collect()
            }
            _ => self
                .store()
                .pubsub_affiliations_of(self.service.key(), self.requester().as_str())
                .await
                .map_err(store_error)?,
        };
        affiliations.retain(|(n, _)| node.as_ref().is_none_or(|node| node.0 == *n));
        Ok(Some(xml::affiliations(&affiliations)))
    }

    /// §8.8.2 the owner changes subscriptions: approves pending ones of an
    /// authorize node (§8.6), subscribes or removes JIDs.
    async fn set_subscriptions(&self, node: &str, changes: Vec<owner::SubscriptionElem>) -> Reply {
        let config = self.require_owner(node).await?;
        let existing = self.store().pubsub_subscriptions(self.service.key(), node).await.map_err(store_error)?;
        for change in changes {
            let jid = change.jid.to_string();
            let state = match change.subscription {
                Subscription::None => {
                    self.store()
                        .remove_pubsub_subscription(self.service.key(), node, &jid)
                        .await
                        .map_err(store_error)?;
                    continue;
                }
                Subscription::Pending => "pending",
                Subscription::Subscribed | Subscription::Unconfigured => "subscribed",
            };
            let current = existing.iter().find(|s| s.jid == jid);
            let subid = current.map_or_else(random_id, |s| s.subid.clone());
            let deliver = current.is_none_or(|s| s.deliver);
            let sub = PubsubSubscription { node: node.to_owned(), jid, subid, state: state.to_owned(), deliver };
            self.store().set_pubsub_subscription(self.service.key(), &sub).await.map_err(store_error)?;
            if state == "subscribed" && config.send_last_published_item != SendLast::Never {
                notify::send_last(self.server, &self.service, node, &config, &change.jid).await;
            }
        }
        Ok(None)
    }

    /// §8.9.2 the owner changes affiliations; the last owner stays.
    async fn set_affiliations(&self, node: &str, payload: &Element) -> Reply {
        self.require_owner(node).await?;
        let mut changes = Vec::new();
        for el in payload.children().flat_map(|a| a.children()).filter(|e| e.is("affiliation", xns::PUBSUB_OWNER)) {
            let jid = el.attr("jid").and_then(|j| BareJid::new(j).ok()).ok_or_else(StanzaError::bad_request)?;
            let affiliation =
                el.attr("affiliation").and_then(Affiliation::from_name).ok_or_else(StanzaError::bad_request)?;
            changes.push((jid, affiliation));
        }
        if let Service::Pep(owner) = &self.service {
            if changes.iter().any(|(jid, a)| jid == owner && *a != Affiliation::Owner) {
                return Err(StanzaError::not_acceptable().with_text("the account owns its PEP nodes"));
            }
        }
        for (jid, affiliation) in changes {
            let value = (affiliation != Affiliation::None).then_some(affiliation.as_str());
            self.store()
                .set_pubsub_affiliation(self.service.key(), node, jid.as_str(), value)
                .await
                .map_err(store_error)?;
        }
        Ok(None)
    }
}

/// A random identifier for items, subscriptions and instant nodes.
pub fn random_id() -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// XEP-0059 paging over items newest first, by item id.
fn paginate(all: Vec<PubsubItem>, query: &SetQuery) -> Result<(Vec<PubsubItem>, SetResult), StanzaError> {
    let count = all.len();
    let position = |id: &str| all.iter().position(|i| i.id == id).ok_or_else(StanzaError::item_not_found);
    let (start, end) = match (&query.after, &query.before, query.index) {
        (Some(after), _, _) => (position(after)? + 1, count),
        (None, Some(before), _) if !before.is_empty() => (0, position(before)?),
        (None, _, Some(index)) => (index.min(count), count),
        _ => (0, count),
    };
    let max = query.max.unwrap_or(count);
    // A page taken from before an id is the last `max` before it.
    let (start, end) = if query.before.as_deref().is_some_and(|b| !b.is_empty()) && query.after.is_none() {
        (end.saturating_sub(max).max(start), end)
    } else {
        (start, end.min(start + max))
    };
    let slice: Vec<PubsubItem> = all[start..end].to_vec();
    let result = SetResult {
        first: slice.first().map(|i| First { index: Some(start), item: i.id.clone() }),
        last: slice.last().map(|i| i.id.clone()),
        count: Some(count),
    };
    Ok((slice, result))
}

/// The affiliation of `who` with a node of `service`.
pub async fn affiliation_of(
    server: &Server,
    service: &Service,
    node: &str,
    who: &BareJid,
) -> Result<Affiliation, StanzaError> {
    if let Service::Pep(owner) = service {
        if owner == who {
            return Ok(Affiliation::Owner);
        }
    }
    let affiliations = server.store.pubsub_affiliations(service.key(), node).await.map_err(store_error)?;
    Ok(affiliations
        .iter()
        .find(|(jid, _)| jid == who.as_str())
        .and_then(|(_, a)| Affiliation::from_name(a))
        .unwrap_or(Affiliation::None))
}

/// §6.5.9 and §6.1.3: whether `who` may read (retrieve items of, subscribe
/// to, be notified by) a node, by its affiliation and the access model.
pub async fn check_read(
    server: &Server,
    service: &Service,
    node: &str,
    config: &NodeConfig,
    who: &Jid,
) -> Result<(), StanzaError> {
    let bare = who.to_bare();
    match affiliation_of(server, service, node, &bare).await? {
        Affiliation::Outcast | Affiliation::PublishOnly => return Err(StanzaError::forbidden()),
        Affiliation::Member | Affiliation::Publisher | Affiliation::Owner => return Ok(()),
        Affiliation::None => {}
    }
    match config.access_model {
        AccessModel::Open => Ok(()),
        AccessModel::Presence => {
            let items = contact_items(server, service, node, &bare).await?;
            if items.iter().any(|item| item.subscription.has_from()) {
                Ok(())
            } else {
                Err(pubsub_error(StanzaError::not_authorized(), "presence-subscription-required"))
            }
        }
        AccessModel::Roster => {
            let items = contact_items(server, service, node, &bare).await?;
            if items.iter().any(|item| item.groups.iter().any(|g| config.roster_groups_allowed.contains(g))) {
                Ok(())
            } else {
                Err(pubsub_error(StanzaError::not_authorized(), "not-in-roster-group"))
            }
        }
        AccessModel::Whitelist => Err(pubsub_error(StanzaError::not_allowed(), "closed-node")),
        AccessModel::Authorize => {
            let subs = server.store.pubsub_subscriptions(service.key(), node).await.map_err(store_error)?;
            let approved =
                subs.iter().any(|s| s.state == "subscribed" && Jid::new(&s.jid).is_ok_and(|j| j.to_bare() == bare));
            if approved {
                Ok(())
            } else {
                Err(pubsub_error(StanzaError::not_authorized(), "not-subscribed"))
            }
        }
    }
}

/// The roster items for `contact` that decide the presence and roster
/// access models: in the account's roster on PEP, in the local owners' on a
/// service.
async fn contact_items(
    server: &Server,
    service: &Service,
    node: &str,
    contact: &BareJid,
) -> Result<Vec<starling_storage::RosterItem>, StanzaError> {
    let owners: Vec<BareJid> = match service {
        Service::Pep(owner) => vec![owner.clone()],
        Service::Domain(_) => {
            let affiliations = server.store.pubsub_affiliations(service.key(), node).await.map_err(store_error)?;
            affiliations
                .into_iter()
                .filter(|(_, a)| a == Affiliation::Owner.as_str())
                .filter_map(|(jid, _)| BareJid::new(&jid).ok())
                .filter(|jid| server.domains.is_host(jid.domain().as_str()))
                .collect()
        }
    };
    let mut items = Vec::with_capacity(owners.len());
    for owner in owners {
        let (host, user) = crate::store::account(&owner);
        items.extend(server.store.roster_item(host, user, contact.as_str()).await.map_err(store_error)?);
    }
    Ok(items)
}
