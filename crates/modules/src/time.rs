//! XEP-0202: Entity Time of the server (UTC, XEP-0082 format).

use serde::Deserialize;
use starling_core::module::IqTarget;
use starling_core::{Module, ModuleContext, ModuleError};
use starling_proto::time::format_utc;
use starling_proto::xml::text_element;
use starling_proto::{ns, Element, IqType};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Time;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeConfig {}

impl Module for Time {
    const NAME: &'static str = "time";
    type Config = TimeConfig;

    fn load(_: TimeConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        ctx.add_feature(ns::TIME);
        ctx.handle_iq(IqTarget::Host, IqType::Get, ns::TIME, |_| async {
            let mut time = Element::bare("time", ns::TIME);
            time.append_child(text_element("tzo", ns::TIME, "+00:00"));
            time.append_child(text_element("utc", ns::TIME, utc_now()));
            Ok(Some(time))
        });
        Ok(Time)
    }
}

/// Now as an XEP-0082 DateTime in UTC, e.g. `2006-12-19T17:58:35.123Z`.
pub fn utc_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format_utc(now.as_secs(), now.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_xep0082_datetime() {
        assert_eq!(format_utc(0, 0), "1970-01-01T00:00:00.000Z");
        // XEP-0202 §4 example instant.
        assert_eq!(format_utc(1_166_551_115, 0), "2006-12-19T17:58:35.000Z");
        assert_eq!(format_utc(951_782_400, 7), "2000-02-29T00:00:00.007Z");
    }
}
