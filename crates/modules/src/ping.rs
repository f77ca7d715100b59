//! XEP-0199: XMPP Ping — the server answers pings addressed to it.

use serde::Deserialize;
use starling_core::module::IqTarget;
use starling_core::{Module, ModuleContext, ModuleError};
use starling_proto::{ns, IqType};

pub struct Ping;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingConfig {}

impl Module for Ping {
    const NAME: &'static str = "ping";
    type Config = PingConfig;

    fn load(_: PingConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        ctx.add_feature(ns::PING);
        // XEP-0199 §4.2 (client-to-server ping): an empty result.
        ctx.handle_iq(IqTarget::Host, IqType::Get, ns::PING, |_| async { Ok(None) });
        Ok(Ping)
    }
}
