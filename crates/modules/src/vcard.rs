//! XEP-0054: vcard-temp, with XEP-0153 (vCard-based avatars) on top.
//!
//! A user stores their own vCard and anyone can read the vCard of a local
//! account (§3.3; §5: it is world-readable). When the stored vCard has a
//! PHOTO/BINVAL, the SHA-1 of the image is added to the user's available
//! presences, broadcast and directed (XEP-0398 §4: MUC joins), as
//! `<x xmlns='vcard-temp:x:update'><photo>hash</photo></x>` (XEP-0153 §3.1),
//! unless the client put its own `<photo/>` there. Hashes of
//! online accounts are cached; the vCard itself is read from the store.
//! An avatar published through PEP (XEP-0084) becomes the vCard's PHOTO
//! (XEP-0398), so that those who read vCards (group chats) see it too.

use crate::pubsub::own_pep_request;
use crate::store::{account, store_error};
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use dashmap::DashMap;
use serde::Deserialize;
use sha1::{Digest, Sha1};
use starling_core::module::{HookPoint, HookResult, IqRequest, IqResult, IqTarget};
use starling_core::{Module, ModuleContext, ModuleError, Server};
use starling_proto::xml::text_element;
use starling_proto::xmpp_parsers::avatar::{Data, Info, Metadata};
use starling_proto::xmpp_parsers::ns as xns;
use starling_proto::xmpp_parsers::pubsub::owner::{Owner, Payload};
use starling_proto::xmpp_parsers::pubsub::pubsub::{Item, Items};
use starling_proto::xmpp_parsers::pubsub::{ItemId, NodeName, PubSub};
use starling_proto::{ns, BareJid, Element, IqType, Jid, Stanza, StanzaError, StanzaKind};
use std::sync::Arc;

/// `account_data` store name; one value per account, key "".
const STORE: &str = "vcard";
/// XEP-0398 §2: announced on the account.
const PEP_VCARD_CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";

pub struct VCard;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VCardConfig {
    /// Largest vCard accepted, in bytes of XML (larger sets get `not-acceptable`).
    pub max_bytes: usize,
}

impl Default for VCardConfig {
    fn default() -> Self {
        VCardConfig { max_bytes: 64 * 1024 }
    }
}

/// What the stored vCard says about the avatar (XEP-0153 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Avatar {
    /// No vCard stored: nothing is added to presence.
    Unknown,
    /// A vCard without image data: an empty `<photo/>` (§4.1: "no avatar").
    NoPhoto,
    /// The lower-case hex SHA-1 of the image bytes.
    Photo(String),
}

type Avatars = Arc<DashMap<BareJid, Avatar>>;

impl Module for VCard {
    const NAME: &'static str = "vcard";
    type Config = VCardConfig;

    fn load(config: VCardConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        // §4: support is advertised as a disco feature.
        ctx.add_feature(ns::VCARD);
        let avatars: Avatars = Arc::default();
        ctx.handle_iq(IqTarget::Account, IqType::Get, ns::VCARD, get);
        let a = avatars.clone();
        let max_bytes = config.max_bytes;
        ctx.handle_iq(IqTarget::Account, IqType::Set, ns::VCARD, move |req| set(req, max_bytes, a.clone()));
        let a = avatars.clone();
        ctx.decorate_presence(move |server, presence| decorate(server, presence, a.clone()));
        ctx.add_account_feature(PEP_VCARD_CONVERSION);
        let a = avatars.clone();
        ctx.hook(HookPoint::Outbound(StanzaKind::Iq), 0, move |server, stanza| {
            let a = a.clone();
            async move {
                avatar_published(&server, &stanza, &a).await;
                HookResult::Continue
            }
        });
        ctx.hook(HookPoint::AccountOffline, 0, move |_, stanza| {
            if let Some(from) = &stanza.from {
                avatars.remove(&from.to_bare());
            }
            async { HookResult::Continue }
        });
        Ok(VCard)
    }
}

/// The sender and the account the request is about (no `to`: the sender's own).
fn parties(req: &IqRequest) -> Result<(BareJid, BareJid), StanzaError> {
    let from = req.stanza.from.as_ref().ok_or_else(StanzaError::service_unavailable)?;
    let owner = req.stanza.to.as_ref().unwrap_or(from).to_bare();
    if !req.payload().is("vCard", ns::VCARD) {
        return Err(StanzaError::bad_request().with_text("expected <vCard xmlns='vcard-temp'/>"));
    }
    Ok((from.to_bare(), owner))
}

async fn load(server: &Server, owner: &BareJid) -> Result<Option<Element>, StanzaError> {
    let (host, user) = account(owner);
    let Some(xml) = server.store.get_data(host, user, STORE, "").await.map_err(store_error)? else {
        return Ok(None);
    };
    match xml.parse::<Element>() {
        Ok(vcard) => Ok(Some(vcard)),
        Err(e) => {
            tracing::error!(error = %e, %owner, "stored vCard does not parse");
            Err(StanzaError::internal_server_error())
        }
    }
}

