//! What every listener shares to keep connections from taking the service from others
//! (SPEC §7): the process's open-file budget and the cap on connections per source address.
//!
//! At start, [`FileBudget::at_start`] reads `RLIMIT_NOFILE`, raises the soft limit to the hard
//! one where allowed, and keeps headroom for what is not a client connection (the database
//! connections, the listeners, mail, log and key files, the runtime's own descriptors). What is
//! left is split between the HTTP listener and the MQTT listeners, so that all of them together
//! stay below the limit: a flood on one door still leaves the other its share. Each listener
//! holds one [`Permits`] for its share and one [`PerSource`] table; a connection that finds
//! either full is closed at once, before anything is read from it.
//!
//! An IPv6 source is counted by its /64 prefix, the block one host is usually given; an
//! IPv4-mapped IPv6 address counts as the IPv4 address it is.
//!
//! This module knows no door; `app` builds the budget and each door's listener uses it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors always kept for what is not a client connection: listeners, the runtime's epoll
/// and event descriptors, the router's channels, mail, logs, the key file.
const FIXED_HEADROOM: u64 = 128;
/// Descriptors kept per database connection (SQLite holds the database, its WAL and its shared
/// memory file open; PostgreSQL one socket).
const PER_DATABASE_CONNECTION: u64 = 4;
/// Of what is left, the HTTP listener keeps a quarter, at most this many; the MQTT listeners
/// (a fleet's devices, most of the connections) get the rest, up to `mqtt.max_connections`, and
/// HTTP then whatever MQTT does not take.
const HTTP_RESERVE_MAX: u64 = 2048;

/// How many connections each door may hold, from the open-file limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBudget {
    /// The soft `RLIMIT_NOFILE` in force.
    pub open_files: u64,
    /// The soft limit before it was raised, when it was.
    pub raised_from: Option<u64>,
    /// Connections the HTTP listener may hold.
    pub http: usize,
    /// Connections the MQTT listeners (plain and TLS together) may hold.
    pub mqtt: usize,
}

impl FileBudget {
    /// Reads (and, where allowed, raises) the open-file limit and splits it.
    pub fn at_start(database_connections: u32, mqtt_max_connections: u32) -> FileBudget {
        let (open_files, raised_from) = raise_open_file_limit();
        Self::split(
            open_files,
            raised_from,
            database_connections,
            mqtt_max_connections,
        )
    }

    /// The split for a given limit: headroom first, a reserve for HTTP, then MQTT up to its
    /// configured maximum, then HTTP the rest. Each door gets at least one connection.
    pub fn split(
        open_files: u64,
        raised_from: Option<u64>,
        database_connections: u32,
        mqtt_max_connections: u32,
    ) -> FileBudget {
        // The database pools: PostgreSQL's one pool, or SQLite's readers plus its writer and
        // checkpointer.
        let database = (u64::from(database_connections) + 2) * PER_DATABASE_CONNECTION;
        let headroom = FIXED_HEADROOM + database + open_files / 32;
        let total = open_files.saturating_sub(headroom).max(2);
        let http_reserve = (total / 4).clamp(1, HTTP_RESERVE_MAX);
        let mqtt = u64::from(mqtt_max_connections)
            .min(total - http_reserve)
            .max(1);
        let http = total.saturating_sub(mqtt).max(1);
        FileBudget {
            open_files,
            raised_from,
            http: usize::try_from(http).unwrap_or(usize::MAX),
            mqtt: usize::try_from(mqtt).unwrap_or(usize::MAX),
        }
    }

    /// The one line logged at start.
    pub fn describe(&self, per_source: u32) -> String {
        let raised = match self.raised_from {
            Some(from) => format!(" (raised from {from})"),
            None => String::new(),
        };
        format!(
            "connections: open-file limit {}{raised}; at most {} http and {} mqtt connections, {per_source} per source address on each listener",
            self.open_files, self.http, self.mqtt
        )
    }
}

