//! Counting events per key in fixed windows, in memory: failed client authentication (SPEC §3:
//! 429 after 10 failures a minute, per presented `client_id` and source address, whether or
//! not such a client exists, so the limit itself tells an attacker nothing and one source's
//! failures slow down no other; a limited source is refused only when its credentials are
//! wrong, see `Authority::authenticate_client`), and the hosted sign-in pages a source address
//! opens (`web_sign_in`). The table is bounded: when full, windows that have ended are dropped
//! (at most once a window), and while it is still full new keys go uncounted.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::UnixTime;

const MAX_ENTRIES: usize = 100_000;

pub struct WindowLimiter {
    max_failures: u32,
    window_secs: i64,
    windows: Mutex<Windows>,
}

#[derive(Default)]
struct Windows {
    by_key: HashMap<String, (UnixTime, u32)>,
    /// When ended windows were last dropped: at most once a window, so a full table costs a
    /// failure no scan of it.
    swept_at: UnixTime,
}

impl WindowLimiter {
    pub fn new(max_failures: u32, window_secs: i64) -> Self {
        WindowLimiter {
            max_failures,
            window_secs,
            windows: Mutex::new(Windows::default()),
        }
    }

    /// `Some(seconds to wait)` when `key` has used up its events in the current window.
    pub fn blocked(&self, key: &str, now: UnixTime) -> Option<u64> {
        let map = self.windows.lock().expect("limiter lock");
        let (start, count) = *map.by_key.get(key)?;
        let ends = start + self.window_secs;
        (now < ends && count >= self.max_failures).then(|| (ends - now) as u64)
    }

    /// Counts an event of `key`. While the table is full of windows that have not ended, a
    /// new key goes uncounted: the limits are brakes (on guessing 256-bit secrets, on storing
    /// sign-in requests), not what keeps anything safe, and a flood of made-up keys must cost
    /// each request no more than a lookup.
    pub fn record(&self, key: &str, now: UnixTime) {
        let mut guard = self.windows.lock().expect("limiter lock");
        let windows = &mut *guard;
        if windows.by_key.len() >= MAX_ENTRIES && !windows.by_key.contains_key(key) {
            if now < windows.swept_at + self.window_secs {
                return;
            }
            windows.swept_at = now;
            let window = self.window_secs;
            windows.by_key.retain(|_, (start, _)| now < *start + window);
            if windows.by_key.len() >= MAX_ENTRIES {
                return;
            }
        }
        let entry = windows.by_key.entry(key.to_owned()).or_insert((now, 0));
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
        let limiter = WindowLimiter::new(3, 60);
        for _ in 0..3 {
            assert_eq!(limiter.blocked("c", 100), None);
            limiter.record("c", 100);
        }
        assert_eq!(limiter.blocked("c", 110), Some(50));
        assert_eq!(limiter.blocked("other", 110), None);
        assert_eq!(limiter.blocked("c", 160), None);
    }

    #[test]
    fn a_full_table_counts_no_new_key_until_its_windows_end() {
        let limiter = WindowLimiter::new(1, 60);
        for i in 0..MAX_ENTRIES {
            limiter.record(&i.to_string(), 100);
        }
        limiter.record("new", 110);
        assert_eq!(limiter.blocked("new", 110), None);
        assert_eq!(
            limiter.blocked("0", 110),
            Some(50),
            "counted keys stay counted"
        );
        // Once the windows have ended (and a window after the last sweep), the next failure
        // clears them and is counted.
        limiter.record("new", 171);
        assert_eq!(limiter.blocked("new", 171), Some(60));
        assert_eq!(limiter.windows.lock().unwrap().by_key.len(), 1);
    }
}
