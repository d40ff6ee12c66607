//! Secrets: 256-bit random values shown once, stored as SHA-256 hashes, compared in constant time.
//!
//! Client secrets carry 256 bits of entropy, so a fast hash is right for them: nobody can search
//! that space, and a slow password hash would cap the token endpoint at a few dozen requests a
//! second. Slow hashes are for low-entropy secrets only.

use std::fmt;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

/// A secret value. Its `Debug` is redacted so it never reaches a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// 32 random bytes, base64url without padding (43 characters).
    pub fn generate() -> Self {
        Secret(URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash::of(self.0.as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The SHA-256 of a secret, as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    pub fn of(bytes: &[u8]) -> Self {
        let d = digest::digest(&digest::SHA256, bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        SecretHash(out)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(SecretHash)
    }

    /// Compares in constant time.
    pub fn matches(&self, presented: &Secret) -> bool {
        presented.hash().0.ct_eq(&self.0).into()
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(<redacted>)")
    }
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).expect("the system random number generator failed");
    out
}

/// A random identifier of `bytes` bytes, base64url without padding.
pub fn random_id(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buf).expect("the system random number generator failed");
    URL_SAFE_NO_PAD.encode(buf)
}

/// The PKCE S256 challenge of `verifier` (RFC 7636 §4.2): `BASE64URL(SHA256(verifier))`.
/// A redemption compares it with the stored challenge; knowing the challenge does not give the
/// verifier.
pub fn pkce_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(SecretHash::of(verifier.as_bytes()).0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pkce_s256_is_the_base64url_sha256_of_the_verifier() {
        // Computed independently: base64url(sha256(verifier)) without padding.
        let verifier = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-._~";
        assert_eq!(
            super::pkce_s256(verifier),
            "ZJs5hbMChd-OA_AYtC3UYie0U-g-dEfAPhPlci0hRik"
        );
        assert_ne!(
            super::pkce_s256(&verifier[1..]),
            "ZJs5hbMChd-OA_AYtC3UYie0U-g-dEfAPhPlci0hRik"
        );
    }

    use super::*;

    #[test]
    fn a_hash_matches_only_its_secret() {
        let secret = Secret::generate();
        assert_eq!(secret.expose().len(), 43);
        let hash = secret.hash();
        assert!(hash.matches(&secret));
        assert!(!hash.matches(&Secret::generate()));
        assert!(!format!("{secret:?}").contains(secret.expose()));
    }
}
