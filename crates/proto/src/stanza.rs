//! The stanza envelope: kind, addresses, id and type, read once when the
//! stanza arrives; the payload stays a minidom element the router never reads.

use crate::error::StanzaError;
use crate::{ns, xml};
use jid::Jid;
use minidom::Element;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StanzaKind {
    Message,
    Presence,
    Iq,
}

impl StanzaKind {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "message" => Some(Self::Message),
            "presence" => Some(Self::Presence),
            "iq" => Some(Self::Iq),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IqType {
    Get,
    Set,
    Result,
    Error,
}

impl IqType {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "get" => Some(Self::Get),
            "set" => Some(Self::Set),
            "result" => Some(Self::Result),
            "error" => Some(Self::Error),
            _ => None,
        }
    }

    /// Requests must be answered (RFC 6120 §8.2.3).
    pub fn is_request(self) -> bool {
        matches!(self, Self::Get | Self::Set)
    }
}

/// Why a stanza could not be accepted at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a stanza: {0}")]
    NotAStanza(String),
    /// Malformed stanza with enough of an envelope to answer with a stanza
    /// error; the element is handed back for the reply.
    #[error("bad stanza: {0}")]
    Bad(StanzaError, Box<Element>),
}

#[derive(Clone, Debug)]
pub struct Stanza {
    pub kind: StanzaKind,
    pub from: Option<Jid>,
    pub to: Option<Jid>,
    pub id: Option<String>,
    /// The `type` attribute as sent (absent means "normal" for messages and
    /// "available" for presence).
    pub type_: Option<String>,
    pub el: Element,
}

impl Stanza {
    /// Reads the envelope of a top-level element in `content_ns`.
    pub fn from_element(el: Element, content_ns: &str) -> Result<Self, EnvelopeError> {
        let kind = StanzaKind::from_name(el.name())
            .filter(|_| el.ns() == content_ns)
            .ok_or_else(|| EnvelopeError::NotAStanza(format!("{{{}}}{}", el.ns(), el.name())))?;
        let parse_jid = |attr: &str| match el.attr(attr) {
            None => Ok(None),
            Some(s) => Jid::new(s).map(Some).map_err(|e| StanzaError::jid_malformed().with_text(e.to_string())),
        };
        let (to, from) = match (parse_jid("to"), parse_jid("from")) {
            (Ok(to), Ok(from)) => (to, from),
            (Err(e), _) | (_, Err(e)) => return Err(EnvelopeError::Bad(e, Box::new(el))),
        };
        let stanza = Stanza {
            kind,
            from,
            to,
            id: el.attr("id").map(str::to_owned),
            type_: el.attr("type").map(str::to_owned),
            el,
        };
        if kind == StanzaKind::Iq {
            if let Err(text) = stanza.check_iq() {
                let error = StanzaError::bad_request().with_text(text);
                return Err(EnvelopeError::Bad(error, Box::new(stanza.el)));
            }
        }
        Ok(stanza)
    }

    /// RFC 6120 §8.2.3: an IQ has an id and a known type; a request has exactly one payload.
    fn check_iq(&self) -> Result<(), &'static str> {
        if self.id.is_none() {
            return Err("iq without id");
        }
        let Some(t) = self.iq_type() else {
            return Err("iq with missing or unknown type");
        };
        if t.is_request() && self.el.children().count() != 1 {
            return Err("iq request must have exactly one child");
        }
        Ok(())
    }

    pub fn iq_type(&self) -> Option<IqType> {
        self.type_.as_deref().and_then(IqType::from_name)
    }

    /// The single payload of an IQ request.
    pub fn payload(&self) -> Option<&Element> {
        self.el.children().next()
    }

    pub fn is_type(&self, t: &str) -> bool {
        self.type_.as_deref() == Some(t)
    }

    pub fn set_from(&mut self, from: Jid) {
        xml::set_attr(&mut self.el, "from", from.as_str());
        self.from = Some(from);
    }

    pub fn set_to(&mut self, to: Jid) {
        xml::set_attr(&mut self.el, "to", to.as_str());
        self.to = Some(to);
    }

    /// The error reply to this stanza (RFC 6120 §8.3.1): addresses swapped,
    /// type error, original payload kept. `None` for stanzas that must never be
    /// answered with an error (errors themselves, to avoid loops).
    pub fn error_reply(&self, err: &StanzaError) -> Option<Element> {
        if self.is_type("error") {
            return None;
        }
        let mut el = self.el.clone();
        xml::set_attr(&mut el, "type", "error");
        swap_addresses(&mut el, self.from.as_ref(), self.to.as_ref());
        el.append_child(err.to_element());
        Some(el)
    }

    /// An empty IQ result (or with `payload`) to this request.
    pub fn iq_result(&self, payload: Option<Element>) -> Element {
        let mut el = Element::bare("iq", ns::CLIENT);
        xml::set_attr(&mut el, "type", "result");
        if let Some(id) = &self.id {
            xml::set_attr(&mut el, "id", id.as_str());
        }
        swap_addresses(&mut el, self.from.as_ref(), self.to.as_ref());
        if let Some(p) = payload {
            el.append_child(p);
        }
        el
    }
}

