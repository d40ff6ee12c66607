//! The two JWT shapes of the NATS auth callout (ADR-26), over `nkeys`: the authorization
//! request a server sends (signed by the server's nkey) and the authorization response lanyard
//! answers with, carrying a user JWT (both signed by the issuer account's nkey).
//!
//! NATS JWTs are JWS compact serialisations with header `{"typ":"JWT","alg":"ed25519-nkey"}`:
//! an ed25519 signature over `header.payload`, base64url without padding. The `jti` is the
//! base32 SHA-256 of the claims, as the NATS tools write it. lanyard signs with aws-lc-rs (a
//! quarter of the time `nkeys`' own signing takes; every CONNECT costs two signatures) and reads
//! keys and verifies with `nkeys`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use nkeys::KeyPair;
use serde::{Deserialize, Serialize};

const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;
/// The `aud` of every authorization request.
const REQUEST_AUDIENCE: &str = "nats-authorization-request";
/// The largest request read: a CONNECT's options with a token, and the server's details.
pub const MAX_REQUEST_LEN: usize = 64 * 1024;

/// Why a request was not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the request is not a JWT")]
    Malformed,
    #[error("the request is larger than {MAX_REQUEST_LEN} bytes")]
    TooLong,
    #[error("the request's signature does not verify with its issuer's key")]
    Signature,
    #[error("the request is not an authorization request")]
    NotARequest,
}

/// The key the callout signs with: an account nkey.
pub struct Issuer {
    public_key: String,
    key: aws_lc_rs::signature::Ed25519KeyPair,
}

impl Issuer {
    /// From an account seed (`SA…`).
    pub fn from_seed(seed: &str) -> Result<Issuer, String> {
        let pair = KeyPair::from_seed(seed).map_err(|e| e.to_string())?;
        let (_, raw) = nkeys::decode_seed(seed).map_err(|e| e.to_string())?;
        let key = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&raw)
            .map_err(|e| e.to_string())?;
        Ok(Issuer {
            public_key: pair.public_key(),
            key,
        })
    }

    /// The public key (`A…`): the cluster's `auth_callout.issuer`.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }
}

/// An authorization request, as far as lanyard reads it.
#[derive(Debug, Deserialize)]
pub struct AuthorizationRequest {
    /// The server that asks (a server nkey, `N…`).
    pub iss: String,
    pub aud: String,
    /// When the server stops waiting for the answer (Unix time).
    #[serde(default)]
    pub exp: Option<i64>,
    pub nats: RequestBody,
}

#[derive(Debug, Deserialize)]
pub struct RequestBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub server_id: ServerId,
    /// The nkey the server made for the connection: the subject of the user JWT.
    pub user_nkey: String,
    pub client_info: ClientInfo,
    pub connect_opts: ConnectOpts,
}

#[derive(Debug, Deserialize)]
pub struct ServerId {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct ClientInfo {
    /// `mqtt` for an MQTT connection, `nats` for a NATS one.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub mqtt_id: String,
}

/// The CONNECT's options. The password: never logged (nor its copy in `auth_token`, which
/// lanyard does not read).
#[derive(Deserialize)]
pub struct ConnectOpts {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub pass: String,
}

impl std::fmt::Debug for ConnectOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOpts")
            .field("user", &self.user)
            .field("pass", &"<redacted>")
            .finish()
    }
}

/// Reads and verifies a request: signed by the server key it names, meant for the callout.
pub fn read_request(token: &[u8]) -> Result<AuthorizationRequest, RequestError> {
    if token.len() > MAX_REQUEST_LEN {
        return Err(RequestError::TooLong);
    }
    let text = std::str::from_utf8(token).map_err(|_| RequestError::Malformed)?;
    let mut parts = text.trim().split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed);
    };
    let header: serde_json::Value = B64
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(RequestError::Malformed)?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("ed25519-nkey") {
        return Err(RequestError::Malformed);
    }
    let claims = B64.decode(payload).map_err(|_| RequestError::Malformed)?;
    let signature = B64.decode(signature).map_err(|_| RequestError::Malformed)?;
    let request: AuthorizationRequest =
        serde_json::from_slice(&claims).map_err(|_| RequestError::NotARequest)?;
    if request.aud != REQUEST_AUDIENCE || request.nats.kind != "authorization_request" {
        return Err(RequestError::NotARequest);
    }
    // The issuer must be a server key, and the signature its own.
    if !request.iss.starts_with('N') {
        return Err(RequestError::Signature);
    }
    let server = KeyPair::from_public_key(&request.iss).map_err(|_| RequestError::Signature)?;
    let signed = &text.trim()[..header_len(text.trim())];
    server
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| RequestError::Signature)?;
    Ok(request)
}

