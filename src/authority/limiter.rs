//! Rate limiting of failed client authentication (SPEC §3: 429 after 10 failures a minute).
//!
//! Counted per presented `client_id` and source address, whether or not such a client exists,
//! so the limit itself tells an attacker nothing and one source's failures slow down no other.
//! A limited source is refused only when its credentials are wrong (see
//! `Authority::authenticate_client`). The table is bounded: when full, windows that have ended are
//! dropped first, and if it is still full the oldest entry goes.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::UnixTime;

const MAX_ENTRIES: usize = 100_000;

pub struct FailureLimiter {
    max_failures: u32,
    window_secs: i64,
    windows: Mutex<HashMap<String, (UnixTime, u32)>>,
}

impl FailureLimiter {
    pub fn new(max_failures: u32, window_secs: i64) -> Self {
        FailureLimiter {
            max_failures,
            window_secs,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(seconds to wait)` when `key` has used up its failures in the current window.
    pub fn blocked(&self, key: &str, now: UnixTime) -> Option<u64> {
        let map = self.windows.lock().expect("limiter lock");
        let (start, count) = *map.get(key)?;
        let ends = start + self.window_secs;
        (now < ends && count >= self.max_failures).then(|| (ends - now) as u64)
    }

    pub fn record_failure(&self, key: &str, now: UnixTime) {
        let mut map = self.windows.lock().expect("limiter lock");
        if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
            map.retain(|_, (start, _)| now < *start + self.window_secs);
            if map.len() >= MAX_ENTRIES
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (s, _))| *s)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let entry = map.entry(key.to_owned()).or_insert((now, 0));
        if now >= entry.0 + self.window_secs {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let limiter = FailureLimiter::new(3, 60);
        for _ in 0..3 {
            assert_eq!(limiter.blocked("c", 100), None);
            limiter.record_failure("c", 100);
        }
        assert_eq!(limiter.blocked("c", 110), Some(50));
        assert_eq!(limiter.blocked("other", 110), None);
        assert_eq!(limiter.blocked("c", 160), None);
    }
}
