//! XEP-0115: Entity Capabilities of the server. The `<c/>` stream feature
//! (§6.3) carries a verification string (§5.1) computed from the server's
//! disco#info answer, so a client that has seen it before can skip the
//! disco#info request. It depends on every loaded module, so it is computed
//! when features are sent and cached until a module is (un)loaded; disco
//! answers the `node#ver` query (§6.2) like a plain disco#info.

use crate::disco::server_info_query;
use base64::Engine;
use serde::Deserialize;
use sha1::{Digest, Sha1};
use starling_core::{Module, ModuleContext, ModuleError};
use starling_proto::minidom::rxml::Namespace;
use starling_proto::xml::element;
use starling_proto::{ns, Element};
use std::sync::{Arc, Mutex};

/// The caps node: where to read about the software (§4).
pub const NODE: &str = "https://starling.im";

pub struct Caps;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapsConfig {}

impl Module for Caps {
    const NAME: &'static str = "caps";
    type Config = CapsConfig;

    fn load(_: CapsConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        // §7: support is advertised as a disco feature.
        ctx.add_feature(ns::CAPS);
        // (registry generation, feature) of the last computation.
        let cache: Arc<Mutex<Option<(u64, Element)>>> = Arc::default();
        ctx.add_stream_feature_with(move |modules| {
            // Read before the disco data: a load in between only makes the
            // entry stale, never wrong for its generation.
            let generation = modules.generation();
            let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((cached, feature)) = cache.as_ref() {
                if *cached == generation {
                    return Some(feature.clone());
                }
            }
            let ver = verification_string(&server_info_query(modules));
            let feature = element("c", ns::CAPS, &[("hash", "sha-1"), ("node", NODE), ("ver", &ver)]);
            *cache = Some((generation, feature.clone()));
            Some(feature)
        });
        Ok(Caps)
    }
}

/// Whether `node` is the `NODE#ver` of the disco#info `info` (§6.2), for an
/// `info` that advertises caps.
pub fn is_current_node(info: &Element, node: &str) -> bool {
    let advertised = info.children().any(|f| f.is("feature", ns::DISCO_INFO) && f.attr("var") == Some(ns::CAPS));
    advertised && node.strip_prefix(NODE).and_then(|n| n.strip_prefix('#')) == Some(verification_string(info).as_str())
}

/// XEP-0115 §5.1 with SHA-1: the verification string of a disco#info
/// `<query/>`. Sorting is by bytes ("i;octet").
pub fn verification_string(info: &Element) -> String {
    let mut s = String::new();
    let mut identities: Vec<[&str; 4]> = info
        .children()
        .filter(|c| c.is("identity", ns::DISCO_INFO))
        .map(|i| {
            let attr = |name: &'static str| i.attr(name).unwrap_or("");
            let lang = i.attr_ns(&Namespace::XML, "lang").unwrap_or("");
            [attr("category"), attr("type"), lang, attr("name")]
        })
        .collect();
    // By category, type and xml:lang (not by the joined string: '-' < '/').
    identities.sort_unstable();
    for [category, type_, lang, name] in identities {
        s.push_str(&format!("{category}/{type_}/{lang}/{name}<"));
    }
    let mut features: Vec<&str> =
        info.children().filter(|c| c.is("feature", ns::DISCO_INFO)).filter_map(|f| f.attr("var")).collect();
    features.sort_unstable();
    for feature in features {
        s.push_str(feature);
        s.push('<');
    }
    // §5.4: forms without a hidden FORM_TYPE are left out.
    let mut forms: Vec<(String, &Element)> = info
        .children()
        .filter(|c| c.is("x", ns::DATA_FORMS))
        .filter_map(|x| {
            let form_type =
                x.children().find(|f| f.is("field", ns::DATA_FORMS) && f.attr("var") == Some("FORM_TYPE"))?;
            if form_type.attr("type") != Some("hidden") {
                return None;
            }
            Some((values(form_type).into_iter().next().unwrap_or_default(), x))
        })
        .collect();
    forms.sort_by(|a, b| a.0.cmp(&b.0));
    for (form_type, form) in forms {
        s.push_str(&form_type);
        s.push('<');
        let mut fields: Vec<(&str, Vec<String>)> = form
            .children()
            .filter(|f| f.is("field", ns::DATA_FORMS))
            .filter_map(|f| Some((f.attr("var")?, values(f))))
            .filter(|(var, _)| *var != "FORM_TYPE")
            .collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        for (var, mut values) in fields {
            s.push_str(var);
            s.push('<');
            values.sort_unstable();
            for value in values {
                s.push_str(&value);
                s.push('<');
            }
        }
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

fn values(field: &Element) -> Vec<String> {
    field.children().filter(|v| v.is("value", ns::DATA_FORMS)).map(Element::text).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_generation_example() {
        // XEP-0115 §5.2.
        let info: Element = "<query xmlns='http://jabber.org/protocol/disco#info'>\
            <identity category='client' name='Exodus 0.9.1' type='pc'/>\
            <feature var='http://jabber.org/protocol/caps'/>\
            <feature var='http://jabber.org/protocol/disco#info'/>\
            <feature var='http://jabber.org/protocol/disco#items'/>\
            <feature var='http://jabber.org/protocol/muc'/></query>"
            .parse()
            .unwrap();
        assert_eq!(verification_string(&info), "QgayPKawpkPSDYmwT/WM94uAlu0=");
        assert!(is_current_node(&info, "https://starling.im#QgayPKawpkPSDYmwT/WM94uAlu0="));
        assert!(!is_current_node(&info, "https://starling.im#other"));
        assert!(!is_current_node(&info, "http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0="));
    }

    #[test]
    fn complex_generation_example() {
        // XEP-0115 §5.3: identities in two languages and an XEP-0128 form.
        let info: Element = "<query xmlns='http://jabber.org/protocol/disco#info'>\
            <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
            <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>\
            <feature var='http://jabber.org/protocol/caps'/>\
            <feature var='http://jabber.org/protocol/disco#info'/>\
            <feature var='http://jabber.org/protocol/disco#items'/>\
            <feature var='http://jabber.org/protocol/muc'/>\
            <x xmlns='jabber:x:data' type='result'>\
              <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
              <field var='ip_version' type='text-multi'><value>ipv4</value><value>ipv6</value></field>\
              <field var='os'><value>Mac</value></field>\
              <field var='os_version'><value>10.5.1</value></field>\
              <field var='software'><value>Psi</value></field>\
              <field var='software_version'><value>0.11</value></field>\
            </x></query>"
            .parse()
            .unwrap();
        assert_eq!(verification_string(&info), "q07IKJEyjvHSyhy//CH0CxmKi8w=");
    }

    #[test]
    fn forms_without_hidden_form_type_are_ignored() {
        let plain: Element = "<query xmlns='http://jabber.org/protocol/disco#info'>\
            <identity category='server' type='im'/></query>"
            .parse()
            .unwrap();
        let mut with_form = plain.clone();
        with_form.append_child(
            "<x xmlns='jabber:x:data' type='result'><field var='a'><value>b</value></field></x>".parse().unwrap(),
        );
        assert_eq!(verification_string(&plain), verification_string(&with_form));
    }
}
