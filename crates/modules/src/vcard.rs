//! XEP-0054: vcard-temp, with XEP-0153 (vCard-based avatars) on top.
//!
//! A user stores their own vCard and anyone can read the vCard of a local
//! account (§3.3; §5: it is world-readable). When the stored vCard has a
//! PHOTO/BINVAL, the SHA-1 of the image is added to the user's available
//! presence broadcasts as `<x xmlns='vcard-temp:x:update'><photo>hash</photo></x>`
//! (XEP-0153 §3.1), unless the client put its own `<x/>` there. Hashes of
//! online accounts are cached; the vCard itself is read from the store.

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
use starling_proto::{ns, BareJid, Element, IqType, Stanza, StanzaError};
use std::sync::Arc;

/// `account_data` store name; one value per account, key "".
const STORE: &str = "vcard";

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
    let hash = Sha1::digest(image).iter().map(|b| format!("{b:02x}")).collect();
    Ok(Avatar::Photo(hash))
}

/// The `<x xmlns='vcard-temp:x:update'/>` for an available presence
/// broadcast, if the client did not send one itself.
async fn decorate(server: Arc<Server>, presence: Arc<Stanza>, avatars: Avatars) -> Option<Element> {
    if presence.type_.is_some() || presence.el.has_child("x", ns::VCARD_UPDATE) {
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
