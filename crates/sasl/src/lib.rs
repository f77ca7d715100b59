//! Server-side SASL for Starling (RFC 6120 §6, RFC 4422).
//!
//! Everything here is a plain, sans-IO state machine: the caller decodes the
//! base64 payloads of `<auth/>`/`<response/>`, feeds them to a
//! [`ServerSession`], and acts on the returned [`Step`]. Credential lookups
//! are requested through the `Step` rather than via callbacks so the caller
//! is free to do them asynchronously against its storage.
//!
//! Supported mechanisms: SCRAM-SHA-1/256/512 (with and without `-PLUS`
//! channel binding, RFC 5802 / RFC 7677) and PLAIN (RFC 4616).

mod creds;
pub mod ht;
mod plain;
mod scram;

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

pub use creds::ScramCredentials;

/// Hash function underlying a SCRAM mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlg {
    /// All supported hashes, strongest first.
    pub const ALL: [HashAlg; 3] = [HashAlg::Sha512, HashAlg::Sha256, HashAlg::Sha1];

    /// The hash name as used in SCRAM mechanism names.
    pub fn name(&self) -> &'static str {
        match self {
            HashAlg::Sha1 => "SHA-1",
            HashAlg::Sha256 => "SHA-256",
            HashAlg::Sha512 => "SHA-512",
        }
    }

    /// Digest size in bytes (also the size of StoredKey/ServerKey/proofs).
    pub fn output_len(&self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha512 => 64,
        }
    }
}

/// A SASL mechanism this crate can run on the server side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    ScramSha1,
    ScramSha1Plus,
    ScramSha256,
    ScramSha256Plus,
    ScramSha512,
    ScramSha512Plus,
    Plain,
}

impl Mechanism {
    /// All mechanisms, strongest first (the order to advertise them in).
    pub const ALL: [Mechanism; 7] = [
        Mechanism::ScramSha512Plus,
        Mechanism::ScramSha512,
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// The IANA-registered mechanism name.
    pub fn name(&self) -> &'static str {
        match self {
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::ScramSha512Plus => "SCRAM-SHA-512-PLUS",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// Parses a mechanism name as sent in `<auth mechanism='...'/>`.
    ///
    /// Matching is exact: registered SASL names are upper-case and clients
    /// echo what we advertised.
    pub fn from_name(s: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == s)
    }

    /// The SCRAM hash, or `None` for PLAIN.
    pub fn hash(&self) -> Option<HashAlg> {
        match self {
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => Some(HashAlg::Sha1),
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => Some(HashAlg::Sha256),
            Mechanism::ScramSha512 | Mechanism::ScramSha512Plus => Some(HashAlg::Sha512),
            Mechanism::Plain => None,
        }
    }

    /// Whether this is a channel-binding (`-PLUS`) variant.
    pub fn is_plus(&self) -> bool {
        matches!(self, Mechanism::ScramSha1Plus | Mechanism::ScramSha256Plus | Mechanism::ScramSha512Plus)
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Channel-binding types we understand (RFC 9266, RFC 5929).
///
/// `tls-unique` is deliberately absent: it is unsound on TLS 1.3 and broken
/// by the triple-handshake attack on TLS 1.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelBindingType {
    TlsExporter,
    TlsServerEndPoint,
}

impl ChannelBindingType {
    pub fn name(&self) -> &'static str {
        match self {
            ChannelBindingType::TlsExporter => "tls-exporter",
            ChannelBindingType::TlsServerEndPoint => "tls-server-end-point",
        }
    }

    pub fn from_name(s: &str) -> Option<ChannelBindingType> {
        match s {
            "tls-exporter" => Some(ChannelBindingType::TlsExporter),
            "tls-server-end-point" => Some(ChannelBindingType::TlsServerEndPoint),
            _ => None,
        }
    }
}

/// What the connection can offer: the channel-binding data per type,
/// computed by the transport (empty list when not on TLS).
#[derive(Clone, Debug, Default)]
pub struct ChannelBindings {
    pub available: Vec<(ChannelBindingType, Vec<u8>)>,
}

impl ChannelBindings {
    /// No channel binding (plain TCP, or TLS without exportable bindings).
    pub fn none() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.available.is_empty()
    }

