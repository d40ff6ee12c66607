//! The delegations' tokens userinfo handed out (SPEC §11), kept while they have a minute or
//! more to live: a recipient's app asking userinfo again gets the same tokens, not a new
//! signature (and a new audit event) per share on every request.

use std::collections::HashMap;
use std::sync::Mutex;

/// At most this many tokens are kept; beyond it, all are forgotten.
const CAPACITY: usize = 100_000;

/// A token handed out still this long before its `exp` is handed out again.
pub const REUSE_FOR_AT_LEAST_SECS: i64 = 60;

/// (tenant id, recipient, client id, share id).
type Key = (String, String, String, String);

/// A token handed out: the token, its `exp` and its `jti`.
struct Kept {
    token: String,
    exp: i64,
    jti: String,
}

#[derive(Default)]
pub struct Delegations {
    tokens: Mutex<HashMap<Key, Kept>>,
}

impl Delegations {
    /// The token handed out for `key`, and its `exp`, if it lives a minute more at `now`.
    pub fn get(&self, key: &Key, now: i64) -> Option<(String, i64)> {
        let tokens = self.tokens.lock().expect("delegations lock");
        tokens
            .get(key)
            .filter(|kept| kept.exp - now >= REUSE_FOR_AT_LEAST_SECS)
            .map(|kept| (kept.token.clone(), kept.exp))
    }

    pub fn insert(&self, key: Key, token: String, exp: i64, jti: String) {
        let mut tokens = self.tokens.lock().expect("delegations lock");
        if tokens.len() >= CAPACITY {
            tokens.clear();
        }
        tokens.insert(key, Kept { token, exp, jti });
    }

    /// Forgets the tokens `gone` picks: of a share revoked, of a person deleted, of a tenant
    /// whose keys changed.
    pub fn forget(&self, gone: impl Fn(&Key) -> bool) {
        self.tokens
            .lock()
            .expect("delegations lock")
            .retain(|key, _| !gone(key));
    }

    /// Forgets the token with id `jti`: it was revoked.
    pub fn forget_token(&self, jti: &str) {
        self.tokens
            .lock()
            .expect("delegations lock")
            .retain(|_, kept| kept.jti != jti);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(share: &str) -> Key {
        ("t".into(), "u".into(), "c".into(), share.into())
    }

    #[test]
    fn a_token_is_handed_out_again_while_it_has_a_minute_to_live() {
        let d = Delegations::default();
        d.insert(key("s"), "jwt".into(), 300, "j".into());
        assert_eq!(d.get(&key("s"), 0), Some(("jwt".into(), 300)));
        assert_eq!(d.get(&key("s"), 240), Some(("jwt".into(), 300)));
        assert_eq!(d.get(&key("s"), 241), None);
        d.forget(|k| k.3 == "s");
        assert_eq!(d.get(&key("s"), 0), None);
        d.insert(key("s"), "jwt".into(), 300, "j".into());
        d.forget_token("j");
        assert_eq!(d.get(&key("s"), 0), None);
    }
}
