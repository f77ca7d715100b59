//! XEP-0313 §4 queries: the form (with the `#extended` fields and XEP-0431
//! full-text search), XEP-0059 paging both ways with `count`, results sent
//! to the querying session before the `<fin/>`, and §5.1 metadata.

use super::MamConfig;
use crate::store::store_error;
use starling_core::module::{IqRequest, IqResult};
use starling_core::Outbound;
use starling_proto::xmpp_parsers::data_forms::{DataForm, DataFormType, Field, FieldType};
use starling_proto::xmpp_parsers::date::DateTime;
use starling_proto::xmpp_parsers::delay::Delay;
use starling_proto::xmpp_parsers::forwarding::Forwarded;
use starling_proto::xmpp_parsers::mam::{End, Fin, MetadataResponse, Query, QueryId, Result_, Start};
use starling_proto::xmpp_parsers::message::Message;
use starling_proto::xmpp_parsers::rsm::{First, SetResult};
use starling_proto::{ns, BareJid, Element, Jid, StanzaError};
use starling_storage::{ArchiveFilter, ArchivedMessage, PageFrom};

/// XEP-0431's field for full-text search.
const FULLTEXT: &str = "{urn:xmpp:fulltext:0}fulltext";

/// §4.1.1 (and §6 of `#extended`): the fields a query form may have.
pub fn form_fields() -> Element {
    let fields = [
        ("with", FieldType::JidSingle),
        ("start", FieldType::TextSingle),
        ("end", FieldType::TextSingle),
        ("after-id", FieldType::TextSingle),
        ("before-id", FieldType::TextSingle),
        ("ids", FieldType::TextMulti),
        (FULLTEXT, FieldType::TextSingle),
    ]
    .into_iter()
    .map(|(var, type_)| Field::new(var, type_))
    .collect();
    Query {
        queryid: None,
        node: None,
        form: Some(DataForm::new(DataFormType::Form, ns::MAM, fields)),
        set: None,
        flip_page: false,
    }
    .into()
}

/// Runs a query on `owner`'s archive: the results go to the requesting
/// session (waiting for room in its queue), then the `<fin/>` answers.
pub async fn run(req: &IqRequest, owner: &BareJid, config: &MamConfig) -> IqResult {
    let query = Query::try_from(req.payload().clone())
        .map_err(|e| StanzaError::bad_request().with_text(format!("invalid query: {e}")))?;
    let store = &req.server.store;
    let seq_of = |id: String| async move {
        match store.archive_seq(owner.as_str(), &id).await.map_err(store_error)? {
            Some(seq) => Ok(seq),
            // §4.3.3 (XEP-0059 §2.6): an id the archive does not have.
            None => Err(StanzaError::item_not_found().with_text(format!("no message {id:?} in the archive"))),
        }
    };
    let mut filter = ArchiveFilter::default();
    for field in query.form.iter().flat_map(|f| &f.fields) {
        let value = field.values.first().cloned().unwrap_or_default();
        match field.var.as_deref().unwrap_or_default() {
            "FORM_TYPE" => {}
            "with" => {
                let with = Jid::new(&value).map_err(|_| StanzaError::bad_request().with_text("invalid 'with'"))?;
                filter.with = Some((with.to_bare().to_string(), with.resource().map(|r| r.to_string())));
            }
            "start" => filter.start = Some(micros(&value)?),
            "end" => filter.end = Some(micros(&value)?),
            "after-id" => filter.after_seq = Some(seq_of(value).await?),
            "before-id" => filter.before_seq = Some(seq_of(value).await?),
            "ids" => filter.ids = field.values.clone(),
            FULLTEXT if !value.trim().is_empty() => filter.text = Some(value),
            FULLTEXT => {}
            other => {
                return Err(StanzaError::bad_request().with_text(format!("unsupported field {other:?}")));
            }
        }
    }
    let set = query.set.as_ref();
    let max = set.and_then(|s| s.max).unwrap_or(config.default_page).min(config.max_page);
    let from = match (set.and_then(|s| s.before.clone()), set.and_then(|s| s.after.clone())) {
        // XEP-0059 §2.5: an empty <before/> asks for the last page.
        (Some(before), _) if before.is_empty() => PageFrom::Before(None),
        (Some(before), _) => PageFrom::Before(Some(seq_of(before).await?)),
        (None, Some(after)) => PageFrom::After(Some(seq_of(after).await?)),
        (None, None) => PageFrom::After(None),
    };
    let page = store.archive_page(owner.as_str(), &filter, from, max).await.map_err(store_error)?;
    let count = store.archive_count(owner.as_str(), &filter).await.map_err(store_error)?;
    let mut messages = page.messages;
    if query.flip_page {
        messages.reverse();
    }
    let requester = req.stanza.from.as_ref().and_then(|f| f.clone().try_into_full().ok());
    let session = requester.and_then(|full| req.server.router.session(&full)).ok_or_else(StanzaError::bad_request)?;
    for message in &messages {
        let Some(result) = result_message(&session.jid.clone().into(), owner, query.queryid.clone(), message) else {
            tracing::warn!(archive = %owner, id = %message.stanza_id, "archived message unreadable; skipped");
            continue;
        };
        if session.send_wait(Outbound::stanza(result)).await.is_err() {
            return Err(StanzaError::recipient_unavailable());
        }
    }
    let set = SetResult {
        first: messages.first().map(|m| First { index: None, item: m.stanza_id.clone() }),
        last: messages.last().map(|m| m.stanza_id.clone()),
        count: Some(usize::try_from(count).unwrap_or(usize::MAX)),
    };
    Ok(Some(Fin { complete: page.complete, set }.into()))
}

/// §5.1: the first and last message of the archive.
pub async fn metadata(req: &IqRequest, owner: &BareJid) -> Result<Element, StanzaError> {
    let ends = req.server.store.archive_ends(owner.as_str()).await.map_err(store_error)?;
    let response = match ends {
        Some((first, last)) => MetadataResponse {
            start: Some(Start { id: first.stanza_id, timestamp: stamp(first.stamp)? }),
            end: Some(End { id: last.stanza_id, timestamp: stamp(last.stamp)? }),
        },
        None => MetadataResponse { start: None, end: None },
    };
    Ok(response.into())
}

/// §4.2: the archived message, forwarded with its time, in a message from
/// the archive to the requesting session.
fn result_message(to: &Jid, owner: &BareJid, queryid: Option<QueryId>, archived: &ArchivedMessage) -> Option<Element> {
    let original = Message::try_from(archived.stanza.parse::<Element>().ok()?).ok()?;
    let delay = Delay { from: None, stamp: stamp(archived.stamp).ok()?, data: None };
    let result = Result_ {
        id: archived.stanza_id.clone(),
        queryid,
        forwarded: Forwarded { delay: Some(delay), message: original },
    };
    let mut wrapper = Message::new(Some(to.clone()));
    wrapper.from = Some(owner.clone().into());
    wrapper.payloads.push(result.into());
    Some(wrapper.into())
}

/// An XEP-0082 time as microseconds since the Unix epoch.
fn micros(value: &str) -> Result<i64, StanzaError> {
    let time: DateTime = value.parse().map_err(|_| StanzaError::bad_request().with_text("invalid time"))?;
    Ok(time.0.timestamp_micros())
}

fn stamp(micros: i64) -> Result<DateTime, StanzaError> {
    let time = chrono::DateTime::from_timestamp_micros(micros).ok_or_else(StanzaError::internal_server_error)?;
    Ok(DateTime(time.fixed_offset()))
}
