//! Test kit: runs the real `starling` binary on free loopback ports with a
//! fresh data directory, and scripted raw-XML clients (TCP, WebSocket, BOSH)
//! for conversations in the spirit of Prosody's scansion tests (send this,
//! expect that).

mod ca;
mod client;
mod http;
mod server;

pub use ca::{IssuedCert, TestCa};
pub use client::{Script, XmlClient};
pub use http::{attr, bosh_post, http_request, BoshClient, HttpResponse, WsClient, NS_FRAMING, NS_HTTPBIND};
pub use server::{free_port, TestServer, TestServerBuilder};
pub use tokio_tungstenite::tungstenite::Message as WsMessage;
