//! Feature modules, one file per XEP or RFC section. Each declares what it
//! adds through the core's `ModuleContext`; the server loads them by name.

pub mod disco;
pub mod offline;
pub mod ping;
pub mod roster;
pub mod time;
pub mod version;

use starling_core::{Module, ModuleError, ModuleRegistry};

/// Loads the module called `name` with its `[modules.NAME]` section.
pub fn load(registry: &ModuleRegistry, name: &str, config: Option<toml::Value>) -> Result<(), ModuleError> {
    match name {
        disco::Disco::NAME => registry.load::<disco::Disco>(config),
        offline::Offline::NAME => registry.load::<offline::Offline>(config),
        ping::Ping::NAME => registry.load::<ping::Ping>(config),
        roster::Roster::NAME => registry.load::<roster::Roster>(config),
        time::Time::NAME => registry.load::<time::Time>(config),
        version::Version::NAME => registry.load::<version::Version>(config),
        other => Err(ModuleError::Unknown(other.to_owned())),
    }
}
