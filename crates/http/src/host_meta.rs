//! XEP-0156 §3: where browser clients find the WebSocket and BOSH endpoints,
//! as host-meta XRD (RFC 6415) and its JSON form.

use crate::{cors, AppState};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use starling_xmlstream::escape_attr;

const REL_WEBSOCKET: &str = "urn:xmpp:alt-connections:websocket";
const REL_BOSH: &str = "urn:xmpp:alt-connections:xbosh";

/// `(rel, href)` of both endpoints: from `http.public_url`, else from the
/// request's Host (https when the listener counts as secure).
fn links(state: &AppState, headers: &HeaderMap) -> Option<[(&'static str, String); 2]> {
    let base = match &state.shared.config().public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = headers.get(header::HOST)?.to_str().ok()?;
            // A Host header is a host and port, nothing else.
            if host.is_empty() || host.contains(['/', '?', '#', '@', '\\', ' ']) {
                return None;
            }
            format!("{}://{host}", if state.secure { "https" } else { "http" })
        }
    };
    let ws = base.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
    Some([(REL_WEBSOCKET, format!("{ws}/xmpp-websocket")), (REL_BOSH, format!("{base}/http-bind"))])
}

fn document(state: &AppState, headers: &HeaderMap, content_type: &'static str, body: Option<String>) -> Response {
    let mut response = match body {
        Some(body) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response()
        }
        None => (StatusCode::BAD_REQUEST, "no usable Host header\n").into_response(),
    };
    response.headers_mut().extend(cors(state.shared.config(), headers));
    response
}

pub(crate) async fn xrd(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let body = links(&state, &headers).map(|links| {
        let mut xml = String::from(
            "<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n",
        );
        for (rel, href) in links {
            xml.push_str(&format!("  <Link rel='{rel}' href='{}'/>\n", escape_attr(&href)));
        }
        xml.push_str("</XRD>\n");
        xml
    });
    document(&state, &headers, "application/xrd+xml; charset=utf-8", body)
}

pub(crate) async fn json(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let body = links(&state, &headers).map(|links| {
        let links: Vec<_> = links.iter().map(|(rel, href)| serde_json::json!({ "rel": rel, "href": href })).collect();
        serde_json::json!({ "links": links }).to_string()
    });
    document(&state, &headers, "application/json", body)
}