    /// The binding data for `ty`, if the transport provided it.
    pub fn get(&self, ty: ChannelBindingType) -> Option<&[u8]> {
        self.available.iter().find(|(t, _)| *t == ty).map(|(_, d)| d.as_slice())
    }
}

/// RFC 6120 §6.5 failure conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Failure {
    #[error("aborted")]
    Aborted,
    #[error("account-disabled")]
    AccountDisabled,
    #[error("credentials-expired")]
    CredentialsExpired,
    #[error("encryption-required")]
    EncryptionRequired,
    #[error("incorrect-encoding")]
    IncorrectEncoding,
    #[error("invalid-authzid")]
    InvalidAuthzid,
    #[error("invalid-mechanism")]
    InvalidMechanism,
    #[error("malformed-request")]
    MalformedRequest,
    #[error("mechanism-too-weak")]
    MechanismTooWeak,
    #[error("not-authorized")]
    NotAuthorized,
    #[error("temporary-auth-failure")]
    TemporaryAuthFailure,
}

impl Failure {
    /// Element name of the condition in `urn:ietf:params:xml:ns:xmpp-sasl`.
    pub fn condition(&self) -> &'static str {
        match self {
            Failure::Aborted => "aborted",
            Failure::AccountDisabled => "account-disabled",
            Failure::CredentialsExpired => "credentials-expired",
            Failure::EncryptionRequired => "encryption-required",
            Failure::IncorrectEncoding => "incorrect-encoding",
            Failure::InvalidAuthzid => "invalid-authzid",
            Failure::InvalidMechanism => "invalid-mechanism",
            Failure::MalformedRequest => "malformed-request",
            Failure::MechanismTooWeak => "mechanism-too-weak",
            Failure::NotAuthorized => "not-authorized",
            Failure::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

/// Errors from credential derivation (not protocol failures).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("password is not valid under SASLprep")]
    InvalidPassword,
    #[error("iteration count must be at least 1")]
    InvalidIterations,
}

/// What the caller must do next.
#[derive(Clone, PartialEq, Eq)]
pub enum Step {
    /// Send `<challenge/>` with this data.
    Challenge(Vec<u8>),
    /// The mechanism needs stored SCRAM credentials of `username` for its
    /// hash; call [`ServerSession::credentials`].
    NeedCredentials { username: String },
    /// PLAIN: the caller must look up and verify the password
    /// ([`ScramCredentials::verify_password`]) then call
    /// [`ServerSession::plain_verified`].
    NeedPasswordCheck { username: String, password: String },
    /// Authentication succeeded; send `<success/>` with `additional_data`
    /// (SCRAM server-final `v=...`; empty for PLAIN).
    Success { username: String, authzid: Option<String>, additional_data: Vec<u8> },
}

// Hand-written so a stray `{:?}` in a log line never leaks a PLAIN password.
impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Challenge(d) => f.debug_tuple("Challenge").field(d).finish(),
            Step::NeedCredentials { username } => {
                f.debug_struct("NeedCredentials").field("username", username).finish()
            }
            Step::NeedPasswordCheck { username, .. } => f
                .debug_struct("NeedPasswordCheck")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Step::Success { username, authzid, additional_data } => f
                .debug_struct("Success")
                .field("username", username)
                .field("authzid", authzid)
                .field("additional_data", additional_data)
                .finish(),
        }
    }
}

/// Decodes the text content of `<auth/>` or `<response/>`.
///
/// A lone `=` is the RFC 6120 §6.4.2 encoding of an empty response; an empty
/// string (no content) also yields an empty slice. Anything that is not
/// canonical base64 is `IncorrectEncoding`.
pub fn decode_base64(s: &str) -> Result<Vec<u8>, Failure> {
    if s.is_empty() || s == "=" {
        return Ok(Vec::new());
    }
    BASE64.decode(s).map_err(|_| Failure::IncorrectEncoding)
}

/// Encodes challenge/success data for the wire; empty data becomes `=` so it
/// is distinguishable from "no data" (RFC 6120 §6.4.2/§6.4.6).
pub fn encode_base64(data: &[u8]) -> String {
    if data.is_empty() {
        "=".to_owned()
    } else {
        BASE64.encode(data)
    }
}

enum Inner {
    // Boxed: the SCRAM state is much larger than PLAIN's.
    Scram(Box<scram::ScramServer>),
    Plain(plain::PlainServer),
}

