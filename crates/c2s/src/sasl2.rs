//! SASL2 (XEP-0388) with its inline features: Bind 2 (XEP-0386) with SM
//! enable, carbons and CSI inline, stream resumption inline (XEP-0198 §6)
//! and FAST tokens (XEP-0484). The SASL exchange itself is the one SASL1
//! uses (`session.rs`); this is what is offered before it and what happens
//! at its success: one round trip from authentication to a bound session.

use crate::bound::Bound;
use crate::framing::{End, Flow, Framing, Sink};
use crate::session::{Conn, Sasl2Done, SaslSuccess};
use crate::{bound, features, sm};
use sha2::{Digest, Sha256};
use starling_core::module::IqTarget;
use starling_core::Server;
use starling_proto::xml::{element, set_attr, text_element};
use starling_proto::{ns, Element, Stanza};
use starling_sasl::ht::{self, HtMechanism};
use starling_sasl::{encode_base64, ChannelBindings, Failure, Mechanism};

/// The `<authentication/>` feature (XEP-0388 §2.1) with its inline
/// features; `None` on a stream where SASL1 would not be offered either.
pub(crate) fn feature(
    server: &Server,
    offered: &[Mechanism],
    bindings: &ChannelBindings,
    secure: bool,
) -> Option<Element> {
    if offered.is_empty() || (!secure && server.config.c2s.require_encryption) {
        return None;
    }
    let mut auth = Element::bare("authentication", ns::SASL2);
    for m in offered {
        auth.append_child(text_element("mechanism", ns::SASL2, m.name()));
    }
    let mut inline = Element::bare("inline", ns::SASL2);
    inline.append_child(sm::feature());
    let mut bind = Element::bare("bind", ns::BIND2);
    let mut bind_inline = Element::bare("inline", ns::BIND2);
    for var in bind2_inline_features(server) {
        bind_inline.append_child(element("feature", ns::BIND2, &[("var", var)]));
    }
    bind.append_child(bind_inline);
    inline.append_child(bind);
    let mut fast = Element::bare("fast", ns::FAST);
    for m in HtMechanism::ALL.into_iter().filter(|m| m.usable(bindings)) {
        fast.append_child(text_element("mechanism", ns::FAST, m.name()));
    }
    inline.append_child(fast);
    auth.append_child(inline);
    Some(auth)
}

/// What a Bind 2 request can enable inline (XEP-0386 §3): stream
/// management and CSI always, carbons when its module is loaded.
fn bind2_inline_features(server: &Server) -> Vec<&'static str> {
    let mut vars = vec![ns::SM, ns::CSI];
    if server.modules.features().contains(&ns::CARBONS) {
        vars.push(ns::CARBONS);
    }
    vars
}

/// XEP-0386 §3.2: a resource from the client's tag and a suffix stable for
/// its installation (the SASL2 user-agent id), random without one.
fn bind2_resource(bare: &str, tag: Option<&str>, user_agent: Option<&str>) -> String {
    let suffix = match user_agent {
        Some(id) => {
            let digest = Sha256::digest(format!("{bare}\0{id}").as_bytes());
            digest[..4].iter().map(|b| format!("{b:02x}")).collect()
        }
        None => crate::random_id()[..8].to_owned(),
    };
    match tag.map(str::trim).filter(|t| !t.is_empty()) {
        Some(tag) => format!("{tag}.{suffix}"),
        None => suffix,
    }
}

/// Collects what stream-level handlers write, to nest it in `<bound/>`.
impl Sink for Vec<Element> {
    fn queue(&mut self, el: &Element) {
        self.push(el.clone());
    }
}

