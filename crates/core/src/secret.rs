//! Server secrets kept in the data directory: random keys made at first
//! start and read back after a restart (FAST tokens, upload URL signatures),
//! so what they sign stays valid across restarts and a copy of the database
//! alone reveals nothing.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::io::{ErrorKind, Write};
use std::path::Path;

/// Reads the 32-byte key at `path`, making one (readable by the owner only)
/// if there is none yet.
pub fn load_or_create_key(path: &Path) -> std::io::Result<[u8; 32]> {
    match std::fs::read(path) {
        Ok(bytes) => {
            bytes.try_into().map_err(|_| std::io::Error::other(format!("{}: not a 32-byte key", path.display())))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut key);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(mut file) => file.write_all(&key).map(|()| key),
                // Another task made it first: use that one.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => load_or_create_key(path),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// HMAC-SHA-256 under `key` over `parts`, each ended by a NUL so that
/// ("ab", "c") and ("a", "bc") differ; finish with `finalize` or check with
/// `verify_slice` (constant time).
pub fn mac(key: &[u8; 32], parts: &[&str]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part.as_bytes());
        mac.update(&[0]);
    }
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let first = load_or_create_key(&path).unwrap();
        assert_eq!(load_or_create_key(&path).unwrap(), first);
        std::fs::write(&path, b"short").unwrap();
        assert!(load_or_create_key(&path).is_err(), "a damaged key is an error, not replaced");
    }
}
