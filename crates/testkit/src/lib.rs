//! Test kit: runs the real `starling` binary on free loopback ports with a
//! fresh data directory, and a scripted raw-XML client for conversations in
//! the spirit of Prosody's scansion tests (send this, expect that).

mod client;
mod server;

pub use client::XmlClient;
pub use server::{TestServer, TestServerBuilder};