impl<F: Framing> Conn<F> {
    /// A FAST login (XEP-0484 §4.3): the HT proof is checked against the
    /// tokens of the client named by the request's `<user-agent id/>`.
    pub(crate) async fn fast_login(
        &mut self,
        request: &Element,
        mech: HtMechanism,
        initial: &[u8],
        bindings: &ChannelBindings,
    ) -> Result<SaslSuccess, Failure> {
        let client = user_agent_id(request).ok_or(Failure::NotAuthorized)?;
        let fast = request.get_child("fast", ns::FAST);
        let count = fast.and_then(|f| f.attr("count")).and_then(|c| c.parse().ok());
        let invalidate = fast.is_some_and(|f| matches!(f.attr("invalidate"), Some("true" | "1")));
        let initial = ht::parse_initial(initial)?;
        let jid = self.account_jid(&initial.username).ok_or(Failure::NotAuthorized)?;
        let service = self.service.clone();
        let (answer, rotate) = service
            .fast
            .verify(&*service.server.store, jid.domain().as_str(), &client, mech, &initial, bindings, count, invalidate)
            .await?;
        tracing::info!(peer = %self.framing.peer(), %jid, mechanism = mech.name(), "authenticated");
        Ok(SaslSuccess { username: initial.username, additional_data: answer, fast: Some(rotate) })
    }

    /// Sends the SASL2 `<success/>` with the results of the inline features
    /// and the stream features of the authenticated stream (XEP-0388
    /// §2.6.1). Returns the username and, when the request bound or resumed
    /// a session inline, that session.
    pub(crate) async fn sasl2_success(&mut self, done: Sasl2Done) -> Flow<(String, Option<Bound>)> {
        let Sasl2Done { success, request } = done;
        let username = success.username.clone();
        let bare = self.account_jid(&username).expect("authenticated accounts have valid JIDs");
        let mut reply = Element::bare("success", ns::SASL2);
        if !success.additional_data.is_empty() {
            reply.append_child(text_element("additional-data", ns::SASL2, encode_base64(&success.additional_data)));
        }
        let mut inline_results = Vec::new();
        let mut session = None;
        // XEP-0198 §6.2: resumption inline; when it fails, a bind request
        // (if any) is processed instead.
        if let Some(resume) = request.get_child("resume", ns::SM) {
            match self.take_over(&username, resume).await? {
                Ok((bound, resumed)) => {
                    inline_results.push(resumed);
                    session = Some(bound);
                }
                Err(failed) => inline_results.push(failed),
            }
        }
        if session.is_none() {
            if let Some(bind) = request.get_child("bind", ns::BIND2) {
                let (bound, bound_el) = self.bind2(&username, bind, user_agent_id(&request).as_deref()).await;
                match bound {
                    Some(bound) => {
                        inline_results.push(bound_el);
                        session = Some(bound);
                    }
                    None => {
                        // XEP-0386 §3.4: a failed bind fails the whole login
                        // (the SASL2 failure carries the bind error).
                        let mut failure = Element::bare("failure", ns::SASL2);
                        failure.append_child(Element::bare("aborted", ns::SASL));
                        failure.append_child(bound_el);
                        self.framing.queue(&failure);
                        self.framing.flush().await?;
                        return Err(End::error_text("conflict", "resource binding failed"));
                    }
                }
            }
        }
        let identifier = session.as_ref().map_or_else(|| bare.to_string(), |b| b.handle.jid.to_string());
        reply.append_child(text_element("authorization-identifier", ns::SASL2, identifier));
        for el in inline_results {
            reply.append_child(el);
        }
        if let Some(token) = self.fast_token(&request, &bare, &success).await {
            reply.append_child(token);
        }
        self.framing.queue(&reply);
        let features =
            features::post_auth(&self.service.server, bound::stream_features(session.as_ref()), session.is_none());
        self.framing.queue(&features);
        if let Some(bound) = &mut session {
            self.replay(bound);
        }
        self.framing.flush().await?;
        Ok((username, session))
    }

