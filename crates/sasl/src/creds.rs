//! SCRAM key derivation (RFC 5802 §3) and stored credentials.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::{HashAlg, SaslError};

// Monomorphised helpers kept behind `HashAlg` so the state machines can stay
// non-generic.
fn hmac_with<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

impl HashAlg {
    pub(crate) fn digest(&self, data: &[u8]) -> Vec<u8> {
        match self {
            HashAlg::Sha1 => Sha1::digest(data).to_vec(),
            HashAlg::Sha256 => Sha256::digest(data).to_vec(),
            HashAlg::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    pub(crate) fn hmac(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            HashAlg::Sha1 => hmac_with::<Hmac<Sha1>>(key, data),
            HashAlg::Sha256 => hmac_with::<Hmac<Sha256>>(key, data),
            HashAlg::Sha512 => hmac_with::<Hmac<Sha512>>(key, data),
        }
    }

    /// SCRAM's `Hi()`: PBKDF2 with HMAC-H, output length = digest length.
    pub(crate) fn hi(&self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        match self {
            HashAlg::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
            HashAlg::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out),
            HashAlg::Sha512 => pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out),
        }
        out
    }
}

/// Stored credential for one hash: never the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredentials {
    pub hash: HashAlg,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramCredentials {
    /// RFC 5802/7677 minimum recommended iteration count.
    pub const DEFAULT_ITERATIONS: u32 = 4096;

    /// Length of salts made by [`ScramCredentials::generate`].
    pub const SALT_LEN: usize = 16;

    /// Derives credentials from a password. The password is SASLprep'ed
    /// first so that equivalent Unicode spellings authenticate alike.
    pub fn derive(hash: HashAlg, password: &str, salt: &[u8], iterations: u32) -> Result<Self, SaslError> {
        if iterations == 0 {
            return Err(SaslError::InvalidIterations);
        }
        let prepped = stringprep::saslprep(password).map_err(|_| SaslError::InvalidPassword)?;
        let salted = hash.hi(prepped.as_bytes(), salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        let server_key = hash.hmac(&salted, b"Server Key");
        Ok(ScramCredentials { hash, salt: salt.to_vec(), iterations, stored_key: hash.digest(&client_key), server_key })
    }

    /// Derives credentials with a fresh random 16-byte salt.
    pub fn generate(hash: HashAlg, password: &str, iterations: u32) -> Result<Self, SaslError> {
        let mut salt = [0u8; Self::SALT_LEN];
        rand::thread_rng().fill_bytes(&mut salt);
        Self::derive(hash, password, &salt, iterations)
    }

    /// Checks a plaintext password (for PLAIN) by deriving with the stored
    /// salt/iterations and comparing StoredKey in constant time.
    pub fn verify_password(&self, password: &str) -> bool {
        match Self::derive(self.hash, password, &self.salt, self.iterations) {
            Ok(c) => bool::from(c.stored_key.as_slice().ct_eq(&self.stored_key)),
            Err(_) => false,
        }
    }

    /// Whether key lengths match the hash; guards against corrupt storage
    /// rows before they are used in a comparison.
    pub(crate) fn is_well_formed(&self) -> bool {
        self.iterations > 0
            && self.stored_key.len() == self.hash.output_len()
            && self.server_key.len() == self.hash.output_len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;

    #[test]
    fn derive_matches_rfc5802_keys() {
        // Values from the RFC 5802 §5 exchange (computed from its proof).
        let salt = B64.decode("QSXCR+Q6sek8bf92").unwrap();
        let c = ScramCredentials::derive(HashAlg::Sha1, "pencil", &salt, 4096).unwrap();
        assert_eq!(c.stored_key.len(), 20);
        assert_eq!(c.server_key.len(), 20);
        assert_eq!(B64.encode(&c.stored_key), "6dlGYMOdZcOPutkcNY8U2g7vK9Y=");
        assert_eq!(B64.encode(&c.server_key), "D+CSWLOshSulAsxiupA+qs2/fTE=");
    }

    #[test]
    fn verify_password_true_false() {
        for h in HashAlg::ALL {
            let c = ScramCredentials::generate(h, "correct horse", 64).unwrap();
            assert_eq!(c.salt.len(), 16);
            assert!(c.verify_password("correct horse"));
            assert!(!c.verify_password("correct horse "));
            assert!(!c.verify_password(""));
        }
    }

    #[test]
    fn saslprep_applied_to_password() {
        // U+00A0 NO-BREAK SPACE maps to U+0020 under SASLprep.
        let c = ScramCredentials::derive(HashAlg::Sha256, "a\u{a0}b", b"salt", 16).unwrap();
        assert!(c.verify_password("a b"));
        // U+00AD SOFT HYPHEN is mapped to nothing.
        assert!(c.verify_password("a\u{ad} b"));
    }

    #[test]
    fn derive_rejects_bad_input() {
        assert_eq!(ScramCredentials::derive(HashAlg::Sha1, "x", b"s", 0), Err(SaslError::InvalidIterations));
        // Control characters are prohibited by SASLprep.
        assert_eq!(ScramCredentials::derive(HashAlg::Sha1, "a\u{7}b", b"s", 1), Err(SaslError::InvalidPassword));
        let c = ScramCredentials::derive(HashAlg::Sha1, "x", b"s", 1).unwrap();
        assert!(!c.verify_password("a\u{7}b"));
    }

    #[test]
    fn hash_lengths() {
        for h in HashAlg::ALL {
            assert_eq!(h.digest(b"").len(), h.output_len());
            assert_eq!(h.hmac(b"k", b"d").len(), h.output_len());
        }
    }
}
