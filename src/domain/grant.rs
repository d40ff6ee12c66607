//! OAuth grant types a client may be allowed to use.

use std::fmt;
use std::str::FromStr;

/// The grant type URN of lanyard's one-time-code sign-in.
pub const OTP_GRANT: &str = "urn:lanyard:params:oauth:grant-type:otp";
/// The grant type URN of token exchange (RFC 8693 §2.1).
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrantType {
    ClientCredentials,
    Otp,
    RefreshToken,
    AuthorizationCode,
    TokenExchange,
}

impl GrantType {
    /// The `grant_type` parameter value (RFC 6749 §4).
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::ClientCredentials => "client_credentials",
            GrantType::Otp => OTP_GRANT,
            GrantType::RefreshToken => "refresh_token",
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::TokenExchange => TOKEN_EXCHANGE_GRANT,
        }
    }

    /// Grant types a client gets when none are named.
    pub fn defaults(public: bool) -> Vec<GrantType> {
        if public {
            vec![
                GrantType::Otp,
                GrantType::RefreshToken,
                GrantType::AuthorizationCode,
            ]
        } else {
            vec![GrantType::ClientCredentials]
        }
    }

    /// Space-separated, as stored.
    pub fn join(grants: &[GrantType]) -> String {
        grants
            .iter()
            .map(|g| g.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The space-separated stored form; unknown names are skipped.
    pub fn split(stored: &str) -> Vec<GrantType> {
        stored.split(' ').filter_map(|g| g.parse().ok()).collect()
    }
}

impl fmt::Display for GrantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown grant type {0:?}")]
pub struct UnknownGrantType(pub String);

impl FromStr for GrantType {
    type Err = UnknownGrantType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "client_credentials" => Ok(GrantType::ClientCredentials),
            OTP_GRANT => Ok(GrantType::Otp),
            "refresh_token" => Ok(GrantType::RefreshToken),
            "authorization_code" => Ok(GrantType::AuthorizationCode),
            TOKEN_EXCHANGE_GRANT => Ok(GrantType::TokenExchange),
            other => Err(UnknownGrantType(other.chars().take(80).collect())),
        }
    }
}
