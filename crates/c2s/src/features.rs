//! The `<stream:features/>` a client sees at each stage of negotiation.

use starling_core::config::Config;
use starling_core::module::StreamInfo;
use starling_core::Server;
use starling_proto::xml::{element, text_element};
use starling_proto::{ns, Element};
use starling_sasl::{ChannelBindings, Mechanism};

/// SASL mechanisms offered on a stream, strongest first.
pub fn mechanisms(config: &Config, secure: bool, bindings: &ChannelBindings) -> Vec<Mechanism> {
    Mechanism::ALL
        .into_iter()
        .filter(|m| match m {
            // RFC 6120 §13.8: PLAIN only over TLS unless the operator opts out.
            Mechanism::Plain => config.auth.plain && (secure || config.auth.plain_without_tls),
            m if m.is_plus() => !bindings.is_empty(),
            _ => true,
        })
        .collect()
}

fn features() -> Element {
    Element::bare("features", ns::STREAMS)
}

/// XEP-0478: the limits the client must respect.
fn limits(config: &Config) -> Element {
    let mut limits = Element::bare("limits", ns::STREAM_LIMITS);
    limits.append_child(text_element("max-bytes", ns::STREAM_LIMITS, config.limits.max_stanza_bytes.to_string()));
    if config.limits.idle_timeout_secs > 0 {
        limits.append_child(text_element(
            "idle-seconds",
            ns::STREAM_LIMITS,
            config.limits.idle_timeout_secs.to_string(),
        ));
    }
    limits
}

/// Before authentication; what modules offer (XEP-0077's `<register/>`)
/// comes after SASL, and only once TLS is up when it is required.
pub fn pre_auth(server: &Server, stream: &StreamInfo, bindings: &ChannelBindings, can_starttls: bool) -> Element {
    let (config, secure) = (&server.config, stream.secure);
    let mut f = features();
    let must_encrypt = !secure && config.c2s.require_encryption;
    if can_starttls {
        let mut starttls = Element::bare("starttls", ns::TLS);
        if must_encrypt {
            starttls.append_child(Element::bare("required", ns::TLS));
        }
        f.append_child(starttls);
    }
    // RFC 6120 §5.3.1: when TLS is mandatory, offer nothing else before it.
    if must_encrypt {
        return f;
    }
    let mut mechs = Element::bare("mechanisms", ns::SASL);
    for m in mechanisms(config, secure, bindings) {
        mechs.append_child(text_element("mechanism", ns::SASL, m.name()));
    }
    f.append_child(mechs);
    if !bindings.is_empty() {
        // XEP-0440 §3: which channel-binding types the server can do.
        let mut cb = Element::bare("sasl-channel-binding", ns::SASL_CB);
        for (kind, _) in &bindings.available {
            cb.append_child(element("channel-binding", ns::SASL_CB, &[("type", kind.name())]));
        }
        f.append_child(cb);
    }
    for feature in server.modules.pre_auth_features(stream) {
        f.append_child(feature);
    }
    f.append_child(limits(config));
    f
}

/// After SASL success: resource binding (RFC 6120 §7), the legacy session
/// establishment announced as optional (RFC 6121 Appendix E), the
/// stream-level features of the session (stream management, CSI) and what
/// modules add (roster versioning, say).
pub fn post_auth(server: &Server, session_features: impl IntoIterator<Item = Element>) -> Element {
    let mut f = features();
    f.append_child(Element::bare("bind", ns::BIND));
    let mut session = Element::bare("session", ns::SESSION);
    session.append_child(Element::bare("optional", ns::SESSION));
    f.append_child(session);
    for feature in session_features {
        f.append_child(feature);
    }
    for feature in server.modules.stream_features() {
        f.append_child(feature);
    }
    f.append_child(limits(&server.config));
    f
}
