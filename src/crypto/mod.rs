//! Cryptography: RSA signing keys, compact JWS signing and verification, sealing private keys at
//! rest, and secrets (random generation, hashing, constant-time comparison).
//!
//! Everything here runs on aws-lc-rs. Keys are parsed once and held (`SigningKey`,
//! `VerifyingKey`); signing and verifying never re-parse a PEM or DER per call, which is what
//! keeps the token endpoint and the MQTT CONNECT path close to the cost of one RSA operation.
//! This module knows nothing of tenants, databases or doors.

pub mod jws;
pub mod rsa;
pub mod seal;
pub mod secret;

pub use jws::{JwsError, VerifiedJws};
pub use rsa::{SigningKey, VerifyingKey};
pub use seal::KeyEncryptionKey;
pub use secret::{Secret, SecretHash, pkce_s256, random_bytes};
