//! OAuth grant types a client may be allowed to use.

use std::fmt;
use std::str::FromStr;

/// The grant type URN of lanyard's one-time-code sign-in.
pub const OTP_GRANT: &str = "urn:lanyard:params:oauth:grant-type:otp";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrantType {
    ClientCredentials,
    Otp,
    RefreshToken,
    AuthorizationCode,
}

impl GrantType {
    /// The `grant_type` parameter value (RFC 6749 §4).
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::ClientCredentials => "client_credentials",
            GrantType::Otp => OTP_GRANT,
            GrantType::RefreshToken => "refresh_token",
            GrantType::AuthorizationCode => "authorization_code",
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
            other => Err(UnknownGrantType(other.chars().take(80).collect())),
        }
    }
}