/// One server-side SASL exchange.
pub struct ServerSession {
    mech: Mechanism,
    inner: Inner,
}

impl ServerSession {
    /// `plus_offered` = whether the server advertised any -PLUS mechanism on
    /// this connection (downgrade detection: a client sending gs2 flag "y"
    /// while we offered PLUS must fail with NotAuthorized, RFC 5802 §6).
    pub fn new(mech: Mechanism, bindings: ChannelBindings, plus_offered: bool) -> Self {
        let inner = match mech.hash() {
            Some(hash) => Inner::Scram(Box::new(scram::ScramServer::new(hash, mech.is_plus(), bindings, plus_offered))),
            None => Inner::Plain(plain::PlainServer::new()),
        };
        ServerSession { mech, inner }
    }

    /// XEP-0474 (SCRAM downgrade protection): puts the hash of what the
    /// server advertised on this stream — `mechanisms` and, when XEP-0440
    /// advertised them, `channel_bindings` — into the server-first-message,
    /// so a client detects a MITM that removed some.
    pub fn with_downgrade_protection(mut self, mechanisms: &[&str], channel_bindings: &[ChannelBindingType]) -> Self {
        if let Inner::Scram(s) = &mut self.inner {
            s.set_downgrade_protection(&downgrade_protection_input(mechanisms, channel_bindings));
        }
        self
    }

    /// Uses `secret` to derive the fake salts handed out for unknown users.
    ///
    /// By default a per-process random secret is used, so fake salts are
    /// stable only until restart; a server that wants them stable forever
    /// (like real ones) can pass a persisted secret here.
    pub fn with_fake_salt_secret(mut self, secret: &[u8]) -> Self {
        if let Inner::Scram(s) = &mut self.inner {
            s.set_fake_salt_secret(secret);
        }
        self
    }

    /// Fixes the server nonce suffix so RFC test vectors can be replayed.
    #[cfg(test)]
    pub(crate) fn with_nonce_for_test(mut self, suffix: &str) -> Self {
        if let Inner::Scram(s) = &mut self.inner {
            s.set_nonce_suffix(suffix);
        }
        self
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mech
    }

    /// Feed the client's data (initial response or a `<response/>` payload,
    /// already base64-decoded; empty slice when none).
    pub fn step(&mut self, input: &[u8]) -> Result<Step, Failure> {
        match &mut self.inner {
            Inner::Scram(s) => s.step(input),
            Inner::Plain(p) => p.step(input),
        }
    }

    /// Answer to [`Step::NeedCredentials`]: `None` when the user does not
    /// exist. The exchange then continues with a fake challenge and fails
    /// with `NotAuthorized` only at the end, so user existence is not
    /// revealed.
    ///
    /// Calling this when no credentials were requested is a caller bug and
    /// yields `TemporaryAuthFailure`.
    pub fn credentials(&mut self, creds: Option<ScramCredentials>) -> Result<Step, Failure> {
        match &mut self.inner {
            Inner::Scram(s) => s.credentials(creds),
            Inner::Plain(_) => Err(Failure::TemporaryAuthFailure),
        }
    }

    /// Answer to [`Step::NeedPasswordCheck`].
    ///
    /// Calling this when no check was requested is a caller bug and yields
    /// `TemporaryAuthFailure`.
    pub fn plain_verified(&mut self, ok: bool) -> Result<Step, Failure> {
        match &mut self.inner {
            Inner::Plain(p) => p.verified(ok),
            Inner::Scram(_) => Err(Failure::TemporaryAuthFailure),
        }
    }
}

/// XEP-0474 §3.1 steps 1–4: the sorted mechanisms joined by U+001E, then
/// (when channel bindings were advertised) U+001F and the sorted types.
fn downgrade_protection_input(mechanisms: &[&str], channel_bindings: &[ChannelBindingType]) -> String {
    let mut mechanisms = mechanisms.to_vec();
    mechanisms.sort_unstable();
    let mut s = mechanisms.join("\u{1e}");
    if !channel_bindings.is_empty() {
        let mut types: Vec<&str> = channel_bindings.iter().map(ChannelBindingType::name).collect();
        types.sort_unstable();
        s.push('\u{1f}');
        s.push_str(&types.join("\u{1e}"));
    }
    s
}

impl fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSession").field("mech", &self.mech).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
