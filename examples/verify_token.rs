//! A resource server's view: verify a lanyard access token with nothing but the tenant's JWKS.
//!
//! ```sh
//! cargo run --example verify_token -- http://127.0.0.1:8080/t/demo "$TOKEN"
//! ```
//! Fetches `{issuer}/.well-known/jwks.json`, checks the signature (RS256, by `kid`), `typ`
//! (`at+jwt`), `iss`, `aud` (the tenant's slug) and the time claims, then prints the claims or
//! the reason for refusing.

use std::process::ExitCode;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [issuer, token] = args.as_slice() else {
        eprintln!("usage: verify_token ISSUER TOKEN   (ISSUER like http://127.0.0.1:8080/t/demo)");
        return ExitCode::from(2);
    };
    match verify(issuer.trim_end_matches('/'), token.trim()).await {
        Ok(claims) => {
            println!(
                "accepted: {}",
                serde_json::to_string_pretty(&claims).unwrap()
            );
            ExitCode::SUCCESS
        }
        Err(reason) => {
            println!("refused: {reason}");
            ExitCode::FAILURE
        }
    }
}

async fn verify(issuer: &str, token: &str) -> Result<Value, String> {
    let audience = issuer
        .rsplit('/')
        .next()
        .ok_or("the issuer ends in /t/{slug}")?;
    let jwks: JwkSet = reqwest::get(format!("{issuer}/.well-known/jwks.json"))
        .await
        .map_err(|e| format!("cannot fetch the JWKS: {e}"))?
        .json()
        .await
        .map_err(|e| format!("the JWKS is not a JWK set: {e}"))?;
    let header = decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
    if header.typ.as_deref() != Some("at+jwt") {
        return Err(format!("typ is {:?}, not at+jwt", header.typ));
    }
    let kid = header.kid.ok_or("the token names no kid")?;
    let jwk = jwks
        .find(&kid)
        .ok_or(format!("key {kid} is not in the tenant's JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key {kid}: {e}"))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.leeway = 0;
    let data = decode::<Value>(token, &key, &validation).map_err(|e| e.to_string())?;
    Ok(data.claims)
}
