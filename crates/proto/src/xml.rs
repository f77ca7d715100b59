//! Small conveniences over minidom's attribute API, which wants validated
//! `NcName`s; our attribute names are all literals, so invalid ones are bugs.

use minidom::rxml::{Namespace, NcName};
use minidom::{Element, Node};

fn ncname(name: &str) -> NcName {
    NcName::try_from(name).expect("attribute names in the server are valid NCNames")
}

/// Sets (or replaces) an unnamespaced attribute.
pub fn set_attr(el: &mut Element, name: &str, value: impl Into<String>) {
    el.attrs_mut().insert(Namespace::NONE, ncname(name), value.into());
}

/// Removes an unnamespaced attribute.
pub fn remove_attr(el: &mut Element, name: &str) {
    el.attrs_mut().remove(&Namespace::NONE, name);
}

/// Moves `el` and its descendants in namespace `from` to namespace `to`,
/// keeping attributes, text and other namespaces' elements: stanzas change
/// content namespace between streams (XEP-0114's `jabber:component:accept`
/// and `jabber:client`), and so do their `<body/>` or `<error/>` children.
pub fn move_namespace(mut el: Element, from: &str, to: &str) -> Element {
    if el.ns() != from {
        return el;
    }
    let mut moved = Element::bare(el.name(), to);
    *moved.attrs_mut() = std::mem::take(el.attrs_mut());
    for node in el.take_nodes() {
        match node {
            Node::Element(child) => {
                moved.append_child(move_namespace(child, from, to));
            }
            Node::Text(text) => moved.append_text_node(text),
        }
    }
    moved
}

/// `<name xmlns=ns>text</name>`.
pub fn text_element(name: &str, ns: &str, text: impl Into<String>) -> Element {
    let mut el = Element::bare(name, ns);
    el.append_text_node(text.into());
    el
}

/// Builds an element with unnamespaced attributes in one call.
pub fn element(name: &str, ns: &str, attrs: &[(&str, &str)]) -> Element {
    let mut el = Element::bare(name, ns);
    for (k, v) in attrs {
        set_attr(&mut el, k, *v);
    }
    el
}

/// RFC 6120 §4.9: `<stream:error>` with its condition and optional text.
pub fn stream_error(condition: &str, text: Option<&str>) -> Element {
    let mut error = Element::bare("error", crate::ns::STREAMS);
    error.append_child(Element::bare(condition, crate::ns::STREAM_ERRORS));
    if let Some(text) = text {
        error.append_child(text_element("text", crate::ns::STREAM_ERRORS, text));
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_namespace_moves_only_that_namespace() {
        let el: Element = "<message xmlns='jabber:component:accept' to='a@b' type='chat'><body>hi &amp; bye</body>\
                           <x xmlns='urn:example'><body>kept</body></x></message>"
            .parse()
            .unwrap();
        let moved = move_namespace(el, "jabber:component:accept", "jabber:client");
        assert!(moved.is("message", "jabber:client"));
        assert_eq!((moved.attr("to"), moved.attr("type")), (Some("a@b"), Some("chat")));
        assert_eq!(moved.get_child("body", "jabber:client").map(Element::text).as_deref(), Some("hi & bye"));
        let foreign = moved.get_child("x", "urn:example").unwrap();
        assert!(foreign.has_child("body", "urn:example"), "children of other namespaces are not touched");
    }
}
