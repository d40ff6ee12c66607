//! Signing-key states (SPEC §5).
//!
//! `PENDING` keys are published but do not sign yet, so verifiers learn them ahead of use;
//! exactly one `ACTIVE` key per tenant signs; `RETIRED` keys are published and verify what they
//! signed; `INVALIDATED` keys are not published and verify nothing until reactivated.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    Pending,
    Active,
    Retired,
    Invalidated,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Pending => "PENDING",
            KeyStatus::Active => "ACTIVE",
            KeyStatus::Retired => "RETIRED",
            KeyStatus::Invalidated => "INVALIDATED",
        }
    }

    /// Whether verifiers see the key: in the JWKS and accepted for signatures.
    pub fn is_published(self) -> bool {
        !matches!(self, KeyStatus::Invalidated)
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown key status {0:?}")]
pub struct UnknownKeyStatus(String);

impl FromStr for KeyStatus {
    type Err = UnknownKeyStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "PENDING" => Ok(KeyStatus::Pending),
            "ACTIVE" => Ok(KeyStatus::Active),
            "RETIRED" => Ok(KeyStatus::Retired),
            "INVALIDATED" => Ok(KeyStatus::Invalidated),
            other => Err(UnknownKeyStatus(other.to_owned())),
        }
    }
}