/// The length of `header.payload` in a compact JWS.
fn header_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

/// What a user may publish and subscribe to (NATS subjects).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Permission {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// The user lanyard admits.
#[derive(Debug, Clone)]
pub struct User {
    /// The NATS account the connection is placed in.
    pub account: String,
    /// Shown by CONNZ as `authorized_user`: how the enforcer finds the connection again.
    pub name: String,
    /// Unix time the connection ends (the token's `exp`).
    pub expires: i64,
    /// The largest message the connection may publish.
    pub max_payload: i64,
    pub publish: Permission,
    pub subscribe: Permission,
}

#[derive(Serialize)]
struct UserBody<'a> {
    #[serde(rename = "pub")]
    publish: &'a Permission,
    #[serde(rename = "sub")]
    subscribe: &'a Permission,
    payload: i64,
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
}

#[derive(Serialize)]
struct ResponseBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    jwt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
}

#[derive(Serialize)]
struct Claims<'a, T: Serialize> {
    #[serde(skip_serializing_if = "str::is_empty")]
    jti: String,
    iat: i64,
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    nats: T,
}

/// The answer to `request`: a user JWT for `user`, or the refusal `Err(reason)`, signed by the
/// issuer. The server passes no reason to the client (MQTT: CONNACK 0x05); it logs it.
pub fn response(
    issuer: &Issuer,
    request: &AuthorizationRequest,
    user: Result<&User, &str>,
    now: i64,
) -> String {
    let issuer_key = issuer.public_key();
    let user_jwt = user.ok().map(|user| {
        sign(
            issuer,
            Claims {
                jti: String::new(),
                iat: now,
                iss: issuer_key,
                sub: &request.nats.user_nkey,
                aud: &user.account,
                name: Some(&user.name),
                exp: Some(user.expires),
                nats: UserBody {
                    publish: &user.publish,
                    subscribe: &user.subscribe,
                    payload: user.max_payload,
                    kind: "user",
                    version: 2,
                },
            },
        )
    });
    sign(
        issuer,
        Claims {
            jti: String::new(),
            iat: now,
            iss: issuer_key,
            sub: &request.nats.user_nkey,
            aud: &request.nats.server_id.id,
            name: None,
            exp: None,
            nats: ResponseBody {
                jwt: user_jwt.as_deref(),
                error: user.err(),
                kind: "authorization_response",
                version: 2,
            },
        },
    )
}

/// Signs claims, their `jti` the base32 SHA-256 of the claims without it.
fn sign<T: Serialize>(issuer: &Issuer, mut claims: Claims<'_, T>) -> String {
    let unnamed = serde_json::to_vec(&claims).expect("claims serialise");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &unnamed);
    claims.jti = base32(digest.as_ref());
    let payload = serde_json::to_vec(&claims).expect("claims serialise");
    let input = format!("{}.{}", B64.encode(HEADER), B64.encode(payload));
    let signature = issuer.key.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(signature.as_ref()))
}

