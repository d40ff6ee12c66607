//! What an offline device trusts, and how it checks each message before believing it (SPEC §10).
//! No network here: the messages come from the broker, a file, or anywhere; the signatures
//! decide.
//!
//! - Trust starts from one key: one the device was given at provisioning, or the tenant's JWKS
//!   as first seen (trust on first use).
//! - A **key schedule** (`jwk-set+jwt`) is believed only when signed by a key the device already
//!   trusts (one that has not left) and not older (`seq`) than the last one believed; its keys
//!   then become the trusted ones. So the device follows every planned rotation whose new key
//!   it saw while PENDING (during `tokens.key_publish_ahead`), whatever channel brings it. After a key is invalidated (compromised), the schedule is signed by a
//!   key the device does not know: it is refused, and trust must be given again out of band.
//! - A **status list** (`statuslist+jwt`) is believed only when signed by a trusted key, for
//!   this tenant and this system's list, not expired, and not older than the list held (a
//!   revocation once seen is never forgotten by believing an older list).
//! - A **local API token** is accepted only when signed by a trusted key for this system, in its
//!   time, and its bit in a status list that has not expired is not set; the token list's status
//!   is checked too.
//!   A token without a `status` claim (minted before lists existed) is judged by the token list
//!   alone; one whose index the list does not cover is judged by the token list when it is newer
//!   than the list, and refused when it is not (the list would cover it).

use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A key the device trusts, as a key schedule lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrustedKey {
    pub kid: String,
    pub n: String,
    pub e: String,
    /// `PENDING`, `ACTIVE` or `RETIRED`; `GIVEN` for a key given to the device.
    pub status: String,
    /// When it leaves: it vouches for nothing after.
    pub exp: Option<i64>,
}

/// Everything the device believes about its tenant's keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trust {
    pub issuer: String,
    /// The `seq` of the last key schedule believed.
    pub seq: Option<i64>,
    pub keys: Vec<TrustedKey>,
}

/// A status list the device believed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusList {
    pub uri: String,
    pub iat: i64,
    pub exp: i64,
    /// The bit array, index 0 in the lowest bit of byte 0.
    pub bits: Vec<u8>,
}

impl StatusList {
    /// Whether index `idx` is set; `None` when the list does not cover it.
    pub fn is_set(&self, idx: u64) -> Option<bool> {
        let byte = self.bits.get(usize::try_from(idx / 8).ok()?)?;
        Some(byte >> (idx % 8) & 1 == 1)
    }
}

fn rsa_key(jwk: &Value) -> Result<TrustedKey, String> {
    if jwk["kty"] != "RSA" {
        return Err("only RSA keys are trusted".into());
    }
    let text = |name: &str| {
        jwk[name]
            .as_str()
            .map(str::to_owned)
            .ok_or(format!("a key without {name}"))
    };
    Ok(TrustedKey {
        kid: text("kid")?,
        n: text("n")?,
        e: text("e")?,
        status: jwk["status"].as_str().unwrap_or("GIVEN").to_owned(),
        exp: jwk["exp"].as_i64(),
    })
}

impl Trust {
    /// Trust in one key, given to the device (a JWK).
    pub fn from_key(issuer: &str, jwk: &Value) -> Result<Trust, String> {
        Ok(Trust {
            issuer: issuer.to_owned(),
            seq: None,
            keys: vec![rsa_key(jwk)?],
        })
    }

