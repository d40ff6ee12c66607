//! OAuth 2.0 error codes (RFC 6749 §5.2, RFC 7009 §2.2.1) as one type all doors map once.

use std::fmt;

use super::Internal;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    UnsupportedTokenType,
    /// RFC 8693 §2.2.2 (RFC 8707 §2): the requested audience is not one this server issues
    /// for, or not one the subject may have.
    InvalidTarget,
    /// RFC 6750 §3.1: the bearer token is not good (answered with 401).
    InvalidToken,
    /// Not an RFC 6749 code: the tenant in the path does not exist (answered with 404).
    NotFound,
    /// Too many failed client authentications (answered with 429).
    TooManyRequests,
    ServerError,
}

impl OAuthErrorCode {
    /// Every code, in the order declared.
    pub const ALL: [OAuthErrorCode; 12] = [
        OAuthErrorCode::InvalidRequest,
        OAuthErrorCode::InvalidClient,
        OAuthErrorCode::InvalidGrant,
        OAuthErrorCode::UnauthorizedClient,
        OAuthErrorCode::UnsupportedGrantType,
        OAuthErrorCode::InvalidScope,
        OAuthErrorCode::UnsupportedTokenType,
        OAuthErrorCode::InvalidTarget,
        OAuthErrorCode::InvalidToken,
        OAuthErrorCode::NotFound,
        OAuthErrorCode::TooManyRequests,
        OAuthErrorCode::ServerError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::InvalidGrant => "invalid_grant",
            OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
            OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorCode::InvalidScope => "invalid_scope",
            OAuthErrorCode::UnsupportedTokenType => "unsupported_token_type",
            OAuthErrorCode::InvalidTarget => "invalid_target",
            OAuthErrorCode::InvalidToken => "invalid_token",
            OAuthErrorCode::NotFound => "not_found",
            OAuthErrorCode::TooManyRequests => "too_many_requests",
            OAuthErrorCode::ServerError => "server_error",
        }
    }
}

/// An error answered to an OAuth client: a code and a description safe to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: OAuthErrorCode,
    pub description: String,
    /// Seconds after which a rate-limited caller may retry.
    pub retry_after: Option<u64>,
    /// For `server_error`: what went wrong, for the door to log; never sent.
    pub internal: Option<Internal>,
}

impl OAuthError {
    pub fn new(code: OAuthErrorCode, description: impl Into<String>) -> Self {
        OAuthError {
            code,
            description: description.into(),
            retry_after: None,
            internal: None,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidRequest, description)
    }

    /// The one answer for an unknown client and a wrong secret, so they cannot be told apart.
    pub fn invalid_client() -> Self {
        Self::new(
            OAuthErrorCode::InvalidClient,
            "client authentication failed",
        )
    }

    pub fn unknown_tenant() -> Self {
        Self::new(OAuthErrorCode::NotFound, "no such tenant")
    }

    /// `server_error`, carrying its cause to the door that logs it.
    pub fn server_error(cause: Internal) -> Self {
        let mut e = Self::new(
            OAuthErrorCode::ServerError,
            "the server could not complete the request; try again later",
        );
        e.internal = Some(cause);
        e
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.description)
    }
}

impl std::error::Error for OAuthError {}
