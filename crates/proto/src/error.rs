//! Stanza errors (RFC 6120 §8.3).

use crate::ns;
use minidom::Element;

/// RFC 6120 §8.3.2 error types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// A stanza error: the type, the RFC 6120 §8.3.3 condition element name, an
/// optional human-readable text and an optional application-specific
/// condition (RFC 6120 §8.3.4, e.g. XEP-0191's `<blocked/>`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{condition} ({})", type_.as_str())]
pub struct StanzaError {
    pub type_: ErrorType,
    pub condition: &'static str,
    pub text: Option<String>,
    /// Boxed so that `Result<_, StanzaError>` stays small.
    pub app_condition: Option<Box<Element>>,
}

macro_rules! conditions {
    ($($fn:ident => $type:ident, $cond:literal;)*) => {
        impl StanzaError {
            $(
                #[doc = concat!("`<", $cond, "/>` with its RFC 6120 §8.3.3 default type.")]
                pub fn $fn() -> Self {
                    StanzaError { type_: ErrorType::$type, condition: $cond, text: None, app_condition: None }
                }
            )*
        }
    };
}

conditions! {
    bad_request => Modify, "bad-request";
    conflict => Cancel, "conflict";
    feature_not_implemented => Cancel, "feature-not-implemented";
    forbidden => Auth, "forbidden";
    internal_server_error => Cancel, "internal-server-error";
    item_not_found => Cancel, "item-not-found";
    jid_malformed => Modify, "jid-malformed";
    not_acceptable => Modify, "not-acceptable";
    not_allowed => Cancel, "not-allowed";
    not_authorized => Auth, "not-authorized";
    policy_violation => Modify, "policy-violation";
    recipient_unavailable => Wait, "recipient-unavailable";
    registration_required => Auth, "registration-required";
    remote_server_not_found => Cancel, "remote-server-not-found";
    remote_server_timeout => Wait, "remote-server-timeout";
    resource_constraint => Wait, "resource-constraint";
    service_unavailable => Cancel, "service-unavailable";
    undefined_condition => Cancel, "undefined-condition";
    unexpected_request => Wait, "unexpected-request";
}

impl StanzaError {
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Adds an application-specific condition element (RFC 6120 §8.3.4); it
    /// must be qualified by an application namespace, not the stanzas one.
    pub fn with_app_condition(mut self, condition: Element) -> Self {
        self.app_condition = Some(Box::new(condition));
        self
    }

    /// The `<error/>` child element.
    pub fn to_element(&self) -> Element {
        let mut error = Element::bare("error", ns::CLIENT);
        crate::xml::set_attr(&mut error, "type", self.type_.as_str());
        error.append_child(Element::bare(self.condition, ns::STANZAS));
        if let Some(text) = &self.text {
            let mut t = Element::bare("text", ns::STANZAS);
            t.append_text_node(text.clone());
            error.append_child(t);
        }
        // RFC 6120 §8.3.2: the defined condition, then text, then the
        // application-specific condition.
        if let Some(app) = &self.app_condition {
            error.append_child(app.as_ref().clone());
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_element_has_type_condition_and_text() {
        let el = StanzaError::service_unavailable().with_text("nope").to_element();
        assert_eq!(el.attr("type"), Some("cancel"));
        assert!(el.has_child("service-unavailable", ns::STANZAS));
        assert_eq!(el.get_child("text", ns::STANZAS).unwrap().text(), "nope");
    }

    #[test]
    fn app_condition_follows_the_defined_condition() {
        let blocked = Element::bare("blocked", "urn:xmpp:blocking:errors");
        let el = StanzaError::not_acceptable().with_app_condition(blocked).to_element();
        let names: Vec<_> = el.children().map(|c| (c.name().to_owned(), c.ns())).collect();
        assert_eq!(
            names,
            [
                ("not-acceptable".to_owned(), ns::STANZAS.to_owned()),
                ("blocked".to_owned(), "urn:xmpp:blocking:errors".to_owned())
            ]
        );
    }
}