/// RFC 4648 base32 without padding, as NATS writes a `jti`.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_signed_by(server: &KeyPair, kind: &str) -> String {
        let claims = serde_json::json!({
            "aud": REQUEST_AUDIENCE, "iss": server.public_key(), "iat": 1, "jti": "x",
            "sub": "ACALLOUT",
            "nats": {
                "type": kind, "user_nkey": "UUSER", "version": 2,
                "server_id": {"id": server.public_key(), "name": "n1"},
                "client_info": {"type": "mqtt", "host": "127.0.0.1", "mqtt_id": "dev"},
                "connect_opts": {"user": "dev", "pass": "secret", "auth_token": "secret"},
            }
        });
        let input = format!(
            "{}.{}",
            B64.encode(HEADER),
            B64.encode(serde_json::to_vec(&claims).unwrap())
        );
        let sig = server.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", B64.encode(sig))
    }

    fn decode(jwt: &str) -> serde_json::Value {
        let payload = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap()
    }

    #[test]
    fn a_request_signed_by_its_server_is_read_and_its_password_never_shown() {
        let server = KeyPair::new_server();
        let request =
            read_request(request_signed_by(&server, "authorization_request").as_bytes()).unwrap();
        assert_eq!(request.nats.connect_opts.pass, "secret");
        assert_eq!(request.nats.client_info.kind, "mqtt");
        assert!(!format!("{request:?}").contains("secret"));
    }

    #[test]
    fn requests_that_are_not_from_a_server_or_not_requests_are_refused() {
        let server = KeyPair::new_server();
        let good = request_signed_by(&server, "authorization_request");
        // Another key's signature.
        let (input, _) = good.rsplit_once('.').unwrap();
        let forged = format!(
            "{input}.{}",
            B64.encode(KeyPair::new_server().sign(input.as_bytes()).unwrap())
        );
        assert_eq!(
            read_request(forged.as_bytes()).unwrap_err(),
            RequestError::Signature
        );
        // Signed by an account key, not a server's.
        let account = KeyPair::new_account();
        assert_eq!(
            read_request(request_signed_by(&account, "authorization_request").as_bytes())
                .unwrap_err(),
            RequestError::Signature
        );
        assert_eq!(
            read_request(request_signed_by(&server, "user").as_bytes()).unwrap_err(),
            RequestError::NotARequest
        );
        assert_eq!(read_request(b"a.b").unwrap_err(), RequestError::Malformed);
        let long = vec![b'a'; MAX_REQUEST_LEN + 1];
        assert_eq!(read_request(&long).unwrap_err(), RequestError::TooLong);
    }

    #[test]
    fn the_response_carries_a_user_jwt_for_the_connection_signed_by_the_issuer() {
        let server = KeyPair::new_server();
        let account = KeyPair::new_account();
        let issuer = Issuer::from_seed(&account.seed().unwrap()).unwrap();
        assert_eq!(issuer.public_key(), account.public_key());
        let request =
            read_request(request_signed_by(&server, "authorization_request").as_bytes()).unwrap();
        let user = User {
            account: "acme".into(),
            name: "n".into(),
            expires: 99,
            max_payload: 1024,
            publish: Permission {
                allow: vec!["a.>".into()],
                deny: vec![],
            },
            subscribe: Permission::default(),
        };
        let response = response(&issuer, &request, Ok(&user), 10);
        // Signed by the account key, as nkeys (and NATS) verify it.
        let (input, sig) = response.rsplit_once('.').unwrap();
        account
            .verify(input.as_bytes(), &B64.decode(sig).unwrap())
            .unwrap();
        let claims = decode(&response);
        assert_eq!(claims["aud"], server.public_key());
        assert_eq!(claims["sub"], "UUSER");
        assert_eq!(claims["nats"]["type"], "authorization_response");
        assert_eq!(claims["jti"].as_str().unwrap().len(), 52);
        let user_claims = decode(claims["nats"]["jwt"].as_str().unwrap());
        assert_eq!(user_claims["aud"], "acme");
        assert_eq!(user_claims["exp"], 99);
        assert_eq!(user_claims["iss"], account.public_key());
        assert_eq!(user_claims["nats"]["payload"], 1024);
        let (input, sig) = claims["nats"]["jwt"]
            .as_str()
            .unwrap()
            .rsplit_once('.')
            .unwrap();
        account
            .verify(input.as_bytes(), &B64.decode(sig).unwrap())
            .unwrap();
        assert_eq!(user_claims["nats"]["pub"]["allow"][0], "a.>");
        assert!(user_claims["nats"]["sub"].get("allow").is_none());

        let refusal = decode(&super::response(&issuer, &request, Err("no"), 10));
        assert_eq!(refusal["nats"]["error"], "no");
        assert!(refusal["nats"].get("jwt").is_none());
    }

    #[test]
    fn base32_is_rfc_4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }
}
