//! XEP-0157: Contact Addresses for XMPP Services, as an XEP-0128 form
//! (FORM_TYPE `http://jabber.org/network/serverinfo`) in the server's
//! disco#info answer. The addresses come from `[modules.contact_addresses]`.

use serde::Deserialize;
use starling_core::{Module, ModuleContext, ModuleError};
use starling_proto::xml::{element, text_element};
use starling_proto::{ns, Element};

pub struct ContactAddresses;

/// One list of URIs per XEP-0157 §7.1 field (`mailto:`, `xmpp:`, `https:`…).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContactAddressesConfig {
    pub abuse: Vec<String>,
    pub admin: Vec<String>,
    pub feedback: Vec<String>,
    pub sales: Vec<String>,
    pub security: Vec<String>,
    pub status: Vec<String>,
    pub support: Vec<String>,
}

impl Module for ContactAddresses {
    const NAME: &'static str = "contact_addresses";
    type Config = ContactAddressesConfig;

    fn load(config: ContactAddressesConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        if let Some(form) = serverinfo_form(&config)? {
            ctx.add_disco_extension(form);
        }
        Ok(ContactAddresses)
    }
}

/// The form, or `None` when no address is configured (nothing to tell).
fn serverinfo_form(config: &ContactAddressesConfig) -> Result<Option<Element>, ModuleError> {
    let fields = [
        ("abuse", "abuse-addresses", &config.abuse),
        ("admin", "admin-addresses", &config.admin),
        ("feedback", "feedback-addresses", &config.feedback),
        ("sales", "sales-addresses", &config.sales),
        ("security", "security-addresses", &config.security),
        ("status", "status-addresses", &config.status),
        ("support", "support-addresses", &config.support),
    ];
    if fields.iter().all(|(_, _, addresses)| addresses.is_empty()) {
        return Ok(None);
    }
    // XEP-0128 §2 / XEP-0068: a result form with a hidden FORM_TYPE.
    let mut form = element("x", ns::DATA_FORMS, &[("type", "result")]);
    let mut form_type = element("field", ns::DATA_FORMS, &[("var", "FORM_TYPE"), ("type", "hidden")]);
    form_type.append_child(text_element("value", ns::DATA_FORMS, ns::SERVERINFO));
    form.append_child(form_type);
    for (key, var, addresses) in fields {
        if addresses.is_empty() {
            continue;
        }
        let mut field = element("field", ns::DATA_FORMS, &[("var", var)]);
        for address in addresses {
            // §3: values are URIs (MUST for status, SHOULD for the others);
            // a bare address is almost surely a missing `mailto:`/`xmpp:`.
            if !is_uri(address) {
                return Err(ModuleError::Config {
                    module: ContactAddresses::NAME.into(),
                    message: format!("{key}: {address:?} is not a URI (mailto:…, xmpp:…, https://…)"),
                });
            }
            field.append_child(text_element("value", ns::DATA_FORMS, address.as_str()));
        }
        form.append_child(field);
    }
    Ok(Some(form))
}

/// RFC 3986 §3: a scheme (a letter, then letters, digits, `+`, `-`, `.`),
/// a colon and something after it, no whitespace.
fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else { return false };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !s.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_has_form_type_and_only_configured_fields() {
        let config = ContactAddressesConfig {
            abuse: vec!["mailto:abuse@shakespeare.lit".into(), "xmpp:abuse@shakespeare.lit".into()],
            status: vec!["https://status.shakespeare.lit".into()],
            ..Default::default()
        };
        let form = serverinfo_form(&config).unwrap().unwrap();
        let xml = String::from(&form);
        // (minidom writes attributes sorted by name)
        let form_type =
            "<field type='hidden' var='FORM_TYPE'><value>http://jabber.org/network/serverinfo</value></field>";
        assert!(xml.starts_with("<x xmlns='jabber:x:data' type='result'>") && xml.contains(form_type), "{xml}");
        assert!(xml.contains("<field var='abuse-addresses'><value>mailto:abuse@shakespeare.lit</value><value>xmpp:abuse@shakespeare.lit</value></field>"), "{xml}");
        assert!(xml.contains("status-addresses") && !xml.contains("sales-addresses"), "{xml}");
        assert!(serverinfo_form(&ContactAddressesConfig::default()).unwrap().is_none());
    }

    #[test]
    fn addresses_must_be_uris() {
        let config = ContactAddressesConfig { admin: vec!["admin@example.org".into()], ..Default::default() };
        let err = serverinfo_form(&config).unwrap_err().to_string();
        assert!(err.contains("modules.contact_addresses") && err.contains("admin"), "{err}");
        assert!(
            is_uri("xmpp:admins@shakespeare.lit?message") && is_uri("mailto:x@y") && !is_uri(":x") && !is_uri("a b:c")
        );
    }
}
