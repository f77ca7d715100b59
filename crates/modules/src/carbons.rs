//! XEP-0280: Message Carbons. A session enables carbons (session flag
//! "carbons"); then it gets a `<sent/>` copy of the instant messages its
//! account's other resources send (§8) and a `<received/>` copy of those
//! addressed to the account that it did not get itself (§7), each wrapped
//! in an XEP-0297 `<forwarded/>`. Copies go straight to the session queues:
//! a copy that cannot be queued is dropped, never bounced to the original
//! sender (§10.3).

use serde::Deserialize;
use starling_core::module::{HookPoint, HookResult, IqRequest, IqResult, IqTarget};
use starling_core::{Module, ModuleContext, ModuleError, Outbound, Server};
use starling_proto::xml::{element, set_attr};
use starling_proto::{ns, same_account, BareJid, Element, FullJid, IqType, Jid, Stanza, StanzaError, StanzaKind};

/// Session flag of a carbons-enabled resource.
const FLAG: &str = "carbons";
/// Copies are made last, after every hook that may stop the message
/// (blocking, for one).
const HOOK_PRIORITY: i32 = -100;

pub struct Carbons;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarbonsConfig {}

impl Module for Carbons {
    const NAME: &'static str = "carbons";
    type Config = CarbonsConfig;

    fn load(_: CarbonsConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        // §3. Not "urn:xmpp:carbons:rules:0": the error and multi-session
        // nick rules of §6.1 are approximated, not implemented exactly.
        ctx.add_feature(ns::CARBONS);
        // §4, §5: sent without `to` (the account); accepted at the host too.
        ctx.handle_iq(IqTarget::Account, IqType::Set, ns::CARBONS, toggle);
        ctx.handle_iq(IqTarget::Host, IqType::Set, ns::CARBONS, toggle);
        ctx.hook(HookPoint::Outbound(StanzaKind::Message), HOOK_PRIORITY, |server, stanza| async move {
            sent(&server, &stanza);
            HookResult::Continue
        });
        ctx.hook(HookPoint::Inbound(StanzaKind::Message), HOOK_PRIORITY, |server, stanza| async move {
            received(&server, &stanza);
            HookResult::Continue
        });
        Ok(Carbons)
    }
}

/// §4 and §5: enable or disable for the requesting session. Repeating
/// either is not an error (§10.1).
async fn toggle(req: IqRequest) -> IqResult {
    let Some(Ok(from)) = req.stanza.from.as_ref().map(Jid::try_as_full) else {
        return Err(StanzaError::bad_request());
    };
    // §5.1: not for another account's sessions.
    if req.stanza.to.as_ref().is_some_and(|to| to.node().is_some() && to.to_bare() != from.to_bare()) {
        return Err(StanzaError::not_allowed());
    }
    let payload = req.payload();
    let on = if payload.is("enable", ns::CARBONS) {
        true
    } else if payload.is("disable", ns::CARBONS) {
        false
    } else {
        return Err(StanzaError::bad_request().with_text("expected <enable/> or <disable/>"));
    };
    req.server.router.set_flag(from, FLAG, on);
    Ok(None)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Sent,
    Received,
}

/// IM payloads of §6.1: chat states (XEP-0085), receipts (XEP-0184),
/// displayed markers (XEP-0333).
fn has_im_payload(el: &Element) -> bool {
    el.children().any(|c| {
        let n = c.ns();
        n == ns::CHATSTATES || n == ns::RECEIPTS || n == ns::CHAT_MARKERS
    })
}

