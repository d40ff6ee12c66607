//! The claims of lanyard's access tokens (SPEC §3, RFC 9068 profile with `typ: at+jwt`).

use serde::{Deserialize, Serialize};

use super::UnixTime;

/// The `typ` header of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// A user's uuid, or the `client_id` for client-credentials tokens.
    pub sub: String,
    /// The tenant's slug.
    pub aud: String,
    pub client_id: String,
    /// Space-separated scopes.
    pub scope: String,
    pub iat: UnixTime,
    pub nbf: UnixTime,
    pub exp: UnixTime,
    pub jti: String,
    /// The system a system-bound client belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
}
