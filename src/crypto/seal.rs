//! Sealing private keys at rest with AES-256-GCM under a key-encryption key (KEK).
//!
//! A sealed blob is `version (1) || nonce (12) || ciphertext || tag (16)`. The key id is the
//! additional authenticated data, so a sealed key copied onto another key's row fails to open.
//!
//! Each key-encryption key has a check value, which the database records (SPEC §14): an
//! HMAC-SHA-256 of a fixed text under the key, so the value tells two keys apart and says
//! nothing of the key itself.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::secret::random_bytes;

const VERSION: u8 = 1;

/// What the check value is computed over.
const CHECK_TEXT: &[u8] = b"lanyard key-encryption key check value, version 1";

pub struct KeyEncryptionKey {
    key: LessSafeKey,
    check: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("a key-encryption key must be 32 bytes, written in base64")]
    BadKek,
    #[error(
        "a sealed private key does not open with this key-encryption key (wrong key, or the data was altered)"
    )]
    Open,
}

impl KeyEncryptionKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::BadKek)?;
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, bytes), CHECK_TEXT);
        Ok(KeyEncryptionKey {
            key: LessSafeKey::new(unbound),
            check: URL_SAFE_NO_PAD.encode(&tag.as_ref()[..16]),
        })
    }

    /// The check value the database records: equal for the same key, different for another.
    pub fn check_value(&self) -> &str {
        &self.check
    }

    /// From its base64 text form (standard alphabet, surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| SealError::BadKek)?;
        if bytes.len() != 32 {
            return Err(SealError::BadKek);
        }
        Self::from_bytes(&bytes)
    }

    /// A new random key and its base64 text form, to be written where it will be found again.
    pub fn generate() -> (Self, String) {
        let bytes = random_bytes::<32>();
        let text = STANDARD.encode(bytes);
        (Self::from_bytes(&bytes).expect("32 bytes"), text)
    }

    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .expect("AES-GCM sealing of a small buffer cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&buf);
        out
    }

    pub fn open(&self, aad: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != VERSION {
            return Err(SealError::Open);
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN])
            .map_err(|_| SealError::Open)?;
        let mut buf = sealed[1 + NONCE_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyEncryptionKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_only_with_the_same_key_and_key_id() {
        let (kek, text) = KeyEncryptionKey::generate();
        let sealed = kek.seal("kid-1", b"private");
        assert_eq!(kek.open("kid-1", &sealed).unwrap(), b"private");
        assert_eq!(kek.open("kid-2", &sealed), Err(SealError::Open));
        let (other, _) = KeyEncryptionKey::generate();
        assert_eq!(other.open("kid-1", &sealed), Err(SealError::Open));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(kek.open("kid-1", &flipped), Err(SealError::Open));
        assert!(KeyEncryptionKey::from_base64(&text).is_ok());
        assert!(KeyEncryptionKey::from_base64("c2hvcnQ=").is_err());
    }

    #[test]
    fn the_check_value_tells_keys_apart_and_not_the_key() {
        let (kek, text) = KeyEncryptionKey::generate();
        let again = KeyEncryptionKey::from_base64(&text).unwrap();
        assert_eq!(kek.check_value(), again.check_value());
        assert_ne!(
            kek.check_value(),
            KeyEncryptionKey::generate().0.check_value()
        );
        assert_eq!(kek.check_value().len(), 22);
        assert!(!text.contains(kek.check_value()));
    }
}