/// §6.1 (and §9): whether a message is copied.
fn eligible(stanza: &Stanza, direction: Direction) -> bool {
    let el = &stanza.el;
    // §9: the sender opted out; XEP-0334 no-copy says the same.
    if el.has_child("private", ns::CARBONS) || el.has_child("no-copy", ns::HINTS) {
        return false;
    }
    // Never a copy of a copy (§11: carbons come from the account only).
    if el.has_child("sent", ns::CARBONS) || el.has_child("received", ns::CARBONS) {
        return false;
    }
    let type_ = stanza.type_.as_deref().unwrap_or("normal");
    if type_ == "groupchat" {
        return false;
    }
    // XEP-0249 direct and XEP-0045 mediated invitations are copied.
    let muc_user = el.get_child("x", ns::MUC_USER);
    if el.has_child("x", ns::CONFERENCE) || muc_user.is_some_and(|x| x.has_child("invite", ns::MUC_USER)) {
        return true;
    }
    // A private message from a MUC participant (from a full JID) is already
    // sent by the room to every joined client.
    if direction == Direction::Received && muc_user.is_some() && stanza.from.as_ref().is_some_and(Jid::is_full) {
        return false;
    }
    match type_ {
        "chat" => true,
        "normal" if el.has_child("body", ns::CLIENT) => true,
        // "Sent in response to an eligible message": the server does not
        // track what it copied, so an error echoing IM content (RFC 6120
        // §8.3.1 lets it include the original) stands for that.
        "error" => el.has_child("body", ns::CLIENT) || has_im_payload(el),
        _ => has_im_payload(el),
    }
}

/// The wrapping message of §7 / §8: from the account's bare JID, to the
/// receiving resource, same type, the original inside `<forwarded/>`.
fn carbon(kind: &str, user: &BareJid, to: &FullJid, original: &Element) -> Element {
    let mut message = element("message", ns::CLIENT, &[("from", user.as_str()), ("to", to.as_str())]);
    if let Some(type_) = original.attr("type") {
        set_attr(&mut message, "type", type_);
    }
    let mut forwarded = Element::bare("forwarded", ns::FORWARD);
    forwarded.append_child(original.clone());
    let mut wrapper = Element::bare(kind, ns::CARBONS);
    wrapper.append_child(forwarded);
    message.append_child(wrapper);
    message
}

/// Queues a copy; §10.3: failures are not reported to anyone.
fn send_copy(session: &starling_core::SessionHandle, copy: Element) {
    if let Err(e) = session.send(Outbound::stanza(copy)) {
        tracing::debug!(to = %session.jid, error = %e, "carbon copy dropped");
    }
}

/// §8: a local session sent a message; every other carbons-enabled
/// resource of the account gets a `<sent/>` copy, whether or not the
/// sender enabled carbons.
fn sent(server: &Server, stanza: &Stanza) {
    let Some(Ok(sender)) = stanza.from.as_ref().map(Jid::try_as_full) else { return };
    // Messages to the account itself reach its resources as originals.
    if stanza.to.as_ref().is_none_or(|to| same_account(to, sender)) || !eligible(stanza, Direction::Sent) {
        return;
    }
    let user = sender.to_bare();
    for session in server.router.with_flag(&user, FLAG) {
        if &session.jid != sender {
            send_copy(&session, carbon("sent", &user, &session.jid, &stanza.el));
        }
    }
}

