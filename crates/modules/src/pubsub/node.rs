//! A node's configuration (XEP-0060 §16.4.4, `pubsub#node_config`): what
//! the module stores for each node (as JSON), reads from configure and
//! publish-options forms, and shows in configuration forms.

use serde::{Deserialize, Serialize};
use starling_proto::xmpp_parsers::data_forms::{DataForm, DataFormType, Field, FieldType};
use starling_proto::StanzaError;

pub const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
pub const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
pub const SUBSCRIBE_OPTIONS: &str = "http://jabber.org/protocol/pubsub#subscribe_options";

/// §6.3: the subscription option kept, `pubsub#deliver`, as a submitted
/// form sets it (`current` when the form leaves it out); other options are
/// refused (§6.3.6.2 invalid-options is the caller's).
pub fn deliver_option(form: &DataForm, current: bool) -> Result<bool, StanzaError> {
    let mut deliver = current;
    for field in &form.fields {
        match field.var.as_deref() {
            Some("FORM_TYPE") | None => {}
            Some(var @ "pubsub#deliver") => deliver = parse_bool(var, single(field, var)?)?,
            Some(var) => return Err(bad_field(var)),
        }
    }
    Ok(deliver)
}

/// §6.3.3: the subscription options form.
pub fn subscribe_options_form(deliver: bool) -> DataForm {
    let field = Field::new("pubsub#deliver", FieldType::Boolean).with_value(if deliver { "1" } else { "0" });
    DataForm::new(DataFormType::Form, SUBSCRIBE_OPTIONS, vec![field])
}

/// §4.5 access models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessModel {
    Open,
    Presence,
    Roster,
    Whitelist,
    Authorize,
}

/// Who may publish (`pubsub#publish_model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishModel {
    Publishers,
    Subscribers,
    Open,
}

/// `pubsub#send_last_published_item`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendLast {
    Never,
    OnSub,
    OnSubAndPresence,
}

/// `pubsub#max_items`: a number, or `max` (the service's limit, XEP-0060 §16.4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxItems {
    Count(usize),
    Max,
}

impl MaxItems {
    /// How many items the node keeps under the service limit `limit`.
    pub fn resolve(self, limit: usize) -> usize {
        match self {
            MaxItems::Count(n) => n.min(limit),
            MaxItems::Max => limit,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    pub access_model: AccessModel,
    pub publish_model: PublishModel,
    pub max_items: MaxItems,
    pub persist_items: bool,
    pub deliver_notifications: bool,
    pub deliver_payloads: bool,
    pub notify_delete: bool,
    pub notify_retract: bool,
    pub notify_config: bool,
    pub send_last_published_item: SendLast,
    pub title: String,
    /// For the roster access model: the owner's roster groups allowed in.
    pub roster_groups_allowed: Vec<String>,
}

impl Default for NodeConfig {
    /// The defaults of a node on a pubsub service (open, ten items).
    fn default() -> Self {
        NodeConfig {
            access_model: AccessModel::Open,
            publish_model: PublishModel::Publishers,
            max_items: MaxItems::Count(10),
            persist_items: true,
            deliver_notifications: true,
            deliver_payloads: true,
            notify_delete: true,
            notify_retract: true,
            notify_config: false,
            send_last_published_item: SendLast::OnSub,
            title: String::new(),
            roster_groups_allowed: Vec::new(),
        }
    }
}

/// A form field the service does not know or a value it does not take.
fn bad_field(var: &str) -> StanzaError {
    StanzaError::not_acceptable().with_text(format!("unsupported value or field {var:?}"))
}

fn parse_bool(var: &str, value: &str) -> Result<bool, StanzaError> {
    match value {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(bad_field(var)),
    }
}

fn single<'a>(field: &'a Field, var: &str) -> Result<&'a str, StanzaError> {
    match field.values.as_slice() {
        [value] => Ok(value),
        _ => Err(bad_field(var)),
    }
}

impl NodeConfig {
    /// XEP-0163 §5: a PEP node defaults to the presence access model and
    /// one item, sent to contacts when they come online.
    pub fn pep() -> Self {
        NodeConfig {
            access_model: AccessModel::Presence,
            max_items: MaxItems::Count(1),
            send_last_published_item: SendLast::OnSubAndPresence,
            ..NodeConfig::default()
        }
    }

