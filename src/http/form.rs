//! Strict parsing of OAuth requests: `application/x-www-form-urlencoded` bodies and client
//! credentials (RFC 6749 §2.3.1, §3.1, §3.2).
//!
//! Stricter than a generic form parser on purpose: a body or a percent-escape that is not UTF-8
//! is refused rather than replaced, a repeated parameter is refused (§3.1: "MUST NOT be included
//! more than once"), and an empty value counts as absent (§3.1).

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::percent_decode_str;

use crate::authority::ClientCredentials;
use crate::crypto::Secret;
use crate::domain::OAuthError;

/// Largest accepted OAuth request body.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// The parameters of a form body.
#[derive(Debug, Default)]
pub struct Form(HashMap<String, String>);

impl Form {
    /// Parses the body of a request after checking its content type and size.
    pub fn from_request(
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Form, OAuthError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let body = body.map_err(|_| {
            OAuthError::invalid_request(format!(
                "the body could not be read or is larger than {MAX_FORM_BYTES} bytes"
            ))
        })?;
        Self::parse(&body)
    }

    pub fn parse(body: &[u8]) -> Result<Form, OAuthError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| OAuthError::invalid_request("the body is not UTF-8"))?;
        let mut params = HashMap::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name)?;
            let value = decode(value)?;
            if params.contains_key(&name) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {} is repeated",
                    printable(&name)
                )));
            }
            params.insert(name, value);
        }
        Ok(Form(params))
    }

    /// The value of `name`; an empty value is treated as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("parameter {name} is missing")))
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, escapes must decode to UTF-8.
pub(super) fn decode(raw: &str) -> Result<String, OAuthError> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| OAuthError::invalid_request("a parameter is not UTF-8 after decoding"))
}

fn printable(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(40).collect()
}

/// The client's credentials from HTTP Basic (`client_secret_basic`) or the body
/// (`client_secret_post`, or `client_id` alone for a public client). Using both methods in one
/// request is refused (RFC 6749 §2.3).
pub fn client_credentials(
    headers: &HeaderMap,
    form: &Form,
    source: SocketAddr,
) -> Result<ClientCredentials, OAuthError> {
    let mut creds = presented_credentials(headers, form)?;
    creds.source = Some(crate::connections::source_key(source.ip()));
    Ok(creds)
}

fn presented_credentials(
    headers: &HeaderMap,
    form: &Form,
) -> Result<ClientCredentials, OAuthError> {
    let basic = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value.to_str().map_err(|_| OAuthError::invalid_client())?;
            match value.split_once(' ') {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => {
                    Some(parse_basic(rest.trim())?)
                }
                _ => return Err(OAuthError::invalid_client()),
            }
        }
    };
    match basic {
        Some(creds) => {
            if form.get("client_secret").is_some() {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method, not both Basic and client_secret",
                ));
            }
            if form
                .get("client_id")
                .is_some_and(|id| id != creds.client_id)
            {
                return Err(OAuthError::invalid_request(
                    "client_id in the body differs from the one in the Authorization header",
                ));
            }
            Ok(creds)
        }
        None => {
            let client_id = form
                .get("client_id")
                .ok_or_else(OAuthError::invalid_client)?;
            Ok(ClientCredentials {
                client_id: client_id.to_owned(),
                secret: form.get("client_secret").map(Secret::new),
                source: None,
            })
        }
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
pub(super) fn parse_basic(encoded: &str) -> Result<ClientCredentials, OAuthError> {
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|_| OAuthError::invalid_client())?;
    let text = String::from_utf8(bytes).map_err(|_| OAuthError::invalid_client())?;
    let (id, secret) = text
        .split_once(':')
        .ok_or_else(OAuthError::invalid_client)?;
    let id = decode(id).map_err(|_| OAuthError::invalid_client())?;
    let secret = decode(secret).map_err(|_| OAuthError::invalid_client())?;
    if id.is_empty() {
        return Err(OAuthError::invalid_client());
    }
    Ok(ClientCredentials {
        client_id: id,
        secret: (!secret.is_empty()).then(|| Secret::new(secret)),
        source: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decodes_and_treats_empty_as_absent() {
        let form = Form::parse(b"grant_type=client_credentials&scope=a+b%3Ac&x=").unwrap();
        assert_eq!(form.get("grant_type"), Some("client_credentials"));
        assert_eq!(form.get("scope"), Some("a b:c"));
        assert_eq!(form.get("x"), None);
    }

    #[test]
    fn refuses_repeats_and_non_utf8() {
        assert!(Form::parse(b"a=1&a=2").is_err());
        assert!(Form::parse(b"a=%FF").is_err());
        assert!(Form::parse(&[b'a', b'=', 0xff]).is_err());
    }
}
