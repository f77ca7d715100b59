//! Serialisation of stanzas and of the server's stream header.
//!
//! We write XML by hand instead of using minidom's writer: minidom allocates
//! a buffer per item (every attribute and text node) and cannot be told that
//! `xmlns:stream` is already declared, while this is the hot path for every
//! outgoing stanza.

use minidom::{Element, Node};
use rxml::Namespace;

use crate::NS_STREAMS;

/// Serialise an element to bytes for the wire.
///
/// The output is self-contained: the top element always declares its
/// namespace (`xmlns='...'`, even if empty, since on the wire the stream's
/// content namespace would otherwise apply), so it can also be stored or
/// parsed on its own. Elements
/// in the streams namespace use the conventional `stream:` prefix (and
/// redeclare it) because some peers match on the prefixed name.
pub fn to_bytes(el: &Element) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_element(el, &mut out);
    out
}

/// Like [`to_bytes`], but appends to an existing buffer (e.g. a connection's
/// write buffer) to avoid an allocation per stanza.
pub fn write_element(el: &Element, out: &mut Vec<u8>) {
    if el.has_ns(NS_STREAMS) {
        write_streams_top(el, out);
    } else {
        write_node_element(el, None, out);
    }
}

/// Opening tag the server sends (RFC 6120 §4.7), including the XML
/// declaration. Attribute values are escaped.
pub fn stream_header(content_ns: &str, from: &str, to: Option<&str>, id: &str) -> String {
    let mut s = String::with_capacity(200 + content_ns.len() + from.len() + id.len());
    s.push_str("<?xml version='1.0'?><stream:stream xmlns='");
    s.push_str(&escape_attr(content_ns));
    s.push_str("' xmlns:stream='");
    s.push_str(NS_STREAMS);
    s.push_str("' id='");
    s.push_str(&escape_attr(id));
    s.push_str("' from='");
    s.push_str(&escape_attr(from));
    if let Some(to) = to {
        s.push_str("' to='");
        s.push_str(&escape_attr(to));
    }
    s.push_str("' version='1.0' xml:lang='en'>");
    s
}

/// Escape a string for use inside a single- or double-quoted attribute
/// value: `& < > ' "`. Tab, CR and LF become character references too,
/// because attribute-value normalisation would otherwise turn them into
/// spaces; characters XML 1.0 cannot carry become U+FFFD.
pub fn escape_attr(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    escape_into(s, true, &mut out);
    // Escaping only replaces whole characters with ASCII or with U+FFFD.
    String::from_utf8(out).expect("escaping preserves UTF-8")
}

fn write_streams_top(el: &Element, out: &mut Vec<u8>) {
    out.extend_from_slice(b"<stream:");
    out.extend_from_slice(el.name().as_bytes());
    out.extend_from_slice(b" xmlns:stream='");
    out.extend_from_slice(NS_STREAMS.as_bytes());
    out.push(b'\'');
    // We do not know the default namespace in scope here (on the wire it
    // is the stream's content namespace), so children declare their own.
    write_rest(el, None, out);
    if has_nodes(el) {
        out.extend_from_slice(b"</stream:");
        out.extend_from_slice(el.name().as_bytes());
        out.push(b'>');
    }
}

/// Write `el` where `scope_ns` is the default namespace in scope, `None`
/// if unknown (then it is always declared, even if empty).
fn write_node_element(el: &Element, scope_ns: Option<&str>, out: &mut Vec<u8>) {
    out.push(b'<');
    out.extend_from_slice(el.name().as_bytes());
    // `has_ns` compares without allocating; only a namespace change pays
    // for the String copy that `ns()` makes.
    let own_ns;
    let own: &str = match scope_ns {
        Some(scope) if el.has_ns(scope) => scope,
        _ => {
            own_ns = el.ns();
            out.extend_from_slice(b" xmlns='");
            escape_into(&own_ns, true, out);
            out.push(b'\'');
            &own_ns
        }
    };
    write_rest(el, Some(own), out);
    if has_nodes(el) {
        out.extend_from_slice(b"</");
        out.extend_from_slice(el.name().as_bytes());
        out.push(b'>');
    }
}

fn has_nodes(el: &Element) -> bool {
    el.nodes().next().is_some()
}

