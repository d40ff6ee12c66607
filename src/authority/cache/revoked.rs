//! The ids of revoked access tokens, held in memory so that checking a token nobody has
//! presented before costs no database round trip (a device's first CONNECT, an app's first
//! request).
//!
//! The list is read from the database at the first check, then kept up to date with the
//! revocations this process makes and those other nodes announce
//! ([`crate::authority::Event::AccessTokenRevoked`]). When announcements may have been missed
//! ([`crate::authority::Event::Resync`]) and after expired revocations are pruned, it is read again; an id
//! announced while it is being read is kept whatever the read returns. With more revocations
//! than [`CAPACITY`], every check asks the database instead (and the list is read again a
//! minute later).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::{Db, StoreResult, revocations};

/// At most this many ids are held (tens of bytes each).
pub const CAPACITY: usize = 100_000;

/// How long checks ask the database after the list was found too long to hold.
const RETRY_AFTER: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct RevokedTokens {
    state: Mutex<State>,
    /// One read of the list at a time, however many checks wait for it.
    reading: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    ids: HashSet<String>,
    /// `ids` holds every revocation in the database (and maybe a few more): a miss means the
    /// token is not revoked.
    complete: bool,
    /// Bumped whenever `ids` may lack something the database has: a read that began before it
    /// is not trusted.
    epoch: u64,
    /// Set when the list was too long to hold: until then, checks ask the database.
    too_long_until: Option<Instant>,
}

impl State {
    fn answer(&self, jti: &str) -> Option<bool> {
        if self.ids.contains(jti) {
            Some(true)
        } else {
            self.complete.then_some(false)
        }
    }

    fn may_read(&self, now: Instant) -> bool {
        !self.complete && self.too_long_until.is_none_or(|until| now >= until)
    }

    fn add(&mut self, jti: &str) {
        if self.ids.len() < CAPACITY {
            self.ids.insert(jti.to_owned());
        } else {
            self.complete = false;
            self.epoch += 1;
        }
    }

    fn reset(&mut self) {
        self.ids.clear();
        self.complete = false;
        self.epoch += 1;
        self.too_long_until = None;
    }

    /// Takes in what a read that began in `epoch` found.
    fn take_read(&mut self, epoch: u64, ids: Vec<String>, now: Instant) {
        if ids.len() + self.ids.len() > CAPACITY {
            self.too_long_until = Some(now + RETRY_AFTER);
        } else if self.epoch == epoch {
            self.ids.extend(ids);
            self.complete = true;
        }
    }
}

impl RevokedTokens {
    /// Whether the token `jti` was revoked.
    pub async fn contains(&self, db: &Db, jti: &str, now: i64) -> StoreResult<bool> {
        if let Some(answer) = self.state().answer(jti) {
            return Ok(answer);
        }
        if self.state().may_read(Instant::now()) {
            let _reading = self.reading.lock().await;
            if let Some(answer) = self.state().answer(jti) {
                return Ok(answer);
            }
            if self.state().may_read(Instant::now()) {
                let epoch = self.state().epoch;
                let ids = revocations::unexpired(db, now, CAPACITY as i64 + 1).await?;
                let mut state = self.state();
                state.take_read(epoch, ids, Instant::now());
                if let Some(answer) = state.answer(jti) {
                    return Ok(answer);
                }
            }
        }
        revocations::is_revoked(db, jti).await
    }

    /// `jti` was revoked (here, or announced by another node).
    pub fn add(&self, jti: &str) {
        self.state().add(jti);
    }

    /// The database may hold revocations this list lacks, or lack some it holds (pruned): it is
    /// read again at the next check.
    pub fn reset(&self) {
        self.state().reset();
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("revoked tokens lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nothing_is_answered_before_the_list_is_read() {
        let mut s = State::default();
        assert_eq!(s.answer("a"), None);
        s.add("a");
        assert_eq!(s.answer("a"), Some(true));
        assert_eq!(s.answer("b"), None);
        s.take_read(s.epoch, ids(&["b"]), Instant::now());
        assert_eq!(s.answer("a"), Some(true));
        assert_eq!(s.answer("b"), Some(true));
        assert_eq!(s.answer("c"), Some(false));
    }

    #[test]
    fn a_read_that_began_before_a_reset_is_not_trusted() {
        let mut s = State::default();
        let epoch = s.epoch;
        s.reset();
        s.take_read(epoch, ids(&["a"]), Instant::now());
        assert_eq!(s.answer("b"), None);
        assert!(s.may_read(Instant::now()));
    }

    #[test]
    fn an_id_announced_during_a_read_is_kept() {
        let mut s = State::default();
        let epoch = s.epoch;
        s.add("late");
        s.take_read(epoch, ids(&["a"]), Instant::now());
        assert_eq!(s.answer("late"), Some(true));
        s.reset();
        assert_eq!(s.answer("late"), None);
    }

    #[test]
    fn a_list_too_long_to_hold_leaves_the_answer_to_the_database() {
        let mut s = State::default();
        let now = Instant::now();
        let many: Vec<String> = (0..=CAPACITY).map(|i| i.to_string()).collect();
        s.take_read(s.epoch, many, now);
        assert_eq!(s.answer("0"), None);
        assert!(!s.may_read(now));
        assert!(s.may_read(now + RETRY_AFTER));

        let mut s = State::default();
        let full: Vec<String> = (0..CAPACITY).map(|i| i.to_string()).collect();
        s.take_read(s.epoch, full, now);
        assert_eq!(s.answer("new"), Some(false));
        s.add("new");
        assert_eq!(
            s.answer("new"),
            None,
            "an id that did not fit is not denied"
        );
    }
}