    /// A new FAST token when the client asked for one (`<request-token/>`)
    /// or the one it used is due for rotation (XEP-0484 §4.2, §4.4).
    async fn fast_token(
        &mut self,
        request: &Element,
        bare: &starling_proto::BareJid,
        success: &SaslSuccess,
    ) -> Option<Element> {
        let client = user_agent_id(request)?;
        let requested = request.get_child("request-token", ns::FAST).and_then(|r| r.attr("mechanism"));
        let mech = match (requested.and_then(HtMechanism::from_name), success.fast) {
            (Some(mech), _) => mech,
            // Rotation keeps the mechanism the token was used with.
            (None, Some(true)) => HtMechanism::from_name(request.attr("mechanism")?)?,
            _ => return None,
        };
        let service = self.service.clone();
        let node = bare.node().expect("account JIDs have a node").as_str();
        let issued =
            service.fast.issue(&*service.server.store, bare.domain().as_str(), node, &client, mech).await.ok()?;
        Some(element("token", ns::FAST, &[("expiry", &issued.expiry), ("token", &issued.token)]))
    }

    /// Bind 2 (XEP-0386 §3): binds a resource made from the client's tag,
    /// then enables what the request asks inline. Gives the session and
    /// `<bound/>` with the inline results, or no session and the error.
    async fn bind2(&mut self, username: &str, request: &Element, user_agent: Option<&str>) -> (Option<Bound>, Element) {
        let bare = format!("{username}@{}", self.host.as_deref().expect("host set"));
        let tag = request.get_child("tag", ns::BIND2).map(Element::text);
        let resource = bind2_resource(&bare, tag.as_deref(), user_agent);
        let mut bound = match self.bind(username, Some(resource)) {
            Ok(bound) => bound,
            Err(err) => return (None, err.to_element()),
        };
        tracing::debug!(jid = %bound.handle.jid, "resource bound (Bind 2)");
        let mut results: Vec<Element> = Vec::new();
        let service = self.service.clone();
        for inline in request.children() {
            if inline.is("enable", ns::SM) {
                // Errors of the inline enable go into <bound/> as <failed/>.
                let _ = sm::handle(&mut bound, &service.resumptions, &service.sm, inline.clone(), &mut results);
            } else if inline.is("inactive", ns::CSI) {
                bound.csi.set_inactive(true);
            } else if inline.is("enable", ns::CARBONS) {
                // Carbons stay the carbons module's: the inline request is
                // its IQ, answered here instead of on the stream.
                let mut iq = element("iq", ns::CLIENT, &[("type", "set"), ("id", "bind2-carbons")]);
                set_attr(&mut iq, "from", bound.handle.jid.as_str());
                iq.append_child(inline.clone());
                if let Ok(stanza) = Stanza::from_element(iq, ns::CLIENT) {
                    let _ = service.server.inline_iq(stanza, IqTarget::Host).await;
                }
            }
        }
        let mut bound_el = Element::bare("bound", ns::BIND2);
        for result in results {
            bound_el.append_child(result);
        }
        (Some(bound), bound_el)
    }
}

/// The SASL2 `<user-agent id/>`: the client installation (XEP-0388 §2.3).
fn user_agent_id(request: &Element) -> Option<String> {
    let id = request.get_child("user-agent", ns::SASL2)?.attr("id")?;
    (!id.is_empty() && id.len() <= 128).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind2_resources_are_stable_per_installation() {
        // XEP-0386 §3.2: the same client gets the same resource again.
        let a = bind2_resource("u@h", Some("AwesomeXMPP"), Some("d4565fa7-4d72-4749-b3d3-740edbf87770"));
        assert_eq!(a, bind2_resource("u@h", Some("AwesomeXMPP"), Some("d4565fa7-4d72-4749-b3d3-740edbf87770")));
        assert!(a.starts_with("AwesomeXMPP."), "{a}");
        assert_ne!(a, bind2_resource("v@h", Some("AwesomeXMPP"), Some("d4565fa7-4d72-4749-b3d3-740edbf87770")));
        assert_ne!(bind2_resource("u@h", None, None), bind2_resource("u@h", None, None));
    }
}