/// §3.1 (one's own vCard) and §3.3 (another user's).
async fn get(req: IqRequest) -> IqResult {
    let (from, owner) = parties(&req)?;
    match load(&req.server, &owner).await? {
        Some(vcard) => Ok(Some(vcard)),
        // §3.1: none stored → an empty <vCard/> (or item-not-found).
        None if from == owner => Ok(Some(Element::bare("vCard", ns::VCARD))),
        // §3.3: no vCard and no such user look the same, service-unavailable
        // (against directory harvesting).
        None => Err(StanzaError::service_unavailable()),
    }
}

/// §3.2: the owner replaces the whole vCard; an empty one deletes it.
async fn set(req: IqRequest, max_bytes: usize, avatars: Avatars) -> IqResult {
    let (from, owner) = parties(&req)?;
    if from != owner {
        // §3.2: someone else's vCard: forbidden (or not-allowed).
        return Err(StanzaError::forbidden());
    }
    let vcard = req.payload();
    let xml = String::from(vcard);
    if xml.len() > max_bytes {
        return Err(StanzaError::not_acceptable().with_text(format!("vCard larger than {max_bytes} bytes")));
    }
    let avatar = avatar_of(vcard)?;
    let empty = vcard.children().next().is_none();
    let (host, user) = account(&owner);
    let value = (!empty).then_some(xml.as_str());
    req.server.store.set_data(host, user, STORE, "", value).await.map_err(store_error)?;
    avatars.insert(owner, if empty { Avatar::Unknown } else { avatar });
    Ok(None)
}

/// XEP-0398 §3: a PEP avatar (XEP-0084) becomes the vCard's PHOTO. Done as
/// the owner's metadata publish passes, before PEP stores it: the data item
/// it points at was published first (XEP-0084 §4.1). Empty metadata (§4.2:
/// avatar disabled) removes the PHOTO.
async fn avatar_published(server: &Arc<Server>, stanza: &Stanza, avatars: &Avatars) {
    let Some(owner) = stanza.from.as_ref() else { return };
    if !stanza.is_type("set") || stanza.to.as_ref().is_some_and(|to| to.to_bare() != owner.to_bare()) {
        return;
    }
    // Every IQ a session sends passes here: only an avatar metadata publish
    // is copied and parsed.
    let Some(payload) = stanza.payload().filter(|p| {
        p.is("pubsub", xns::PUBSUB)
            && p.get_child("publish", xns::PUBSUB).and_then(|publish| publish.attr("node"))
                == Some(xns::AVATAR_METADATA)
    }) else {
        return;
    };
    let Ok(PubSub::Publish { publish, .. }) = PubSub::try_from(payload.clone()) else { return };
    let Some(metadata) = publish.items.into_iter().find_map(|item| Metadata::try_from(item.payload?).ok()) else {
        return;
    };
    let photo = if metadata.infos.is_empty() {
        None
    } else {
        // §3: the image held here, not one at a URL.
        let Some(info) = metadata.infos.iter().find(|i| i.url.is_none()) else { return };
        match avatar_data(server, owner, info).await {
            Some(image) => Some((info.type_.clone(), image)),
            None => return,
        }
    };
    if let Err(e) = replace_photo(server, &owner.to_bare(), photo, avatars).await {
        tracing::warn!(%owner, error = %e, "PEP avatar not copied to the vCard");
    }
}

/// The image `info` describes, from the data node: only when that node is
/// world-readable (§7: a vCard is), and when its SHA-1 is the id (§3).
async fn avatar_data(server: &Arc<Server>, owner: &Jid, info: &Info) -> Option<Vec<u8>> {
    let configure =
        Owner { payload: Payload::Configure { node: Some(NodeName(xns::AVATAR_DATA.to_owned())), form: None } };
    let config = own_pep_request(server, owner, "get", configure.into()).await.ok()??;
    let open = match Owner::try_from(config).ok()?.payload {
        Payload::Configure { form: Some(form), .. } => form
            .fields
            .iter()
            .any(|f| f.var.as_deref() == Some("pubsub#access_model") && f.values.first().is_some_and(|v| v == "open")),
        _ => false,
    };
    if !open {
        return None;
    }
    let id = info.id.to_hex();
    let mut query = Items::new(xns::AVATAR_DATA);
    query.items = vec![Item { id: Some(ItemId(id.clone())), publisher: None, payload: None }];
    let answer = own_pep_request(server, owner, "get", PubSub::Items(query).into()).await.ok()??;
    let PubSub::Items(items) = PubSub::try_from(answer).ok()? else { return None };
    let data = items.items.into_iter().find_map(|item| Data::try_from(item.payload?).ok())?.data;
    (sha1_hex(&data) == id).then_some(data)
}

