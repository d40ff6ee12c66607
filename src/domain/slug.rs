//! Tenant slugs (SPEC §2): `[a-z0-9][a-z0-9-]{1,62}`.
//!
//! A slug appears in URLs (`/t/{slug}`), in the `aud` claim and in MQTT topics, so the rule is
//! strict: lowercase ASCII letters, digits and `-`, 2 to 63 characters, not starting with `-`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slug(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a valid tenant slug: use 2 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit"
)]
pub struct InvalidSlug(pub String);

impl Slug {
    pub fn parse(input: &str) -> Result<Self, InvalidSlug> {
        let bytes = input.as_bytes();
        let valid = (2..=63).contains(&bytes.len())
            && matches!(bytes[0], b'a'..=b'z' | b'0'..=b'9')
            && bytes
                .iter()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'));
        if valid {
            Ok(Slug(input.to_owned()))
        } else {
            Err(InvalidSlug(input.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_spec_alphabet() {
        for ok in ["demo", "a1", "acme-energy", "0x", &"a".repeat(63)] {
            assert!(Slug::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "a",
            "-demo",
            "Demo",
            "de mo",
            "de/mo",
            "de+mo",
            "de#mo",
            "démo",
            &"a".repeat(64),
        ] {
            assert!(Slug::parse(bad).is_err(), "{bad}");
        }
    }
}
