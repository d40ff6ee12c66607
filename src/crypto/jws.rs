//! Compact JWS (RFC 7515) with RS256 only: signing with a held key, and a strict verifier.
//!
//! The verifier is deliberately narrow, because every other choice is an attack surface:
//! `alg` must be `RS256` (so `none` and HMAC-with-the-public-key are refused before any key is
//! touched), the key is found by `kid` among keys the caller supplies (never from the token: a
//! `jku`, `jwk`, `x5u` or `x5c` header is refused, as is any `crit`), and the three parts must be
//! canonical base64url without padding. Claims are returned as bytes for the caller to parse and
//! check; time, issuer and audience rules live with the caller.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Map, Value};

use super::rsa::{SigningKey, VerifyingKey};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Header members that would let a token choose its own key or impose extensions.
const FORBIDDEN_HEADERS: &[&str] = &["jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "crit"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("the token is not a compact JWS")]
    Malformed,
    #[error("the token is too long")]
    TooLong,
    #[error("the token's algorithm is not RS256")]
    Algorithm,
    #[error("the token's header carries a key reference or extension that is not accepted")]
    ForbiddenHeader,
    #[error("the token's kid is missing or unknown")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    Signature,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'a str,
    kid: &'a str,
}

/// Signs `claims` as a compact JWS `{"alg":"RS256","typ":typ,"kid":kid}`.
pub fn sign<C: Serialize>(key: &SigningKey, kid: &str, typ: &str, claims: &C) -> String {
    let header = serde_json::to_vec(&Header {
        alg: "RS256",
        typ,
        kid,
    })
    .expect("a header always serialises");
    let payload = serde_json::to_vec(claims).expect("claims always serialise");
    let mut token = String::with_capacity(
        (header.len() + payload.len()) * 4 / 3 + 350, // + the 256-byte signature in base64
    );
    URL_SAFE_NO_PAD.encode_string(header, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let sig = key.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(sig, &mut token);
    token
}

/// A JWS whose signature verified with one of the supplied keys.
#[derive(Debug)]
pub struct VerifiedJws {
    pub kid: String,
    pub typ: Option<String>,
    /// The raw JSON of the payload; the caller parses and checks the claims.
    pub payload: Vec<u8>,
}

/// Verifies a compact JWS with the key `find_key` returns for its `kid`.
pub fn verify<'k>(
    token: &str,
    find_key: impl FnOnce(&str) -> Option<&'k VerifyingKey>,
) -> Result<VerifiedJws, JwsError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwsError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed);
    };
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h64)
        .map_err(|_| JwsError::Malformed)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&header_bytes).map_err(|_| JwsError::Malformed)?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(JwsError::Algorithm);
    }
    if FORBIDDEN_HEADERS.iter().any(|h| header.contains_key(*h)) {
        return Err(JwsError::ForbiddenHeader);
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(JwsError::UnknownKey)?;
    let typ = match header.get("typ") {
        None => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(JwsError::Malformed),
    };
    let key = find_key(kid).ok_or(JwsError::UnknownKey)?;
    let sig = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| JwsError::Malformed)?;
    let signing_input = &token[..h64.len() + 1 + p64.len()];
    if !key.verify(signing_input.as_bytes(), &sig) {
        return Err(JwsError::Signature);
    }
    let payload = URL_SAFE_NO_PAD
        .decode(p64)
        .map_err(|_| JwsError::Malformed)?;
    Ok(VerifiedJws {
        kid: kid.to_owned(),
        typ,
        payload,
    })
}

/// A string claim read from a JWS *without verifying it*: only for choosing which keys to
/// verify it with. Never trust the value for anything else.
pub fn unverified_string_claim(token: &str, name: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let p64 = token.split('.').nth(1)?;
    let payload = URL_SAFE_NO_PAD.decode(p64).ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&payload).ok()?;
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> (SigningKey, VerifyingKey) {
        let key = SigningKey::generate().unwrap();
        let (n, e) = key.public_components();
        let public = VerifyingKey::from_components("k1", &n, &e).unwrap();
        (key, public)
    }

    fn forge(header: Value, claims: Value, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    #[test]
    fn verifies_what_it_signed_and_nothing_else() {
        let (private, public) = key();
        let token = sign(&private, "k1", "at+jwt", &json!({"sub": "a"}));
        let ok = verify(&token, |kid| (kid == "k1").then_some(&public)).unwrap();
        assert_eq!(ok.typ.as_deref(), Some("at+jwt"));
        assert_eq!(ok.payload, br#"{"sub":"a"}"#);

        // A changed payload with the old signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = URL_SAFE_NO_PAD.encode(br#"{"sub":"b"}"#);
        parts[1] = &other;
        let tampered = parts.join(".");
        assert_eq!(
            verify(&tampered, |_| Some(&public)).unwrap_err(),
            JwsError::Signature
        );
    }

    #[test]
    fn refuses_alg_none_hmac_and_key_references() {
        let (private, public) = key();
        let claims = json!({"sub": "a"});
        let none = forge(json!({"alg": "none", "kid": "k1"}), claims.clone(), b"");
        assert_eq!(
            verify(&none, |_| Some(&public)).unwrap_err(),
            JwsError::Algorithm
        );
        let hs = forge(json!({"alg": "HS256", "kid": "k1"}), claims.clone(), b"x");
        assert_eq!(
            verify(&hs, |_| Some(&public)).unwrap_err(),
            JwsError::Algorithm
        );
        for member in ["jku", "jwk", "x5u", "x5c", "crit"] {
            let mut header = json!({"alg": "RS256", "kid": "k1"});
            header[member] = json!("https://evil.example/jwks");
            let h = URL_SAFE_NO_PAD.encode(header.to_string());
            let p = URL_SAFE_NO_PAD.encode(claims.to_string());
            let sig = private.sign(format!("{h}.{p}").as_bytes());
            let t = format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(sig));
            assert_eq!(
                verify(&t, |_| Some(&public)).unwrap_err(),
                JwsError::ForbiddenHeader,
                "{member}"
            );
        }
    }

    #[test]
    fn refuses_unknown_kids_and_garbage() {
        let (private, public) = key();
        let token = sign(&private, "k2", "at+jwt", &json!({}));
        assert_eq!(
            verify(&token, |kid| (kid == "k1").then_some(&public)).unwrap_err(),
            JwsError::UnknownKey
        );
        for garbage in ["", "a", "a.b", "a.b.c.d", "!!.!!.!!", "e30=.e30=.AA=="] {
            assert!(verify(garbage, |_| Some(&public)).is_err(), "{garbage}");
        }
        assert_eq!(
            verify(&"a".repeat(MAX_TOKEN_LEN + 1), |_| Some(&public)).unwrap_err(),
            JwsError::TooLong
        );
    }
}