/// Stores the vCard with `photo` (type, image) as its only PHOTO, or none.
async fn replace_photo(
    server: &Arc<Server>,
    owner: &BareJid,
    photo: Option<(String, Vec<u8>)>,
    avatars: &Avatars,
) -> Result<(), StanzaError> {
    let current = load(server, owner).await?.unwrap_or_else(|| Element::bare("vCard", ns::VCARD));
    let mut vcard = Element::bare("vCard", ns::VCARD);
    for child in current.children().filter(|c| !c.is("PHOTO", ns::VCARD)) {
        vcard.append_child(child.clone());
    }
    let avatar = match photo {
        Some((type_, image)) => {
            let mut el = Element::bare("PHOTO", ns::VCARD);
            el.append_child(text_element("TYPE", ns::VCARD, type_));
            el.append_child(text_element(
                "BINVAL",
                ns::VCARD,
                base64::engine::general_purpose::STANDARD.encode(&image),
            ));
            vcard.append_child(el);
            Avatar::Photo(sha1_hex(&image))
        }
        None => Avatar::NoPhoto,
    };
    let (host, user) = account(owner);
    let xml = String::from(&vcard);
    server.store.set_data(host, user, STORE, "", Some(&xml)).await.map_err(store_error)?;
    avatars.insert(owner.clone(), avatar);
    Ok(())
}

/// Base64 as clients send it: whitespace is stripped first (XEP-0153 §4.6),
/// padding is optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// XEP-0153 §3.1: the SHA-1 of the image bytes (not of the base64 text), in
/// lower-case hex. A PHOTO with only an EXTVAL (§4.5: SHOULD NOT) has no
/// hash to advertise.
fn avatar_of(vcard: &Element) -> Result<Avatar, StanzaError> {
    let Some(binval) = vcard.get_child("PHOTO", ns::VCARD).and_then(|p| p.get_child("BINVAL", ns::VCARD)) else {
        return Ok(Avatar::NoPhoto);
    };
    let text: String = binval.text().chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if text.is_empty() {
        return Ok(Avatar::NoPhoto);
    }
    let image = BASE64
        .decode(text)
        .map_err(|_| StanzaError::bad_request().with_text("PHOTO/BINVAL is not base64 (XEP-0153 §4.6)"))?;
    Ok(Avatar::Photo(sha1_hex(&image)))
}

/// §3.1: avatars are named by the lower-case hex SHA-1 of the image bytes.
fn sha1_hex(image: &[u8]) -> String {
    Sha1::digest(image).iter().map(|b| format!("{b:02x}")).collect()
}

/// The `<x xmlns='vcard-temp:x:update'/>` for an available presence
/// broadcast, if the client did not send one itself.
async fn decorate(server: Arc<Server>, presence: Arc<Stanza>, avatars: Avatars) -> Option<Element> {
    // XEP-0398 §4: the client's own photo element (a hash, or empty for
    // "not ready") stays; an update element without one is replaced.
    let own_photo =
        presence.el.get_child("x", ns::VCARD_UPDATE).is_some_and(|x| x.has_child("photo", ns::VCARD_UPDATE));
    if presence.type_.is_some() || own_photo {
        return None;
    }
    let owner = presence.from.as_ref()?.to_bare();
    let cached = avatars.get(&owner).map(|a| a.value().clone());
    let avatar = match cached {
        Some(avatar) => avatar,
        None => {
            let avatar = match load(&server, &owner).await {
                Ok(Some(vcard)) => avatar_of(&vcard).unwrap_or(Avatar::NoPhoto),
                Ok(None) => Avatar::Unknown,
                Err(_) => return None,
            };
            // A vCard set while we read wins over what we read.
            avatars.entry(owner).or_insert(avatar).value().clone()
        }
    };
    let photo = match avatar {
        Avatar::Unknown => return None,
        Avatar::NoPhoto => Element::bare("photo", ns::VCARD_UPDATE),
        Avatar::Photo(hash) => text_element("photo", ns::VCARD_UPDATE, hash),
    };
    let mut x = Element::bare("x", ns::VCARD_UPDATE);
    x.append_child(photo);
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vcard(xml: &str) -> Element {
        format!("<vCard xmlns='vcard-temp'>{xml}</vCard>").parse().unwrap()
    }

    #[test]
    fn photo_hash_is_sha1_of_the_decoded_image() {
        // "hello" = aGVsbG8=; sha1("hello") = aaf4c61d…
        let with_photo = vcard("<PHOTO><TYPE>image/png</TYPE><BINVAL>aGVs\n bG8=</BINVAL></PHOTO>");
        assert_eq!(avatar_of(&with_photo).unwrap(), Avatar::Photo("aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d".into()));
        let unpadded = vcard("<PHOTO><BINVAL>aGVsbG8</BINVAL></PHOTO>");
        assert_eq!(avatar_of(&unpadded).unwrap(), avatar_of(&with_photo).unwrap());
        assert_eq!(avatar_of(&vcard("<FN>Juliet</FN>")).unwrap(), Avatar::NoPhoto);
        assert_eq!(avatar_of(&vcard("<PHOTO><EXTVAL>https://x/y.png</EXTVAL></PHOTO>")).unwrap(), Avatar::NoPhoto);
        assert_eq!(avatar_of(&vcard("<PHOTO><BINVAL/></PHOTO>")).unwrap(), Avatar::NoPhoto);
        assert!(avatar_of(&vcard("<PHOTO><BINVAL>not base64!</BINVAL></PHOTO>")).is_err());
    }
}
