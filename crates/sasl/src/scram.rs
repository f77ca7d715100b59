//! SCRAM-* and SCRAM-*-PLUS server (RFC 5802, RFC 7677).

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::{ChannelBindingType, ChannelBindings, Failure, HashAlg, ScramCredentials, Step};

/// Random bytes in the server's half of the nonce.
const SERVER_NONCE_LEN: usize = 24;

/// What the client put in the gs2 header and its first message.
struct ClientFirst {
    /// Raw gs2 header including the trailing comma; echoed back in `c=`.
    gs2_header: String,
    /// The binding type requested with `p=`, if any.
    cb: Option<ChannelBindingType>,
    authzid: Option<String>,
    /// SASLprep'ed, unescaped username.
    username: String,
    /// client-first-message-bare, verbatim, for AuthMessage.
    bare: String,
    nonce: String,
}

enum State {
    Initial,
    /// We answered a missing initial response with an empty challenge.
    SentEmptyChallenge,
    AwaitingCredentials(ClientFirst),
    AwaitingFinal {
        first: ClientFirst,
        server_first: String,
        full_nonce: String,
        creds: ScramCredentials,
        /// False when `creds` are the fake ones for an unknown user.
        real: bool,
    },
    Done,
}

pub(crate) struct ScramServer {
    hash: HashAlg,
    plus: bool,
    bindings: ChannelBindings,
    plus_offered: bool,
    fake_salt_secret: Option<Vec<u8>>,
    nonce_suffix: Option<String>,
    /// XEP-0474 downgrade protection: the advertised mechanisms and
    /// channel-binding types, hashed into server-first.
    downgrade_protection: Option<String>,
    state: State,
}

impl ScramServer {
    pub(crate) fn new(hash: HashAlg, plus: bool, bindings: ChannelBindings, plus_offered: bool) -> Self {
        ScramServer {
            hash,
            plus,
            bindings,
            plus_offered,
            fake_salt_secret: None,
            nonce_suffix: None,
            downgrade_protection: None,
            state: State::Initial,
        }
    }

    /// XEP-0474 §3.1: `advertised` is the string S (mechanisms, then the
    /// channel-binding types); its hash goes into server-first as `h`.
    pub(crate) fn set_downgrade_protection(&mut self, advertised: &str) {
        self.downgrade_protection = Some(BASE64.encode(self.hash.digest(advertised.as_bytes())));
    }

    pub(crate) fn set_fake_salt_secret(&mut self, secret: &[u8]) {
        self.fake_salt_secret = Some(secret.to_vec());
    }

    #[cfg(test)]
    pub(crate) fn set_nonce_suffix(&mut self, suffix: &str) {
        self.nonce_suffix = Some(suffix.to_owned());
    }

    pub(crate) fn step(&mut self, input: &[u8]) -> Result<Step, Failure> {
        // Any error leaves the state at Done, so a failed exchange can't be
        // resumed.
        match std::mem::replace(&mut self.state, State::Done) {
            // No initial response: prompt for one (RFC 6120 §6.4.2).
            State::Initial if input.is_empty() => {
                self.state = State::SentEmptyChallenge;
                Ok(Step::Challenge(Vec::new()))
            }
            State::Initial | State::SentEmptyChallenge => {
                let first = self.parse_client_first(input)?;
                let username = first.username.clone();
                self.state = State::AwaitingCredentials(first);
                Ok(Step::NeedCredentials { username })
            }
            State::AwaitingFinal { first, server_first, full_nonce, creds, real } => {
                self.client_final(input, first, &server_first, &full_nonce, &creds, real)
            }
            // The client can't legitimately speak while we wait on the caller
            // or after the outcome.
            State::AwaitingCredentials(_) | State::Done => Err(Failure::MalformedRequest),
        }
    }

    pub(crate) fn credentials(&mut self, creds: Option<ScramCredentials>) -> Result<Step, Failure> {
        let State::AwaitingCredentials(first) = std::mem::replace(&mut self.state, State::Done) else {
            return Err(Failure::TemporaryAuthFailure);
        };
        let (creds, real) = match creds {
            // Wrong hash or corrupt row: a server-side problem, not the
            // client's fault.
            Some(c) if c.hash != self.hash || !c.is_well_formed() => return Err(Failure::TemporaryAuthFailure),
            Some(c) => (c, true),
            None => (self.fake_credentials(&first.username), false),
        };
        let suffix = self.nonce_suffix.take().unwrap_or_else(|| {
            let mut raw = [0u8; SERVER_NONCE_LEN];
            rand::thread_rng().fill_bytes(&mut raw);
            BASE64.encode(raw)
        });
        let full_nonce = format!("{}{}", first.nonce, suffix);
        let mut server_first = format!("r={},s={},i={}", full_nonce, BASE64.encode(&creds.salt), creds.iterations);
        if let Some(h) = &self.downgrade_protection {
            server_first.push_str(",h=");
            server_first.push_str(h);
        }
        let challenge = server_first.clone().into_bytes();
        self.state = State::AwaitingFinal { first, server_first, full_nonce, creds, real };
        Ok(Step::Challenge(challenge))
    }

