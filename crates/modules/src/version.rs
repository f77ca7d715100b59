//! XEP-0092: Software Version of the server.

use serde::Deserialize;
use starling_core::module::IqTarget;
use starling_core::{Module, ModuleContext, ModuleError};
use starling_proto::xml::text_element;
use starling_proto::{ns, Element, IqType};

pub struct Version;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VersionConfig {
    /// Report the operating system (XEP-0092 §2: optional; some operators hide it).
    pub show_os: bool,
}

impl Default for VersionConfig {
    fn default() -> Self {
        VersionConfig { show_os: true }
    }
}

impl Module for Version {
    const NAME: &'static str = "version";
    type Config = VersionConfig;

    fn load(config: VersionConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        ctx.add_feature(ns::VERSION);
        let show_os = config.show_os;
        ctx.handle_iq(IqTarget::Host, IqType::Get, ns::VERSION, move |_| async move {
            let mut query = Element::bare("query", ns::VERSION);
            query.append_child(text_element("name", ns::VERSION, "Starling"));
            query.append_child(text_element("version", ns::VERSION, env!("CARGO_PKG_VERSION")));
            if show_os {
                query.append_child(text_element("os", ns::VERSION, std::env::consts::OS));
            }
            Ok(Some(query))
        });
        Ok(Version)
    }
}
