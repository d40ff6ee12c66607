//! The rules of sign-in on the web (SPEC §9) that need no I/O: which redirect URIs a client may
//! register and when a presented one matches, redirects built on them, and the shapes of PKCE
//! values (RFC 7636).

use std::fmt;

/// The longest redirect URI registered or presented.
pub const MAX_REDIRECT_URI_LEN: usize = 2048;
/// A client registers at most this many redirect URIs (and as many for logout).
pub const MAX_REDIRECT_URIS: usize = 16;

/// Why a redirect URI cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redirect URI {uri:?}: {why}")]
pub struct InvalidRedirectUri {
    pub uri: String,
    pub why: &'static str,
}

/// A redirect URI as registered: `https://…`, `http://` on a loopback host (`127.0.0.1`,
/// `[::1]`, `localhost`), or a private-use scheme with a dot in it (`com.example.app:/cb`,
/// RFC 8252 §7.1). No fragment, no whitespace, no user info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectUri(String);

impl RedirectUri {
    pub fn parse(text: &str) -> Result<RedirectUri, InvalidRedirectUri> {
        let bad = |why| InvalidRedirectUri {
            uri: text.chars().take(80).collect(),
            why,
        };
        if text.is_empty() || text.len() > MAX_REDIRECT_URI_LEN {
            return Err(bad("must be 1 to 2048 characters"));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                "must be ASCII without whitespace or control characters (percent-encode the rest)",
            ));
        }
        if text.contains('#') {
            return Err(bad("must not contain a fragment"));
        }
        let url = url::Url::parse(text).map_err(|_| bad("is not an absolute URI"))?;
        // What is registered is where browsers go: a URI a parser would rewrite (a default
        // port, upper case, `\\` for `/`) could mean another place than it seems to.
        if url.as_str() != text {
            return Err(InvalidRedirectUri {
                uri: text.chars().take(80).collect(),
                why: "is not in its normal form; register it as a URL parser writes it (lower-case host, no default port, a path)",
            });
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not contain user information"));
        }
        match url.scheme() {
            "https" => {
                if url.host().is_none() {
                    return Err(bad("needs a host"));
                }
            }
            "http" => {
                if loopback_authority(text).is_none() {
                    return Err(bad(
                        "http is allowed only on 127.0.0.1, [::1] or localhost; use https",
                    ));
                }
            }
            scheme => {
                // A private-use scheme is a reversed domain name the app owns; the browser's
                // own schemes would run in the page.
                if !scheme.contains('.')
                    || matches!(scheme, "javascript" | "data" | "file" | "blob" | "about")
                {
                    return Err(bad(
                        "use https, a loopback http address, or a private-use scheme like com.example.app",
                    ));
                }
            }
        }
        Ok(RedirectUri(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this registered URI: the exact string, or, when this one is a
    /// loopback `http` URI without a port, the same string with any port (RFC 8252 §7.3).
    pub fn matches(&self, presented: &str) -> bool {
        if self.0 == presented {
            return true;
        }
        let Some(registered) = loopback_authority(&self.0) else {
            return false;
        };
        if registered.port.is_some() {
            return false;
        }
        match loopback_authority(presented) {
            Some(p) => p.port.is_some() && p.host == registered.host && p.rest == registered.rest,
            None => false,
        }
    }
}

impl fmt::Display for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An `http://` URI on a loopback host, split as written (no normalisation: matching is on
/// strings).
struct Loopback<'a> {
    host: &'a str,
    port: Option<&'a str>,
    rest: &'a str,
}

fn loopback_authority(text: &str) -> Option<Loopback<'_>> {
    let after = text.strip_prefix("http://")?;
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let (host, port) = if let Some(v6) = authority.strip_prefix("[::1]") {
        ("[::1]", v6)
    } else if let Some((h, _)) = authority.split_once(':') {
        (h, &authority[h.len()..])
    } else {
        (authority, "")
    };
    if !matches!(host, "127.0.0.1" | "[::1]" | "localhost") {
        return None;
    }
    let port = match port {
        "" => None,
        p => {
            let digits = p.strip_prefix(':')?;
            // A port a URL parser accepts: 1 to 5 digits, at most 65535.
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse::<u16>().ok()?;
            Some(digits)
        }
    };
    Some(Loopback { host, port, rest })
}

