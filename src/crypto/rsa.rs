//! RSA-2048 key pairs held parsed in memory, and their public halves as JWKs.

use std::fmt;

use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    KeyPair, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair,
    RsaPublicKeyComponents,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use aws_lc_rs::encoding::AsDer;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("RSA key generation failed")]
    Generate,
    #[error("the stored private key is not a valid RSA PKCS#8 key")]
    BadPrivateKey,
    #[error("the stored public key components are not a valid RSA-2048 key")]
    BadPublicKey,
}

/// A parsed RSA private key, ready to sign.
pub struct SigningKey {
    pair: RsaKeyPair,
}

impl SigningKey {
    /// Generates a fresh RSA-2048 key. Takes tens of milliseconds: call it off the async reactor.
    pub fn generate() -> Result<Self, KeyError> {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generate)?;
        Ok(SigningKey { pair })
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        let pair = RsaKeyPair::from_pkcs8(der).map_err(|_| KeyError::BadPrivateKey)?;
        if pair.public_modulus_len() != 256 {
            return Err(KeyError::BadPrivateKey);
        }
        Ok(SigningKey { pair })
    }

    pub fn to_pkcs8(&self) -> Vec<u8> {
        self.pair
            .as_der()
            .map(|der| der.as_ref().to_vec())
            .expect("a generated RSA key always encodes as PKCS#8")
    }

    /// The public modulus and exponent, base64url without padding (the JWK `n` and `e`).
    pub fn public_components(&self) -> (String, String) {
        let public = self.pair.public_key();
        (
            URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        )
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `message` (JWS `RS256`, RFC 7518 §3.3).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                message,
                &mut sig,
            )
            .expect("signing with a valid RSA key into a modulus-sized buffer cannot fail");
        sig
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<private>)")
    }
}

/// A parsed RSA public key with its JWK form.
pub struct VerifyingKey {
    kid: String,
    n: String,
    e: String,
    parsed: ParsedPublicKey,
}

impl VerifyingKey {
    /// From the JWK `n` and `e` (base64url). Only 2048-bit keys are accepted.
    pub fn from_components(kid: &str, n: &str, e: &str) -> Result<Self, KeyError> {
        let n_bytes = URL_SAFE_NO_PAD
            .decode(n)
            .map_err(|_| KeyError::BadPublicKey)?;
        let e_bytes = URL_SAFE_NO_PAD
            .decode(e)
            .map_err(|_| KeyError::BadPublicKey)?;
        if n_bytes.len() != 256 {
            return Err(KeyError::BadPublicKey);
        }
        let parsed = RsaPublicKeyComponents {
            n: n_bytes.as_slice(),
            e: e_bytes.as_slice(),
        }
        .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
        .map_err(|_| KeyError::BadPublicKey)?;
        Ok(VerifyingKey {
            kid: kid.to_owned(),
            n: n.to_owned(),
            e: e.to_owned(),
            parsed,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        self.parsed.verify_sig(message, sig).is_ok()
    }

    /// The public JWK (RFC 7517 §4, RFC 7518 §6.3.1): never a private member.
    pub fn jwk(&self) -> serde_json::Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": self.n,
            "e": self.e,
        })
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_round_trips_and_verifies_its_signatures() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::from_pkcs8(&key.to_pkcs8()).unwrap();
        let (n, e) = again.public_components();
        let public = VerifyingKey::from_components("k1", &n, &e).unwrap();
        let sig = key.sign(b"hello");
        assert!(public.verify(b"hello", &sig));
        assert!(!public.verify(b"hellp", &sig));
        let jwk = public.jwk();
        assert!(jwk.get("d").is_none());
    }

    #[test]
    fn refuses_small_or_garbled_public_keys() {
        assert!(VerifyingKey::from_components("k", "AQAB", "AQAB").is_err());
        assert!(VerifyingKey::from_components("k", "!!", "AQAB").is_err());
    }
}
