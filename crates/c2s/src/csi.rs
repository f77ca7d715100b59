//! Client state indication (XEP-0352): while the client says it is inactive
//! (a phone app in the background), what it does not need at once is held —
//! availability presence (only the newest per contact) and body-less chat
//! states (only the newest per sender) — and everything held goes out in
//! order before anything urgent, on `<active/>`, or when the hold is full.

use starling_proto::{ns, Element};
use std::collections::VecDeque;

#[derive(Debug, Default)]
pub(crate) struct Csi {
    inactive: bool,
    /// Held stanzas in the order they are to be sent.
    held: VecDeque<(HoldKey, Box<Element>)>,
}

/// What a newer stanza replaces: presence per sender, chat state per sender.
#[derive(Debug, PartialEq, Eq)]
enum HoldKey {
    Presence(String),
    ChatState(String),
}

/// What to do with a stanza on its way to the client.
pub(crate) enum Pass {
    /// Send it now, after everything returned (held stanzas, in order).
    Send(VecDeque<Box<Element>>, Box<Element>),
    /// Held for later.
    Held,
}

impl Csi {
    pub fn set_inactive(&mut self, inactive: bool) {
        self.inactive = inactive;
    }

    /// Holds `el` if it can wait (see the module doc); otherwise it goes
    /// out behind everything held. Past `max_held` the hold is flushed.
    pub fn filter(&mut self, el: Box<Element>, max_held: usize) -> Pass {
        // IQs pass the hold: a reply the client waits for (its keepalive
        // ping, say) is urgent, but does not make contacts' presence so.
        if el.name() == "iq" {
            return Pass::Send(VecDeque::new(), el);
        }
        let key = if self.inactive { hold_key(&el) } else { None };
        let Some(key) = key else {
            return Pass::Send(self.take_held(), el);
        };
        self.held.retain(|(k, _)| *k != key);
        if self.held.len() >= max_held {
            return Pass::Send(self.take_held(), el);
        }
        self.held.push_back((key, el));
        Pass::Held
    }

    /// Everything held, in order (on `<active/>`, or when the session ends).
    pub fn take_held(&mut self) -> VecDeque<Box<Element>> {
        self.held.drain(..).map(|(_, el)| el).collect()
    }
}

/// Stanzas a client in the background does not need at once: availability
/// presence (not subscriptions, not errors) and messages that carry only a
/// chat state (no body, nothing encrypted).
fn hold_key(el: &Element) -> Option<HoldKey> {
    let from = el.attr("from").unwrap_or_default().to_owned();
    match el.name() {
        "presence" => matches!(el.attr("type"), None | Some("unavailable")).then_some(HoldKey::Presence(from)),
        "message" => {
            let chat_state_only = el.children().any(|c| c.ns() == ns::CHATSTATES)
                && !el.children().any(|c| c.name() == "body" || c.name() == "encrypted")
                && el.attr("type") != Some("error");
            chat_state_only.then_some(HoldKey::ChatState(from))
        }
        _ => None,
    }
}

/// The stream feature offered after authentication (XEP-0352 §3).
pub(crate) fn feature() -> Element {
    Element::bare("csi", ns::CSI)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Box<Element> {
        Box::new(xml.parse().unwrap())
    }

    fn sent(pass: Pass) -> Vec<String> {
        match pass {
            Pass::Send(held, el) => held.iter().chain([&el]).map(|e| e.attr("id").unwrap().to_owned()).collect(),
            Pass::Held => Vec::new(),
        }
    }

    #[test]
    fn inactive_holds_presence_and_chat_states_until_a_message_with_a_body() {
        // XEP-0352 §1: the server may hold back what is not urgent.
        let mut csi = Csi::default();
        csi.set_inactive(true);
        let p = |id, from| parse(&format!("<presence xmlns='jabber:client' id='{id}' from='{from}'/>"));
        assert!(matches!(csi.filter(p("p1", "a@x/r"), 10), Pass::Held));
        assert!(matches!(csi.filter(p("p2", "b@x/r"), 10), Pass::Held));
        assert!(matches!(csi.filter(p("p3", "a@x/r"), 10), Pass::Held), "replaces p1");
        let typing = parse(
            "<message xmlns='jabber:client' id='c1' from='b@x/r'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        );
        assert!(matches!(csi.filter(typing, 10), Pass::Held));
        let subscribe = parse("<presence xmlns='jabber:client' id='s1' type='subscribe' from='c@x'/>");
        assert_eq!(sent(csi.filter(subscribe, 10)), ["p2", "p3", "c1", "s1"]);
        let body = parse("<message xmlns='jabber:client' id='m1' from='b@x/r'><body>hi</body></message>");
        assert_eq!(sent(csi.filter(body, 10)), ["m1"]);
    }

    #[test]
    fn a_full_hold_is_flushed_and_active_sends_everything() {
        let mut csi = Csi::default();
        csi.set_inactive(true);
        for i in 0..3 {
            let el = parse(&format!("<presence xmlns='jabber:client' id='p{i}' from='u{i}@x/r'/>"));
            assert!(matches!(csi.filter(el, 3), Pass::Held));
        }
        let el = parse("<presence xmlns='jabber:client' id='p3' from='u3@x/r'/>");
        assert_eq!(sent(csi.filter(el, 3)), ["p0", "p1", "p2", "p3"]);
        csi.set_inactive(false);
        let el = parse("<presence xmlns='jabber:client' id='p4' from='u4@x/r'/>");
        assert_eq!(sent(csi.filter(el, 3)), ["p4"], "active sends at once");
    }
}