/// §7: a message for a local account; every carbons-enabled resource that
/// does not get the original under RFC 6121 §8.5 gets a `<received/>` copy.
fn received(server: &Server, stanza: &Stanza) {
    let Some(to) = &stanza.to else { return };
    // From the account itself (its other resources got a <sent/> copy) or
    // from the server: nothing to copy.
    if stanza.from.as_ref().is_none_or(|from| same_account(from, to)) || !eligible(stanza, Direction::Received) {
        return;
    }
    let user = to.to_bare();
    let enabled = server.router.with_flag(&user, FLAG);
    if enabled.is_empty() {
        return;
    }
    // Who gets the original: the addressed resource if it is bound
    // (RFC 6121 §8.5.3.1), else the bare JID rules (§8.5.2.1.1, §8.5.3.2.1).
    let addressed = match to.try_as_full() {
        Ok(full) => server.router.session(full).map(|s| vec![s.id]),
        Err(_) => None,
    };
    let originals =
        addressed.unwrap_or_else(|| server.router.message_targets(&user).into_iter().map(|s| s.id).collect());
    for session in enabled {
        if !originals.contains(&session.id) {
            send_copy(&session, carbon("received", &user, &session.jid, &stanza.el));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanza(xml: &str) -> Stanza {
        Stanza::from_element(xml.parse().unwrap(), ns::CLIENT).unwrap()
    }

    #[test]
    fn section_6_1_eligibility() {
        let copied = [
            "<message xmlns='jabber:client' type='chat' from='a@h/r' to='b@h'/>",
            "<message xmlns='jabber:client' from='a@h/r' to='b@h'><body>hi</body></message>",
            "<message xmlns='jabber:client' type='normal' from='a@h/r' to='b@h'><body>hi</body></message>",
            "<message xmlns='jabber:client' from='a@h/r' to='b@h'><received xmlns='urn:xmpp:receipts' id='x'/></message>",
            "<message xmlns='jabber:client' type='headline' from='a@h/r' to='b@h'>\
             <displayed xmlns='urn:xmpp:chat-markers:0' id='x'/></message>",
            "<message xmlns='jabber:client' from='room@muc.h' to='b@h'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><invite from='a@h'/></x></message>",
            "<message xmlns='jabber:client' from='a@h/r' to='b@h'><x xmlns='jabber:x:conference' jid='room@muc.h'/></message>",
            "<message xmlns='jabber:client' type='error' from='a@h' to='b@h/r'><body>hi</body></message>",
        ];
        for xml in copied {
            assert!(eligible(&stanza(xml), Direction::Received), "{xml}");
        }
        let not_copied = [
            "<message xmlns='jabber:client' from='a@h/r' to='b@h'/>",
            "<message xmlns='jabber:client' type='headline' from='a@h/r' to='b@h'><body>news</body></message>",
            "<message xmlns='jabber:client' type='groupchat' from='room@muc.h/nick' to='b@h/r'><body>x</body></message>",
            "<message xmlns='jabber:client' type='chat' from='a@h/r' to='b@h'><private xmlns='urn:xmpp:carbons:2'/></message>",
            "<message xmlns='jabber:client' type='chat' from='a@h/r' to='b@h'><no-copy xmlns='urn:xmpp:hints'/></message>",
            "<message xmlns='jabber:client' type='chat' from='room@muc.h/nick' to='b@h/r'><body>pm</body>\
             <x xmlns='http://jabber.org/protocol/muc#user'/></message>",
            "<message xmlns='jabber:client' type='error' from='a@h' to='b@h/r'/>",
        ];
        for xml in not_copied {
            assert!(!eligible(&stanza(xml), Direction::Received), "{xml}");
        }
        // A private message to a MUC participant is copied to the sender's resources.
        let pm = "<message xmlns='jabber:client' type='chat' from='b@h/r' to='room@muc.h/nick'><body>pm</body>\
                  <x xmlns='http://jabber.org/protocol/muc#user'/></message>";
        assert!(eligible(&stanza(pm), Direction::Sent));
    }

    #[test]
    fn carbon_wraps_the_original() {
        let original: Element =
            "<message xmlns='jabber:client' type='chat' from='j@c/balcony' to='r@m/garden'><body>hi</body></message>"
                .parse()
                .unwrap();
        let user = BareJid::new("r@m").unwrap();
        let to = FullJid::new("r@m/home").unwrap();
        let copy = carbon("received", &user, &to, &original);
        assert_eq!(copy.attr("from"), Some("r@m"));
        assert_eq!(copy.attr("to"), Some("r@m/home"));
        assert_eq!(copy.attr("type"), Some("chat"));
        let inner = copy
            .get_child("received", ns::CARBONS)
            .and_then(|r| r.get_child("forwarded", ns::FORWARD))
            .and_then(|f| f.get_child("message", ns::CLIENT))
            .unwrap();
        assert_eq!(inner, &original);
    }
}