    /// Stand-in credentials for an unknown user. The salt is a keyed hash of
    /// the username so repeated probes see a stable salt, like a real
    /// account, without outsiders being able to predict it.
    fn fake_credentials(&self, username: &str) -> ScramCredentials {
        let secret: &[u8] = match &self.fake_salt_secret {
            Some(s) => s,
            None => process_fake_secret(),
        };
        let mut msg = Vec::with_capacity(username.len() + 16);
        msg.extend_from_slice(self.hash.name().as_bytes());
        msg.push(0);
        msg.extend_from_slice(username.as_bytes());
        let mut salt = HashAlg::Sha256.hmac(secret, &msg);
        salt.truncate(ScramCredentials::SALT_LEN);
        // Keys unrelated to any password: the proof check runs as usual (so
        // timing matches a real account) but cannot pass; `real == false`
        // forces failure regardless.
        let stored_key = self.hash.hmac(secret, b"fake stored key");
        let server_key = self.hash.hmac(secret, b"fake server key");
        ScramCredentials {
            hash: self.hash,
            salt,
            iterations: ScramCredentials::DEFAULT_ITERATIONS,
            stored_key,
            server_key,
        }
    }

    fn parse_client_first(&self, input: &[u8]) -> Result<ClientFirst, Failure> {
        let text = std::str::from_utf8(input).map_err(|_| Failure::MalformedRequest)?;
        let (flag, rest) = text.split_once(',').ok_or(Failure::MalformedRequest)?;
        let (authz_part, bare) = rest.split_once(',').ok_or(Failure::MalformedRequest)?;
        let gs2_header = &text[..flag.len() + 1 + authz_part.len() + 1];

        let cb = match flag {
            // A -PLUS mechanism without binding (or vice versa) is a
            // contradiction in the client's own message.
            "n" | "y" if self.plus => return Err(Failure::MalformedRequest),
            "n" => None,
            // "y" = client supports binding but thinks we don't. We did offer
            // it, so someone stripped it: a downgrade (RFC 5802 §6).
            "y" if self.plus_offered => return Err(Failure::NotAuthorized),
            "y" => None,
            _ => {
                let name = flag.strip_prefix("p=").ok_or(Failure::MalformedRequest)?;
                if !is_cb_name(name) || !self.plus {
                    return Err(Failure::MalformedRequest);
                }
                let ty = ChannelBindingType::from_name(name)
                    .filter(|t| self.bindings.get(*t).is_some())
                    .ok_or(Failure::NotAuthorized)?;
                Some(ty)
            }
        };

        let authzid = if authz_part.is_empty() {
            None
        } else {
            let v = authz_part.strip_prefix("a=").ok_or(Failure::MalformedRequest)?;
            Some(unescape_saslname(v)?)
        };

        // Mandatory extensions (m=) are ones we can't honour by definition.
        if bare.starts_with("m=") {
            return Err(Failure::MalformedRequest);
        }
        let mut attrs = bare.split(',');
        let raw_user = attrs.next().and_then(|a| a.strip_prefix("n=")).ok_or(Failure::MalformedRequest)?;
        let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or(Failure::MalformedRequest)?;
        check_extensions(attrs)?;

        let unescaped = unescape_saslname(raw_user)?;
        let username = stringprep::saslprep(&unescaped).map_err(|_| Failure::MalformedRequest)?.into_owned();
        if username.is_empty() {
            return Err(Failure::MalformedRequest);
        }
        if !is_printable(nonce) {
            return Err(Failure::MalformedRequest);
        }

        Ok(ClientFirst {
            gs2_header: gs2_header.to_owned(),
            cb,
            authzid,
            username,
            bare: bare.to_owned(),
            nonce: nonce.to_owned(),
        })
    }