    /// Trust in the keys of the first JWKS the device sees.
    pub fn from_jwks(issuer: &str, jwks: &Value) -> Result<Trust, String> {
        let keys = jwks["keys"]
            .as_array()
            .ok_or("a JWKS without keys")?
            .iter()
            .map(rsa_key)
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("a JWKS without keys".into());
        }
        Ok(Trust {
            issuer: issuer.to_owned(),
            seq: None,
            keys,
        })
    }

    /// The trusted key that signed `jwt`, if it is one and has not left by `now`, and the
    /// verified claims; `typ` must be the header's.
    fn verify(&self, jwt: &str, typ: &str, now: i64) -> Result<Value, String> {
        let header = decode_header(jwt).map_err(|e| format!("malformed: {e}"))?;
        if header.alg != Algorithm::RS256 {
            return Err(format!("signed with {:?}, not RS256", header.alg));
        }
        if header.typ.as_deref() != Some(typ) {
            return Err(format!("typ is {:?}, not {typ}", header.typ));
        }
        let kid = header.kid.ok_or("no kid in the header")?;
        let key = self.keys.iter().find(|k| k.kid == kid).ok_or(format!(
            "signed by key {kid}, which this device does not trust"
        ))?;
        if key.exp.is_some_and(|exp| exp <= now) {
            return Err(format!("signed by key {kid}, which left at {:?}", key.exp));
        }
        let decoding = DecodingKey::from_rsa_components(&key.n, &key.e)
            .map_err(|e| format!("key {kid}: {e}"))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["iss"]);
        validation.validate_exp = false;
        validation.validate_aud = false;
        decode::<Value>(jwt, &decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| format!("does not verify: {e}"))
    }

    /// Believes a signed key schedule, or says why not; returns whether the keys changed.
    pub fn accept_schedule(&mut self, jwt: &str, now: i64) -> Result<bool, String> {
        let claims = self
            .verify(jwt, "jwk-set+jwt", now)
            .map_err(|e| format!("key schedule refused: {e}"))?;
        let seq = claims["seq"]
            .as_i64()
            .ok_or("key schedule refused: no seq")?;
        if let Some(last) = self.seq
            && seq < last
        {
            return Err(format!(
                "key schedule refused: seq {seq} goes back (last believed {last})"
            ));
        }
        let keys = claims["keys"]
            .as_array()
            .ok_or("key schedule refused: no keys")?
            .iter()
            .map(rsa_key)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("key schedule refused: {e}"))?;
        let changed = self.seq != Some(seq);
        self.seq = Some(seq);
        self.keys = keys;
        Ok(changed)
    }

    /// Believes a system's status list, or says why not. `held` is the list believed so far: one
    /// signed before it is refused, so a revocation once seen cannot be replayed away.
    pub fn accept_status_list(
        &self,
        jwt: &str,
        uri: &str,
        now: i64,
        held: Option<&StatusList>,
    ) -> Result<StatusList, String> {
        let refused = |why: String| format!("status list refused: {why}");
        let claims = self.verify(jwt, "statuslist+jwt", now).map_err(refused)?;
        if claims["sub"] != uri {
            return Err(refused(format!(
                "it is the list of {}, not {uri}",
                claims["sub"]
            )));
        }
        let exp = claims["exp"]
            .as_i64()
            .ok_or_else(|| refused("no exp".into()))?;
        if exp <= now {
            return Err(refused(format!("it expired at {exp}")));
        }
        let iat = claims["iat"]
            .as_i64()
            .ok_or_else(|| refused("no iat".into()))?;
        if let Some(held) = held.filter(|h| h.uri == uri)
            && iat < held.iat
        {
            return Err(refused(format!(
                "it was signed at {iat}, before the list held (signed at {})",
                held.iat
            )));
        }
        let list = &claims["status_list"];
        if list["bits"] != 1 {
            return Err(refused("not one bit per token".into()));
        }
        let compressed = list["lst"]
            .as_str()
            .and_then(|lst| URL_SAFE_NO_PAD.decode(lst).ok())
            .ok_or_else(|| refused("lst is not base64url".into()))?;
        let mut bits = Vec::new();
        flate2::read::ZlibDecoder::new(&compressed[..])
            .take(1 << 24)
            .read_to_end(&mut bits)
            .map_err(|e| refused(format!("lst is not ZLIB: {e}")))?;
        // Bits are never cleared: a list without one the held list sets is an older one, even
        // when signed in the same second.
        if let Some(held) = held.filter(|h| h.uri == uri) {
            let cleared = held.bits.iter().enumerate().find_map(|(i, &old)| {
                let new = bits.get(i).copied().unwrap_or(0);
                (old & !new != 0).then(|| i * 8 + (old & !new).trailing_zeros() as usize)
            });
            if let Some(idx) = cleared {
                return Err(refused(format!(
                    "it clears bit {idx}, which the list held sets: it is older"
                )));
            }
        }
        Ok(StatusList {
            uri: uri.to_owned(),
            iat,
            exp,
            bits,
        })
    }

    /// Decides whether `presented` (a local API token) opens system `system` at `now`, from
    /// what the device holds: its status list and its token list (entries as SPEC §4).
    pub fn check_token(
        &self,
        presented: &str,
        prefix: &str,
        system: &str,
        status: Option<&StatusList>,
        token_list: &[Value],
        now: i64,
    ) -> Result<Value, String> {
        let jwt = presented
            .strip_prefix(prefix)
            .ok_or(format!("not a local API token (no {prefix} prefix)"))?;
        let claims = self.verify(jwt, "JWT", now)?;
        if claims["aud"] != system {
            return Err(format!("for system {}, not this one", claims["aud"]));
        }
        if claims["nbf"].as_i64().is_some_and(|nbf| nbf > now) {
            return Err("not valid yet".into());
        }
        if claims["exp"].as_i64().is_some_and(|exp| exp <= now) {
            return Err("expired".into());
        }
        let listed = token_list.iter().find(|e| e["uuid"] == claims["jti"]);
        // The signed status list first: it is what a broker cannot forge.
        let reference = &claims["status"]["status_list"];
        if let Some(idx) = reference["idx"].as_u64() {
            let list =
                status.ok_or("no status list for this system: cannot tell if it was revoked")?;
            if list.exp <= now {
                return Err(format!(
                    "the status list expired at {}: cannot tell if it was revoked until a fresh one arrives",
                    list.exp
                ));
            }
            if reference["uri"] != list.uri.as_str() {
                return Err(format!(
                    "its status is in {}, not in this system's list",
                    reference["uri"]
                ));
            }
            match list.is_set(idx) {
                Some(true) => return Err(format!("revoked (bit {idx} of the status list is set)")),
                Some(false) => {}
                // Minted after the list was signed: the token list may know it.
                None if claims["iat"].as_i64().is_some_and(|iat| iat > list.iat)
                    && listed.is_some() => {}
                None => return Err(format!("index {idx} is outside the status list")),
            }
        } else if listed.is_none() {
            // Minted before status lists: the token list alone decides.
            return Err("not on this system's list (unknown here, or expired)".into());
        }
        if let Some(entry) = listed
            && entry["status"] != "ACTIVATED"
        {
            return Err(format!("the token list says {}", entry["status"]));
        }
        Ok(claims)
    }
}
