//! Pure types and rules: identifiers, scopes, durations, claims, OAuth errors and the internal
//! failures doors log, the clock, and MQTT topics with their permissions.
//!
//! Everything that crosses a door is parsed into one of these types at the edge, so the use-cases
//! in `authority/` only ever see values that are already valid. This module imports no web
//! framework, database driver, JWT library or async runtime.

pub mod acl;
pub mod claims;
pub mod clock;
pub mod email;
pub mod grant;
pub mod ids;
pub mod internal;
pub mod keys;
pub mod metadata;
pub mod oauth;
pub mod period;
pub mod scope;
pub mod slug;
pub mod topic;
pub mod web;

pub use claims::AccessClaims;
pub use clock::{Clock, ManualClock, SystemClock, UnixTime};
pub use email::Email;
pub use grant::GrantType;
pub use ids::{ClientId, InvalidId, LocalTokenId, RoleId, SystemId, TenantId, UserId};
pub use internal::Internal;
pub use keys::KeyStatus;
pub use oauth::{OAuthError, OAuthErrorCode};
pub use period::Period;
pub use scope::{Scope, ScopeSet};
pub use slug::Slug;