    fn client_final(
        &self,
        input: &[u8],
        first: ClientFirst,
        server_first: &str,
        full_nonce: &str,
        creds: &ScramCredentials,
        real: bool,
    ) -> Result<Step, Failure> {
        let text = std::str::from_utf8(input).map_err(|_| Failure::MalformedRequest)?;
        // The proof is always the last attribute and is excluded from
        // AuthMessage, so split it off first.
        let (without_proof, proof_b64) = text.rsplit_once(",p=").ok_or(Failure::MalformedRequest)?;
        if proof_b64.contains(',') {
            return Err(Failure::MalformedRequest);
        }
        let proof = BASE64.decode(proof_b64).map_err(|_| Failure::MalformedRequest)?;
        let mut attrs = without_proof.split(',');
        let cbind_b64 = attrs.next().and_then(|a| a.strip_prefix("c=")).ok_or(Failure::MalformedRequest)?;
        let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or(Failure::MalformedRequest)?;
        check_extensions(attrs)?;
        let cbind = BASE64.decode(cbind_b64).map_err(|_| Failure::MalformedRequest)?;

        // c= must be the gs2 header we saw plus, for p=, the binding data of
        // *our* end of the connection; a mismatch means a MITM.
        let mut expected = first.gs2_header.as_bytes().to_vec();
        if let Some(ty) = first.cb {
            // Presence was checked when parsing client-first.
            expected.extend_from_slice(self.bindings.get(ty).unwrap_or_default());
        }
        if !bool::from(cbind.ct_eq(&expected)) || nonce != full_nonce {
            return Err(Failure::NotAuthorized);
        }

        let auth_message = format!("{},{},{}", first.bare, server_first, without_proof);
        let client_signature = self.hash.hmac(&creds.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(Failure::NotAuthorized);
        }
        let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(a, b)| a ^ b).collect();
        let proof_ok = self.hash.digest(&client_key).ct_eq(&creds.stored_key);
        if !(bool::from(proof_ok) && real) {
            return Err(Failure::NotAuthorized);
        }

        let server_signature = self.hash.hmac(&creds.server_key, auth_message.as_bytes());
        let mut additional_data = b"v=".to_vec();
        additional_data.extend_from_slice(BASE64.encode(server_signature).as_bytes());
        Ok(Step::Success { username: first.username, authzid: first.authzid, additional_data })
    }
}

fn process_fake_secret() -> &'static [u8] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut s = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut s);
        s
    })
}

/// RFC 5802 `saslname`: `,` and `=` travel as `=2C` and `=3D`; any other
/// use of `=` (or NUL, or emptiness) is malformed.
fn unescape_saslname(s: &str) -> Result<String, Failure> {
    if s.is_empty() || s.contains('\0') {
        return Err(Failure::MalformedRequest);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i + 1..i + 3);
        match esc {
            Some("2C") => out.push(','),
            Some("3D") => out.push('='),
            _ => return Err(Failure::MalformedRequest),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// RFC 5802 `printable`: visible ASCII except `,`.
fn is_printable(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// RFC 5802 `cb-name`: 1*(ALPHA / DIGIT / "." / "-").
fn is_cb_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// Optional extensions are ignored, but must at least be `attr=value`.
fn check_extensions<'a>(attrs: impl Iterator<Item = &'a str>) -> Result<(), Failure> {
    for a in attrs {
        let b = a.as_bytes();
        if b.len() < 3 || !b[0].is_ascii_alphabetic() || b[1] != b'=' {
            return Err(Failure::MalformedRequest);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saslname_unescape() {
        assert_eq!(unescape_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert_eq!(unescape_saslname("=2C").unwrap(), ",");
        assert!(unescape_saslname("").is_err());
        assert!(unescape_saslname("a=").is_err());
        assert!(unescape_saslname("a=2").is_err());
        assert!(unescape_saslname("a=2c").is_err());
        assert!(unescape_saslname("a=41").is_err());
        assert!(unescape_saslname("a\0b").is_err());
        // Multi-byte char right after '=' must not panic on slicing.
        assert!(unescape_saslname("a=é").is_err());
        assert!(unescape_saslname("a=2é").is_err());
    }

    #[test]
    fn printable_and_cb_name() {
        assert!(is_printable("fyko+d2lbbFgONRv9qkxdawL"));
        assert!(!is_printable(""));
        assert!(!is_printable("a b"));
        assert!(!is_printable("aé"));
        assert!(is_cb_name("tls-server-end-point"));
        assert!(!is_cb_name("tls_exporter"));
        assert!(!is_cb_name(""));
    }
}
