//! Server Dialback (XEP-0220), the receiving server's side: a peer claims a
//! domain with a key, and we ask that domain's authoritative server (found
//! through DNS or `s2s.hosts`, on a connection of its own) whether the key
//! is one it made for this stream.

use crate::outgoing::{open, Opened};
use crate::stream::{End, NS_DIALBACK};
use crate::S2s;
use starling_proto::xml::element;

/// Whether `originating`'s authoritative server confirms `key` for the
/// stream `stream_id` that it opened to us (`receiving`).
pub(crate) async fn verify(s2s: &S2s, receiving: &str, originating: &str, stream_id: &str, key: &str) -> bool {
    let check = async {
        let Opened { mut stream, .. } = match open(s2s, receiving, originating).await {
            Ok(opened) => opened,
            Err(failure) => {
                tracing::debug!(%originating, error = ?failure.error.text, "dialback: authoritative server not reached");
                if let Some((stream, end)) = failure.stream {
                    stream.close(end, receiving).await;
                }
                return false;
            }
        };
        let mut verify = element("verify", NS_DIALBACK, &[("from", receiving), ("to", originating), ("id", stream_id)]);
        verify.append_text(key.to_owned());
        stream.queue(&verify);
        let mut valid = false;
        if stream.flush().await.is_ok() {
            loop {
                match stream.next_element().await {
                    Ok(el) if el.is("verify", NS_DIALBACK) && el.attr("id") == Some(stream_id) => {
                        valid = el.attr("type") == Some("valid");
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        stream.close(End::Done, receiving).await;
        valid
    };
    tokio::time::timeout(s2s.handshake_timeout(), check).await.unwrap_or(false)
}
