//! The core: configuration, hosts, the router and its session registry, and
//! the module system. It routes stanzas without knowing any feature: features
//! plug in through [`module::ModuleContext`].

pub mod config;
pub mod domains;
pub mod module;
pub mod router;
pub mod secret;
pub mod server;

pub use config::Config;
pub use module::{Module, ModuleContext, ModuleError, ModuleRegistry};
pub use router::{Outbound, Router, SessionHandle};
pub use server::Server;
