//! Feature modules, one file per XEP or RFC section. Each declares what it
//! adds through the core's `ModuleContext`; the server loads them by name.

pub mod blocking;
pub mod caps;
pub mod carbons;
pub mod contact_addresses;
pub mod disco;
pub mod last;
pub mod mam;
pub mod muc;
pub mod offline;
pub mod ping;
pub mod private;
pub mod pubsub;
pub mod push;
pub mod register;
pub mod roster;
mod store;
pub mod time;
pub mod upload;
pub mod vcard;
pub mod version;

use starling_core::{Module, ModuleError, ModuleRegistry};

/// Loads the module called `name` with its `[modules.NAME]` section.
pub fn load(registry: &ModuleRegistry, name: &str, config: Option<toml::Value>) -> Result<(), ModuleError> {
    match name {
        blocking::Blocking::NAME => registry.load::<blocking::Blocking>(config),
        carbons::Carbons::NAME => registry.load::<carbons::Carbons>(config),
        disco::Disco::NAME => registry.load::<disco::Disco>(config),
        offline::Offline::NAME => registry.load::<offline::Offline>(config),
        ping::Ping::NAME => registry.load::<ping::Ping>(config),
        roster::Roster::NAME => registry.load::<roster::Roster>(config),
        time::Time::NAME => registry.load::<time::Time>(config),
        version::Version::NAME => registry.load::<version::Version>(config),
        vcard::VCard::NAME => registry.load::<vcard::VCard>(config),
        private::Private::NAME => registry.load::<private::Private>(config),
        last::Last::NAME => registry.load::<last::Last>(config),
        contact_addresses::ContactAddresses::NAME => registry.load::<contact_addresses::ContactAddresses>(config),
        caps::Caps::NAME => registry.load::<caps::Caps>(config),
        register::Register::NAME => registry.load::<register::Register>(config),
        upload::Upload::NAME => registry.load::<upload::Upload>(config),
        mam::Mam::NAME => registry.load::<mam::Mam>(config),
        push::Push::NAME => registry.load::<push::Push>(config),
        muc::Muc::NAME => registry.load::<muc::Muc>(config),
        pubsub::Pubsub::NAME => registry.load::<pubsub::Pubsub>(config),
        other => Err(ModuleError::Unknown(other.to_owned())),
    }
}
