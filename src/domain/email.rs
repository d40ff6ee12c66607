//! Email addresses as users are known by: checked loosely (one `@`, a dotted domain, no spaces
//! or control characters) and compared lower-cased.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an email address")]
pub struct InvalidEmail(pub String);

impl Email {
    pub fn parse(input: &str) -> Result<Self, InvalidEmail> {
        let invalid = || InvalidEmail(input.chars().take(80).collect());
        let s = input.trim();
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = s.split_once('@').ok_or_else(invalid)?;
        if local.is_empty()
            || local.len() > 64
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
            || s.contains(['<', '>', ',', ';', '"', '\\', '(', ')', '[', ']'])
        {
            return Err(invalid());
        }
        Ok(Email(s.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_and_lower_cased() {
        assert_eq!(
            Email::parse(" Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@x.io",
            "a@b",
            "a b@x.io",
            "a@x..io",
            "a@@x.io",
            "a@x.io\nBcc: b@y.io",
            "<a@x.io>",
            "a,b@x.io",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }
}
