//! Token metadata (SPEC §9): the keys a person's or a client's metadata may use, and its limits.

/// The names lanyard's tokens and userinfo use themselves: no metadata key may take them.
pub const RESERVED_METADATA_KEYS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "scope",
    "client_id",
    "act",
    "email",
    "name",
    "system",
    "may_act",
    "share",
    "app",
    "exchanged",
    "delegations",
];
/// The largest metadata value, serialised.
pub const MAX_METADATA_VALUE_BYTES: usize = 16 * 1024;
/// The most keys one user or client holds.
pub const MAX_METADATA_KEYS: usize = 32;

/// Why a metadata key is refused, or `None` when it is good: `[a-z][a-z0-9_]{0,63}`, not
/// reserved.
pub fn metadata_key_problem(key: &str) -> Option<String> {
    let shaped = (1..=64).contains(&key.len())
        && key.as_bytes()[0].is_ascii_lowercase()
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !shaped {
        return Some(format!(
            "metadata key {:?} must match [a-z][a-z0-9_]{{0,63}}",
            key.chars().take(70).collect::<String>()
        ));
    }
    if RESERVED_METADATA_KEYS.contains(&key) {
        return Some(format!(
            "metadata key {key:?} is a name lanyard's tokens use themselves"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_keys() {
        assert!(metadata_key_problem("plan").is_none());
        assert!(metadata_key_problem("tier_2").is_none());
        for bad in ["", "Plan", "2x", "a-b", "sub", "email", &"a".repeat(65)] {
            assert!(metadata_key_problem(bad).is_some(), "{bad}");
        }
    }
}