/// Attributes, end of the start tag and content (not the end tag).
fn write_rest(el: &Element, own_ns: Option<&str>, out: &mut Vec<u8>) {
    // Namespaced attributes (other than xml:) are rare; give each distinct
    // namespace a prefix declared on this element.
    let mut attr_ns: Vec<&Namespace<'static>> = Vec::new();
    for ((ns, name), value) in el.attrs().iter() {
        out.push(b' ');
        if ns.is_none() {
            // Unqualified attribute: no prefix.
        } else if ns.as_str() == rxml::XMLNS_XML {
            out.extend_from_slice(b"xml:");
        } else {
            let idx = match attr_ns.iter().position(|n| *n == ns) {
                Some(i) => i,
                None => {
                    attr_ns.push(ns);
                    let i = attr_ns.len() - 1;
                    out.extend_from_slice(format!("xmlns:ns{i}='").as_bytes());
                    escape_into(ns.as_str(), true, out);
                    out.extend_from_slice(b"' ");
                    i
                }
            };
            out.extend_from_slice(format!("ns{idx}:").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"='");
        escape_into(value, true, out);
        out.push(b'\'');
    }
    if !has_nodes(el) {
        out.extend_from_slice(b"/>");
        return;
    }
    out.push(b'>');
    for node in el.nodes() {
        match node {
            Node::Element(child) => write_node_element(child, own_ns, out),
            Node::Text(text) => escape_into(text, false, out),
        }
    }
}

/// Append `s` escaped as XML character data (or attribute content when
/// `attr`). Copies unescaped runs in bulk; the common case is one memcpy.
fn escape_into(s: &str, attr: bool, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (rep, width): (&[u8], usize) = match b {
            b'&' => (b"&amp;", 1),
            b'<' => (b"&lt;", 1),
            // Always escaped so that "]]>" can never appear in text.
            b'>' => (b"&gt;", 1),
            // CR would be normalised away by the receiving parser.
            b'\r' => (b"&#xD;", 1),
            b'\'' if attr => (b"&apos;", 1),
            b'"' if attr => (b"&quot;", 1),
            b'\t' if attr => (b"&#x9;", 1),
            b'\n' if attr => (b"&#xA;", 1),
            b'\t' | b'\n' => {
                i += 1;
                continue;
            }
            // Other C0 controls are not XML 1.0 characters at all.
            0..=0x1f => ("\u{FFFD}".as_bytes(), 1),
            // U+FFFE and U+FFFF (EF BF BE / EF BF BF) are not XML chars.
            0xef if bytes.get(i + 1) == Some(&0xbf) && matches!(bytes.get(i + 2), Some(0xbe | 0xbf)) => {
                ("\u{FFFD}".as_bytes(), 3)
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(rep);
        i += width;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(el: &mut Element, name: &str, value: &str) {
        el.attrs_mut().insert(Namespace::NONE, name.try_into().unwrap(), value.to_owned());
    }

    #[test]
    fn escape_attr_escapes_markup_and_quotes() {
        assert_eq!(escape_attr(r#"a&b<c>d'e"f"#), "a&amp;b&lt;c&gt;d&apos;e&quot;f");
        assert_eq!(escape_attr("plain ünïcødé"), "plain ünïcødé");
        assert_eq!(escape_attr("\t\n\r"), "&#x9;&#xA;&#xD;");
        assert_eq!(escape_attr("a\u{0}b\u{FFFE}c"), "a\u{FFFD}b\u{FFFD}c");
    }

    #[test]
    fn text_escaping_keeps_whitespace() {
        let mut out = Vec::new();
        escape_into("a\tb\nc\rd]]>'\"", false, &mut out);
        assert_eq!(out, b"a\tb\nc&#xD;d]]&gt;'\"");
    }

    #[test]
    fn stream_header_escapes_values() {
        let h = stream_header("jabber:client", "ex'ample.com", Some("a&b"), "<id>");
        assert_eq!(
            h,
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' id='&lt;id&gt;' \
             from='ex&apos;ample.com' to='a&amp;b' version='1.0' xml:lang='en'>"
        );
        let h = stream_header("jabber:server", "example.com", None, "x");
        assert!(!h.contains(" to="));
    }

    #[test]
    fn serialises_namespaces_minimally() {
        let mut msg = Element::bare("message", "jabber:client");
        set(&mut msg, "to", "a@b");
        let mut body = Element::bare("body", "jabber:client");
        body.append_text_node("hi & <bye>");
        msg.append_child(body);
        let mut x = Element::bare("x", "urn:x");
        x.append_child(Element::bare("y", "urn:x"));
        x.append_child(Element::bare("z", ""));
        msg.append_child(x);
        assert_eq!(
            String::from_utf8(to_bytes(&msg)).unwrap(),
            "<message xmlns='jabber:client' to='a@b'><body>hi &amp; &lt;bye&gt;</body>\
             <x xmlns='urn:x'><y/><z xmlns=''/></x></message>"
        );
    }

    #[test]
    fn serialises_stream_elements_with_prefix() {
        let mut f = Element::bare("features", NS_STREAMS);
        f.append_child(Element::bare("bind", "urn:ietf:params:xml:ns:xmpp-bind"));
        assert_eq!(
            String::from_utf8(to_bytes(&f)).unwrap(),
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>\
             <bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
        );
        let mut f = Element::bare("features", NS_STREAMS);
        f.append_child(Element::bare("x", ""));
        assert_eq!(
            String::from_utf8(to_bytes(&f)).unwrap(),
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>\
             <x xmlns=''/></stream:features>"
        );
        assert_eq!(to_bytes(&Element::bare("x", "")), b"<x xmlns=''/>");
    }

    #[test]
    fn output_parses_back_with_minidom() {
        let mut el = Element::bare("message", "jabber:client");
        el.attrs_mut().insert(Namespace::from(rxml::XMLNS_XML), "lang".try_into().unwrap(), "en".into());
        el.attrs_mut().insert(Namespace::from("urn:a".to_owned()), "one".try_into().unwrap(), "1".into());
        el.attrs_mut().insert(Namespace::from("urn:b".to_owned()), "two".try_into().unwrap(), "2\t'\"".into());
        el.attrs_mut().insert(Namespace::from("urn:a".to_owned()), "three".try_into().unwrap(), "3".into());
        el.append_text_node("text\r\nwith ünïcødé & stuff");
        let bytes = to_bytes(&el);
        let parsed: Element = std::str::from_utf8(&bytes).unwrap().parse().unwrap();
        assert_eq!(parsed, el);

        let mut f = Element::bare("error", NS_STREAMS);
        f.append_child(Element::bare("not-well-formed", "urn:ietf:params:xml:ns:xmpp-streams"));
        let parsed: Element = std::str::from_utf8(&to_bytes(&f)).unwrap().parse().unwrap();
        assert_eq!(parsed, f);
    }
}
