//! The HT ("hashed token") SASL mechanisms that XEP-0484 (FAST) uses to log
//! in with a server-issued token in one round trip
//! (draft-schmaus-kitten-sasl-ht): the client sends
//! `authcid NUL HMAC(token, "Initiator" || cb-data)`, the server answers
//! with `HMAC(token, "Responder" || cb-data)` as additional data.
//! Only the SHA-256 family: HT-SHA-256-NONE, -EXPR (tls-exporter) and -ENDP
//! (tls-server-end-point).

use crate::{ChannelBindingType, ChannelBindings, Failure};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// One HT mechanism: which channel binding it mixes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HtMechanism {
    Sha256None,
    Sha256Expr,
    Sha256Endp,
}

impl HtMechanism {
    pub const ALL: [HtMechanism; 3] = [HtMechanism::Sha256Endp, HtMechanism::Sha256Expr, HtMechanism::Sha256None];

    pub fn name(self) -> &'static str {
        match self {
            HtMechanism::Sha256None => "HT-SHA-256-NONE",
            HtMechanism::Sha256Expr => "HT-SHA-256-EXPR",
            HtMechanism::Sha256Endp => "HT-SHA-256-ENDP",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    fn binding(self) -> Option<ChannelBindingType> {
        match self {
            HtMechanism::Sha256None => None,
            HtMechanism::Sha256Expr => Some(ChannelBindingType::TlsExporter),
            HtMechanism::Sha256Endp => Some(ChannelBindingType::TlsServerEndPoint),
        }
    }

    /// Whether the mechanism can run on a connection with these bindings.
    pub fn usable(self, bindings: &ChannelBindings) -> bool {
        self.binding().is_none_or(|ty| bindings.get(ty).is_some())
    }

    fn mac(self, token: &[u8], label: &[u8], bindings: &ChannelBindings) -> Result<Vec<u8>, Failure> {
        let cb = match self.binding() {
            Some(ty) => bindings.get(ty).ok_or(Failure::EncryptionRequired)?,
            None => &[],
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(token).expect("HMAC takes any key length");
        mac.update(label);
        mac.update(cb);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

/// The client's initial response, split: the username and its proof.
#[derive(Debug)]
pub struct HtInitial {
    pub username: String,
    proof: Vec<u8>,
}

/// Parses `authcid NUL initiator-hashed-token`.
pub fn parse_initial(data: &[u8]) -> Result<HtInitial, Failure> {
    let nul = data.iter().position(|b| *b == 0).ok_or(Failure::MalformedRequest)?;
    let username = std::str::from_utf8(&data[..nul]).map_err(|_| Failure::MalformedRequest)?;
    if username.is_empty() {
        return Err(Failure::MalformedRequest);
    }
    Ok(HtInitial { username: username.to_owned(), proof: data[nul + 1..].to_vec() })
}

impl HtInitial {
    /// Whether the proof was made with `token` on this connection; on
    /// success, the server's answer (the responder hash) is returned.
    pub fn verify(&self, mech: HtMechanism, token: &[u8], bindings: &ChannelBindings) -> Result<Vec<u8>, Failure> {
        let expected = mech.mac(token, b"Initiator", bindings)?;
        if !bool::from(expected.ct_eq(&self.proof)) {
            return Err(Failure::NotAuthorized);
        }
        mech.mac(token, b"Responder", bindings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_proof(token: &[u8], cb: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(token).unwrap();
        mac.update(b"Initiator");
        mac.update(cb);
        mac.finalize().into_bytes().to_vec()
    }

    #[test]
    fn a_token_proof_verifies_and_a_wrong_one_does_not() {
        let bindings = ChannelBindings { available: vec![(ChannelBindingType::TlsExporter, b"exporter".to_vec())] };
        let mut data = b"alice\0".to_vec();
        data.extend(client_proof(b"secret-token", b"exporter"));
        let initial = parse_initial(&data).unwrap();
        assert_eq!(initial.username, "alice");
        let answer = initial.verify(HtMechanism::Sha256Expr, b"secret-token", &bindings).unwrap();
        assert_eq!(answer.len(), 32);
        assert_eq!(initial.verify(HtMechanism::Sha256Expr, b"other-token", &bindings), Err(Failure::NotAuthorized));
        // Bound to tls-exporter: the same proof does not pass unbound.
        assert_eq!(initial.verify(HtMechanism::Sha256None, b"secret-token", &bindings), Err(Failure::NotAuthorized));
        assert!(!HtMechanism::Sha256Endp.usable(&bindings));
        assert!(parse_initial(b"no-separator").is_err());
    }
}