/// The error reply to an element that did not parse as a stanza envelope,
/// addressed to `to` (the sender); `None` if it was itself an error.
pub fn error_reply_to_element(mut el: Element, err: &StanzaError, to: &Jid) -> Option<Element> {
    if el.attr("type") == Some("error") {
        return None;
    }
    let from = el.attr("to").and_then(|t| Jid::new(t).ok());
    xml::set_attr(&mut el, "type", "error");
    swap_addresses(&mut el, Some(to), from.as_ref());
    el.append_child(err.to_element());
    Some(el)
}

fn swap_addresses(el: &mut Element, from: Option<&Jid>, to: Option<&Jid>) {
    match from {
        Some(f) => xml::set_attr(el, "to", f.as_str()),
        None => xml::remove_attr(el, "to"),
    }
    match to {
        Some(t) => xml::set_attr(el, "from", t.as_str()),
        None => xml::remove_attr(el, "from"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Element {
        s.parse().unwrap()
    }

    #[test]
    fn reads_envelope() {
        let s = Stanza::from_element(
            parse("<message xmlns='jabber:client' to='juliet@example.com/balcony' id='m1' type='chat'><body>hi</body></message>"),
            ns::CLIENT,
        )
        .unwrap();
        assert_eq!(s.kind, StanzaKind::Message);
        assert_eq!(s.to.as_ref().unwrap().as_str(), "juliet@example.com/balcony");
        assert_eq!(s.id.as_deref(), Some("m1"));
        assert!(s.is_type("chat"));
    }

    #[test]
    fn rfc7622_invalid_address_is_jid_malformed() {
        let err =
            Stanza::from_element(parse("<message xmlns='jabber:client' to='@example.com'/>"), ns::CLIENT).unwrap_err();
        let EnvelopeError::Bad(e, _) = err else { panic!() };
        assert_eq!(e.condition, "jid-malformed");
    }

    #[test]
    fn rfc6120_8_2_3_iq_rules() {
        for bad in [
            "<iq xmlns='jabber:client' type='get'><ping xmlns='urn:xmpp:ping'/></iq>",
            "<iq xmlns='jabber:client' id='a' type='bogus'><ping xmlns='urn:xmpp:ping'/></iq>",
            "<iq xmlns='jabber:client' id='a' type='get'/>",
            "<iq xmlns='jabber:client' id='a' type='set'><a xmlns='x'/><b xmlns='y'/></iq>",
        ] {
            assert!(matches!(Stanza::from_element(parse(bad), ns::CLIENT), Err(EnvelopeError::Bad(..))), "{bad}");
        }
        let ok = "<iq xmlns='jabber:client' id='a' type='result'/>";
        assert!(Stanza::from_element(parse(ok), ns::CLIENT).is_ok());
    }

    #[test]
    fn wrong_namespace_is_not_a_stanza() {
        let r = Stanza::from_element(parse("<message xmlns='jabber:server'/>"), ns::CLIENT);
        assert!(matches!(r, Err(EnvelopeError::NotAStanza(_))));
    }

    #[test]
    fn error_reply_swaps_and_never_answers_errors() {
        let mut s = Stanza::from_element(
            parse("<iq xmlns='jabber:client' id='q' type='get' to='example.com'><x xmlns='urn:unknown'/></iq>"),
            ns::CLIENT,
        )
        .unwrap();
        s.set_from(Jid::new("romeo@example.com/orchard").unwrap());
        let reply = s.error_reply(&StanzaError::service_unavailable()).unwrap();
        assert_eq!(reply.attr("to"), Some("romeo@example.com/orchard"));
        assert_eq!(reply.attr("from"), Some("example.com"));
        assert_eq!(reply.attr("type"), Some("error"));
        let e = Stanza::from_element(reply, ns::CLIENT).unwrap();
        assert!(e.error_reply(&StanzaError::bad_request()).is_none());
    }
}
