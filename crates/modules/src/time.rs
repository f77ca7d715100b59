//! XEP-0202: Entity Time of the server (UTC, XEP-0082 format).

use serde::Deserialize;
use starling_core::module::IqTarget;
use starling_core::{Module, ModuleContext, ModuleError};
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

pub(crate) fn format_utc(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// algorithm; a date crate would be a whole dependency for six lines).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
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