/// The soft `RLIMIT_NOFILE`, raised to the hard limit where the system allows it, and the soft
/// limit before, when it was raised.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every unix
fn raise_open_file_limit() -> (u64, Option<u64>) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return (1024, None);
    }
    let soft = limit.rlim_cur;
    let mut hard = limit.rlim_max;
    #[cfg(target_os = "macos")]
    {
        // macOS refuses a soft limit above OPEN_MAX even when the hard limit is unlimited.
        hard = hard.min(libc::OPEN_MAX as libc::rlim_t);
    }
    if hard == libc::RLIM_INFINITY {
        // An unlimited hard limit still has the kernel's per-process ceiling; stay well below.
        hard = 1 << 20;
    }
    if soft != libc::RLIM_INFINITY && soft < hard {
        let raised = libc::rlimit {
            rlim_cur: hard,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return (hard as u64, Some(soft as u64));
        }
    }
    let soft = if soft == libc::RLIM_INFINITY {
        hard
    } else {
        soft
    };
    (soft as u64, None)
}

#[cfg(not(unix))]
fn raise_open_file_limit() -> (u64, Option<u64>) {
    (8192, None)
}

/// Lets a warning through at most once a second: a flood of refused connections must not
/// become a flood of log lines.
#[derive(Default)]
pub struct WarnOnce {
    last: std::sync::atomic::AtomicU64,
}

impl WarnOnce {
    /// Whether to warn now; `false` within a second of the last `true`.
    pub fn ready(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last.load(Ordering::Relaxed);
        now > last
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// One listener's share of the budget.
#[derive(Clone)]
pub struct Permits(Arc<Semaphore>, usize);

impl Permits {
    pub fn new(connections: usize) -> Permits {
        let connections = connections.min(Semaphore::MAX_PERMITS);
        Permits(Arc::new(Semaphore::new(connections)), connections)
    }

    /// How many connections the share holds.
    pub fn limit(&self) -> usize {
        self.1
    }

    /// How many places are taken now.
    pub fn in_use(&self) -> usize {
        self.1.saturating_sub(self.0.available_permits())
    }

    /// A place for one more connection, or `None` when the share is used up.
    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}

/// Open connections per source address on one listener, capped.
pub struct PerSource {
    max: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

impl PerSource {
    pub fn new(max: u32) -> Arc<PerSource> {
        Arc::new(PerSource {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a new connection from `ip`; `None` when that source already holds `max`.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let key = source_key(ip);
        let mut open = self.open.lock().expect("per-source lock");
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            table: self.clone(),
            key,
        })
    }

    /// Connections open from the source `ip` belongs to.
    pub fn open_from(&self, ip: IpAddr) -> u32 {
        let open = self.open.lock().expect("per-source lock");
        open.get(&source_key(ip)).copied().unwrap_or(0)
    }
}

/// One connection counted against its source; dropping it (the connection closed) frees it.
pub struct SourceSlot {
    table: Arc<PerSource>,
    key: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().expect("per-source lock");
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What a source is counted as: IPv4 addresses as they are, IPv6 by their /64 prefix.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_keeps_headroom_and_gives_each_door_its_share() {
        let small = FileBudget::split(1024, None, 10, 100_000);
        assert!(small.http + small.mqtt < 1024 - 128, "{small:?}");
        assert!(small.http >= 100 && small.mqtt >= 100, "{small:?}");
        let large = FileBudget::split(1 << 20, Some(1024), 10, 100_000);
        assert_eq!(large.mqtt, 100_000);
        assert!(large.http > 100_000 && large.http + large.mqtt < 1 << 20);
        let tiny = FileBudget::split(16, None, 10, 100_000);
        assert_eq!((tiny.http, tiny.mqtt), (1, 1));
        assert!(large.describe(1000).contains("raised from 1024"));
    }

    #[test]
    fn each_source_holds_at_most_its_cap_and_gets_its_places_back() {
        let table = PerSource::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = table.admit(a).unwrap();
        let _second = table.admit(a).unwrap();
        assert!(table.admit(a).is_none());
        assert!(table.admit("192.0.2.2".parse().unwrap()).is_some());
        drop(first);
        assert!(table.admit(a).is_some());
    }

    #[test]
    fn an_ipv6_host_counts_by_its_prefix() {
        let table = PerSource::new(1);
        let _one = table.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(table.admit("2001:db8:1:2::ffff".parse().unwrap()).is_none());
        assert!(table.admit("2001:db8:1:3::1".parse().unwrap()).is_some());
        assert_eq!(
            source_key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }
}
