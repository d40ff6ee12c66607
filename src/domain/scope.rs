//! OAuth scopes (RFC 6749 §3.3) and lanyard's catalogue of admin scopes.
//!
//! A tenant defines its own scopes (`sensor:read`, `video:gold`); the `lanyard:` namespace is
//! reserved for the fixed admin catalogue, `lanyard:<resource>:<verb>`, which guards the
//! management operations. A caller can only grant scopes it holds itself.

use std::collections::BTreeSet;
use std::fmt;

/// The prefix of the reserved admin scopes.
pub const ADMIN_PREFIX: &str = "lanyard:";

/// The fixed admin catalogue, `lanyard:<resource>:<verb>`.
pub const ADMIN_CATALOGUE: &[&str] = &[
    "lanyard:applications:read",
    "lanyard:applications:write",
    "lanyard:audit:read",
    "lanyard:clients:read",
    "lanyard:clients:write",
    "lanyard:keys:read",
    "lanyard:keys:write",
    "lanyard:local-tokens:mint",
    "lanyard:local-tokens:read",
    "lanyard:local-tokens:write",
    "lanyard:roles:read",
    "lanyard:roles:write",
    "lanyard:scopes:read",
    "lanyard:scopes:write",
    "lanyard:systems:read",
    "lanyard:systems:write",
    "lanyard:token-metadata:read",
    "lanyard:token-metadata:write",
    "lanyard:users:read",
    "lanyard:users:write",
];

/// The scope only a delegation's token carries (SPEC §11): it is in the catalogue so that it
/// parses, but no client, person or application is granted it, and the admin catalogue handed
/// to a tenant's admin leaves it out.
pub const DELEGATION_SCOPE: &str = "lanyard:local-tokens:mint";

const MAX_SCOPE_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidScope {
    #[error(
        "scope {0:?} is not a valid scope token: 1 to 128 printable ASCII characters without space, '\"' or '\\'"
    )]
    Syntax(String),
    #[error("scope {0:?} is in the reserved lanyard: namespace but not in its catalogue")]
    UnknownAdmin(String),
}

impl Scope {
    /// Parses one scope token: `1*( %x21 / %x23-5B / %x5D-7E )` (RFC 6749 §3.3), at most 128
    /// characters. A `lanyard:` scope must be one of the admin catalogue.
    pub fn parse(input: &str) -> Result<Self, InvalidScope> {
        let syntax_ok = !input.is_empty()
            && input.len() <= MAX_SCOPE_LEN
            && input
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
        if !syntax_ok {
            return Err(InvalidScope::Syntax(input.chars().take(80).collect()));
        }
        if input.starts_with(ADMIN_PREFIX) && !ADMIN_CATALOGUE.contains(&input) {
            return Err(InvalidScope::UnknownAdmin(input.to_owned()));
        }
        Ok(Scope(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is one of the reserved admin scopes rather than a tenant's own.
    pub fn is_admin(&self) -> bool {
        self.0.starts_with(ADMIN_PREFIX)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A set of scopes, ordered so that its space-separated form is stable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    /// Parses the space-separated form of RFC 6749 §3.3. Repeated spaces are tolerated, an empty
    /// string is the empty set.
    pub fn parse(input: &str) -> Result<Self, InvalidScope> {
        input
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(Scope::parse)
            .collect::<Result<BTreeSet<_>, _>>()
            .map(ScopeSet)
    }

    /// The admin catalogue, as a tenant's admin holds it: every scope but the delegation's.
    pub fn admin_catalogue() -> Self {
        ScopeSet(
            ADMIN_CATALOGUE
                .iter()
                .filter(|s| **s != DELEGATION_SCOPE)
                .map(|s| Scope((*s).to_owned()))
                .collect(),
        )
    }

    pub fn contains(&self, scope: &Scope) -> bool {
        self.0.contains(scope)
    }

    pub fn contains_str(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s.as_str() == scope)
    }

    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    /// The scopes of `self` missing from `other`.
    pub fn difference(&self, other: &ScopeSet) -> Vec<Scope> {
        self.0.difference(&other.0).cloned().collect()
    }

    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        ScopeSet(self.0.union(&other.0).cloned().collect())
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<T: IntoIterator<Item = Scope>>(iter: T) -> Self {
        ScopeSet(iter.into_iter().collect())
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for scope in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(scope.as_str())?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_space_separated_form() {
        let set = ScopeSet::parse("video:gold  sensor:read").unwrap();
        assert_eq!(set.to_string(), "sensor:read video:gold");
        assert!(ScopeSet::parse("").unwrap().is_empty());
    }

    #[test]
    fn refuses_bad_tokens_and_unknown_admin_scopes() {
        assert!(Scope::parse("a\"b").is_err());
        assert!(Scope::parse("a\\b").is_err());
        assert!(Scope::parse("tab\there").is_err());
        assert!(Scope::parse(&"x".repeat(129)).is_err());
        assert_eq!(
            Scope::parse("lanyard:everything:write"),
            Err(InvalidScope::UnknownAdmin(
                "lanyard:everything:write".into()
            ))
        );
        assert!(Scope::parse("lanyard:keys:write").unwrap().is_admin());
    }
}