/// `uri` (a registered redirect URI, or one it matches) with `params` added to its query.
/// Such a URI always parses; were it not to, it is returned as it is rather than failing.
pub fn redirect_with(uri: &str, params: &[(&str, &str)]) -> String {
    match url::Url::parse(uri) {
        Ok(mut url) => {
            if !params.is_empty() {
                let mut q = url.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            url.into()
        }
        Err(_) => uri.to_owned(),
    }
}

/// A PKCE `code_challenge` for S256: the base64url SHA-256 of a verifier, 43 characters.
pub fn valid_code_challenge(text: &str) -> bool {
    text.len() == 43 && text.bytes().all(is_base64url)
}

/// A PKCE `code_verifier`: 43 to 128 unreserved characters (RFC 7636 §4.1).
pub fn valid_code_verifier(text: &str) -> bool {
    (43..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> RedirectUri {
        RedirectUri::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn registrable_uris() {
        for good in [
            "https://app.example.com/cb",
            "https://app.example.com/cb?x=1",
            "http://127.0.0.1/cb",
            "http://127.0.0.1:8400/cb",
            "http://[::1]:8400/cb",
            "http://localhost/cb",
            "com.example.app:/cb",
        ] {
            ok(good);
        }
        for bad in [
            "",
            "/cb",
            "http://app.example.com/cb",
            "http://127.0.0.2/cb",
            "https://app.example.com/cb#frag",
            "https://user:pw@app.example.com/cb",
            "javascript:alert(1)",
            "myapp:/cb",
            "https://app.example.com/c b",
            "https://app.example.com/ä",
            "http://localhost:99999x/cb",
            "https://evil.example\\@good.example/cb",
            "https://APP.example.com/cb",
            "https://app.example.com:443/cb",
            "https://app.example.com",
        ] {
            assert!(RedirectUri::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn matching_is_exact_except_for_a_loopback_port() {
        let r = ok("https://app.example.com/cb");
        assert!(r.matches("https://app.example.com/cb"));
        for differs in [
            "https://app.example.com/cb/",
            "https://APP.example.com/cb",
            "https://app.example.com:443/cb",
            "https://app.example.com/cb#x",
            "https://app.example.com/cb?x=1",
        ] {
            assert!(!r.matches(differs), "{differs}");
        }
        let loopback = ok("http://127.0.0.1/cb");
        assert!(loopback.matches("http://127.0.0.1:51234/cb"));
        assert!(!loopback.matches("http://127.0.0.1:51234/cb/"));
        assert!(!loopback.matches("http://localhost:51234/cb"));
        assert!(!loopback.matches("http://127.0.0.1:/cb"));
        let fixed = ok("http://127.0.0.1:8400/cb");
        assert!(!fixed.matches("http://127.0.0.1:8401/cb"));
        // Every port the rule accepts is one a URL parser accepts.
        assert!(!loopback.matches("http://127.0.0.1:65536/cb"));
        assert!(!loopback.matches("http://127.0.0.1:99999/cb"));
        assert!(loopback.matches("http://127.0.0.1:65535/cb"));
        let v6 = ok("http://[::1]/cb");
        assert!(v6.matches("http://[::1]:9000/cb"));
    }

    #[test]
    fn pkce_shapes() {
        assert!(valid_code_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!valid_code_challenge("short"));
        assert!(!valid_code_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM"
        ));
        assert!(valid_code_verifier(&"a".repeat(43)));
        assert!(!valid_code_verifier(&"a".repeat(42)));
        assert!(!valid_code_verifier(&"a".repeat(129)));
        assert!(!valid_code_verifier(&format!("{}!", "a".repeat(43))));
    }
}
