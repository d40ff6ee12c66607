//! What the authority keeps in memory so the hot paths ask the database nothing: each holds
//! answers read from the database, says when they are read again, and is told of changes (the
//! authority's own, and other nodes' announcements). None is the only copy of anything.
//!
//! - [`token_cache`]: verified access tokens until their `exp`, shared by the doors.
//! - [`revoked`]: the ids of revoked access tokens.
//! - [`keyring`]: each tenant's parsed signing and verifying keys.
//! - [`holdings`]: the roles each person holds on each system, for minting.
//! - [`tally`]: each person's live local tokens per system, against their cap.
//! - [`delegations`]: the delegations' tokens userinfo handed out, while they live.

pub mod delegations;
pub mod holdings;
pub mod keyring;
pub mod revoked;
pub mod tally;
pub mod token_cache;
