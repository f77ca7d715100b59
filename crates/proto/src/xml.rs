//! Small conveniences over minidom's attribute API, which wants validated
//! `NcName`s; our attribute names are all literals, so invalid ones are bugs.

use minidom::rxml::{Namespace, NcName};
use minidom::Element;

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