    /// Sets the fields of a `node_config` or `publish-options` form; an
    /// unknown field or value is refused (§8.2.3.5, §7.1.5).
    pub fn apply(&mut self, form: &DataForm, max_items_limit: usize) -> Result<(), StanzaError> {
        for field in &form.fields {
            let Some(var) = field.var.as_deref() else { continue };
            if var == "FORM_TYPE" {
                continue;
            }
            let value = || single(field, var);
            match var {
                "pubsub#access_model" => {
                    self.access_model = match value()? {
                        "open" => AccessModel::Open,
                        "presence" => AccessModel::Presence,
                        "roster" => AccessModel::Roster,
                        "whitelist" => AccessModel::Whitelist,
                        "authorize" => AccessModel::Authorize,
                        _ => return Err(bad_field(var)),
                    }
                }
                "pubsub#publish_model" => {
                    self.publish_model = match value()? {
                        "publishers" => PublishModel::Publishers,
                        "subscribers" => PublishModel::Subscribers,
                        "open" => PublishModel::Open,
                        _ => return Err(bad_field(var)),
                    }
                }
                "pubsub#max_items" => {
                    self.max_items = match value()? {
                        "max" => MaxItems::Max,
                        n => match n.parse::<usize>() {
                            Ok(n) if (1..=max_items_limit).contains(&n) => MaxItems::Count(n),
                            _ => {
                                let text = format!("pubsub#max_items must be 1 to {max_items_limit} or max");
                                return Err(StanzaError::not_acceptable().with_text(text));
                            }
                        },
                    }
                }
                "pubsub#persist_items" => self.persist_items = parse_bool(var, value()?)?,
                "pubsub#deliver_notifications" => self.deliver_notifications = parse_bool(var, value()?)?,
                "pubsub#deliver_payloads" => self.deliver_payloads = parse_bool(var, value()?)?,
                "pubsub#notify_delete" => self.notify_delete = parse_bool(var, value()?)?,
                "pubsub#notify_retract" => self.notify_retract = parse_bool(var, value()?)?,
                "pubsub#notify_config" => self.notify_config = parse_bool(var, value()?)?,
                "pubsub#send_last_published_item" => {
                    self.send_last_published_item = match value()? {
                        "never" => SendLast::Never,
                        "on_sub" => SendLast::OnSub,
                        "on_sub_and_presence" => SendLast::OnSubAndPresence,
                        _ => return Err(bad_field(var)),
                    }
                }
                "pubsub#title" => self.title = field.values.first().cloned().unwrap_or_default(),
                "pubsub#roster_groups_allowed" => self.roster_groups_allowed = field.values.clone(),
                _ => return Err(bad_field(var)),
            }
        }
        Ok(())
    }

    /// §7.1.5: whether the node's configuration already is what each field
    /// of a publish-options form asks for.
    pub fn satisfies(&self, form: &DataForm, max_items_limit: usize) -> Result<bool, StanzaError> {
        let mut wanted = self.clone();
        wanted.apply(form, max_items_limit)?;
        // `max` is met by a node that keeps as many items as the limit allows.
        let same_capacity = wanted.max_items.resolve(max_items_limit) == self.max_items.resolve(max_items_limit);
        wanted.max_items = self.max_items;
        Ok(wanted == *self && same_capacity)
    }

    /// The configuration as a `node_config` form of `type_` (§8.2.1.2).
    pub fn to_form(&self, type_: DataFormType) -> DataForm {
        let boolean = |var: &str, on: bool| Field::new(var, FieldType::Boolean).with_value(if on { "1" } else { "0" });
        let list = |var: &str, value: &str| Field::new(var, FieldType::ListSingle).with_value(value);
        let access = match self.access_model {
            AccessModel::Open => "open",
            AccessModel::Presence => "presence",
            AccessModel::Roster => "roster",
            AccessModel::Whitelist => "whitelist",
            AccessModel::Authorize => "authorize",
        };
        let publish = match self.publish_model {
            PublishModel::Publishers => "publishers",
            PublishModel::Subscribers => "subscribers",
            PublishModel::Open => "open",
        };
        let send_last = match self.send_last_published_item {
            SendLast::Never => "never",
            SendLast::OnSub => "on_sub",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        };
        let max_items = match self.max_items {
            MaxItems::Count(n) => n.to_string(),
            MaxItems::Max => "max".to_owned(),
        };
        let mut groups = Field::new("pubsub#roster_groups_allowed", FieldType::ListMulti);
        groups.values = self.roster_groups_allowed.clone();
        let fields = vec![
            list("pubsub#access_model", access),
            list("pubsub#publish_model", publish),
            Field::text_single("pubsub#max_items", &max_items),
            boolean("pubsub#persist_items", self.persist_items),
            boolean("pubsub#deliver_notifications", self.deliver_notifications),
            boolean("pubsub#deliver_payloads", self.deliver_payloads),
            boolean("pubsub#notify_delete", self.notify_delete),
            boolean("pubsub#notify_retract", self.notify_retract),
            boolean("pubsub#notify_config", self.notify_config),
            list("pubsub#send_last_published_item", send_last),
            Field::text_single("pubsub#title", &self.title),
            groups,
        ];
        DataForm::new(type_, NODE_CONFIG, fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(fields: &[(&str, &str)]) -> DataForm {
        let fields = fields.iter().map(|(var, value)| Field::text_single(var, value)).collect();
        DataForm::new(DataFormType::Submit, PUBLISH_OPTIONS, fields)
    }

    #[test]
    fn publish_options_are_preconditions() {
        // XEP-0060 §7.1.5: each field is checked against the node's configuration.
        let node = NodeConfig::pep();
        assert!(node.satisfies(&form(&[("pubsub#access_model", "presence")]), 100).unwrap());
        assert!(!node.satisfies(&form(&[("pubsub#access_model", "open")]), 100).unwrap());
        assert!(node.satisfies(&form(&[("pubsub#persist_items", "true")]), 100).unwrap());
        let mut omemo = node.clone();
        omemo.apply(&form(&[("pubsub#access_model", "open"), ("pubsub#max_items", "max")]), 100).unwrap();
        assert!(omemo.satisfies(&form(&[("pubsub#max_items", "100")]), 100).unwrap(), "max is the limit");
        assert!(!omemo.satisfies(&form(&[("pubsub#max_items", "1")]), 100).unwrap());
        // Unknown fields are refused, not ignored.
        assert!(node.satisfies(&form(&[("pubsub#unknown", "1")]), 100).is_err());
        assert!(node.clone().apply(&form(&[("pubsub#max_items", "101")]), 100).is_err());
    }

    #[test]
    fn form_round_trip() {
        let mut config = NodeConfig::default();
        config.apply(&config.clone().to_form(DataFormType::Submit), 100).unwrap();
        assert_eq!(config, NodeConfig::default());
    }
}
