//! What people hold on systems, remembered: each local API token carries its subject's name and
//! roles on the system, so without this every mint would ask the database first.
//!
//! Remembered per person: the first mint of a person not seen lately reads every role they hold
//! (on up to [`READ_AT_ONCE`] role assignments) in one query, because a person's app mints for
//! several of their systems in a row, and a burst of mints by one person reads them once
//! ([`Holdings::one_reader`]). Only holdings are remembered, never their absence: a system
//! missing from what was read is asked about on its own, so a role assigned on another node is
//! found at the next mint anyway. A person's holdings are dropped when a role is assigned to
//! them (on that system), when they are deleted (here or on another node, see
//! `Authority::apply`) and on a resync; and they are read again once [`MAX_AGE`] old, so an
//! assignment an operator removed in the database stops counting soon. As in the token cache, a
//! read that started before a change may not insert its answer afterwards: every change bumps a
//! generation, and an insert carries the generation its read started in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::authority::Role;

/// A person's name and the roles they hold on one system, by role name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub user_name: String,
    pub roles: Vec<Role>,
}

/// At most this many holdings are remembered; beyond it, the rest are read every time.
const CAPACITY: usize = 200_000;
/// How long a holding is trusted without reading it again.
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// The most role assignments read at once for one person.
pub const READ_AT_ONCE: usize = 20_000;

#[derive(Default)]
pub struct Holdings {
    state: Mutex<State>,
    /// One lock per person whose holdings are being read.
    reads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Default)]
struct State {
    /// `tenant id/user id` → what the person holds, by system.
    people: HashMap<String, Person>,
    /// Holdings in `people`.
    held: usize,
    generation: u64,
}

/// The holdings of one person read together.
struct Person {
    read_at: Instant,
    systems: HashMap<String, Arc<Holding>>,
}

/// Ids are UUIDs, so `/` cannot occur in them.
fn key(tenant_id: &str, user_id: &str) -> String {
    format!("{tenant_id}/{user_id}")
}

impl State {
    /// The person's holdings, unless they were read [`MAX_AGE`] or longer before `now`.
    fn fresh(&self, tenant_id: &str, user_id: &str, now: Instant) -> Option<&Person> {
        self.fresh_key(&key(tenant_id, user_id), now)
    }

    fn fresh_key(&self, key: &str, now: Instant) -> Option<&Person> {
        self.people
            .get(key)
            .filter(|p| now.saturating_duration_since(p.read_at) < MAX_AGE)
    }

    /// Whether `more` holdings fit, after forgetting those too old to be used.
    fn room_for(&mut self, more: usize) -> bool {
        if self.held + more > CAPACITY {
            self.people.retain(|_, p| p.read_at.elapsed() < MAX_AGE);
            self.held = self.people.values().map(|p| p.systems.len()).sum();
        }
        self.held + more <= CAPACITY
    }

    fn remove(&mut self, key: &str) {
        if let Some(person) = self.people.remove(key) {
            self.held -= person.systems.len();
        }
    }
}

impl Holdings {
    /// The generation to pass to an insert once the database has answered.
    pub fn generation(&self) -> u64 {
        self.state.lock().expect("holdings lock").generation
    }

    /// The holding, unless it was read [`MAX_AGE`] or longer before `now`.
    pub fn get(
        &self,
        tenant_id: &str,
        user_id: &str,
        system_id: &str,
        now: Instant,
    ) -> Option<Arc<Holding>> {
        let state = self.state.lock().expect("holdings lock");
        state
            .fresh(tenant_id, user_id, now)?
            .systems
            .get(system_id)
            .cloned()
    }

    /// Whether the person's holdings were read less than [`MAX_AGE`] before `now`.
    pub fn knows(&self, tenant_id: &str, user_id: &str, now: Instant) -> bool {
        let state = self.state.lock().expect("holdings lock");
        state.fresh(tenant_id, user_id, now).is_some()
    }

    /// Waits until no one else reads this person's holdings; the person is theirs to read
    /// until the guard is dropped.
    pub async fn one_reader(
        &self,
        tenant_id: &str,
        user_id: &str,
    ) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut reads = self.reads.lock().expect("holdings reads lock");
            // Locks nobody holds or waits for are done with.
            reads.retain(|_, lock| Arc::strong_count(lock) > 1);
            reads.entry(key(tenant_id, user_id)).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Remembers what a person holds, read together in generation `read_in`, unless something
    /// changed since; replaces what was remembered of them.
    pub fn insert_person(
        &self,
        tenant_id: &str,
        user_id: &str,
        systems: HashMap<String, Arc<Holding>>,
        read_in: u64,
    ) {
        let mut state = self.state.lock().expect("holdings lock");
        if state.generation != read_in {
            return;
        }
        let key = key(tenant_id, user_id);
        state.remove(&key);
        if !state.room_for(systems.len()) {
            return;
        }
        state.held += systems.len();
        state.people.insert(
            key,
            Person {
                read_at: Instant::now(),
                systems,
            },
        );
    }

    /// Remembers one holding read in generation `read_in`, unless something changed since. It
    /// joins what was read of the person before and is read again with it.
    pub fn insert(
        &self,
        tenant_id: &str,
        user_id: &str,
        system_id: &str,
        holding: Arc<Holding>,
        read_in: u64,
    ) {
        let mut state = self.state.lock().expect("holdings lock");
        if state.generation != read_in || !state.room_for(1) {
            return;
        }
        let key = key(tenant_id, user_id);
        if state.fresh_key(&key, Instant::now()).is_none() {
            state.remove(&key);
        }
        let person = state.people.entry(key).or_insert_with(|| Person {
            read_at: Instant::now(),
            systems: HashMap::new(),
        });
        if person
            .systems
            .insert(system_id.to_owned(), holding)
            .is_none()
        {
            state.held += 1;
        }
    }

    /// Forgets the user's holding on one system, or all of them with `None`.
    pub fn forget_user(&self, tenant_id: &str, user_id: &str, system_id: Option<&str>) {
        let mut state = self.state.lock().expect("holdings lock");
        state.generation += 1;
        let key = key(tenant_id, user_id);
        match system_id {
            Some(system_id) => {
                let removed = state
                    .people
                    .get_mut(&key)
                    .and_then(|p| p.systems.remove(system_id));
                if removed.is_some() {
                    state.held -= 1;
                }
            }
            None => state.remove(&key),
        }
    }

    pub fn forget_all(&self) {
        let mut state = self.state.lock().expect("holdings lock");
        state.generation += 1;
        state.people.clear();
        state.held = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(role: &str) -> Arc<Holding> {
        Arc::new(Holding {
            user_name: "Ada".into(),
            roles: vec![Role {
                // One id per name, so equal names are the same role.
                id: uuid::Uuid::from_u128(
                    role.bytes()
                        .fold(1u128, |h, b| h.wrapping_mul(31).wrapping_add(b.into())),
                )
                .into(),
                name: role.into(),
            }],
        })
    }

    #[test]
    fn a_holding_is_read_again_once_it_is_old() {
        let h = Holdings::default();
        let g = h.generation();
        h.insert("t", "u", "s", holding("r"), g);
        let now = Instant::now();
        assert!(h.get("t", "u", "s", now).is_some());
        assert!(h.knows("t", "u", now));
        assert_eq!(h.get("t", "u", "s", now + MAX_AGE), None);
        assert!(!h.knows("t", "u", now + MAX_AGE));
    }

    #[test]
    fn a_read_that_started_before_a_change_is_not_remembered() {
        let h = Holdings::default();
        let read_in = h.generation();
        h.forget_user("t", "u", Some("s"));
        h.insert("t", "u", "s", holding("old"), read_in);
        h.insert_person(
            "t",
            "u",
            HashMap::from([("s".to_owned(), holding("old"))]),
            read_in,
        );
        assert_eq!(h.get("t", "u", "s", Instant::now()), None);

        let read_in = h.generation();
        h.insert("t", "u", "s", holding("new"), read_in);
        assert_eq!(h.get("t", "u", "s", Instant::now()), Some(holding("new")));
    }

    #[test]
    fn a_person_read_together_replaces_what_was_known_of_them() {
        let h = Holdings::default();
        let g = h.generation();
        h.insert("t", "u", "gone", holding("r"), g);
        h.insert_person(
            "t",
            "u",
            HashMap::from([
                ("s1".to_owned(), holding("a")),
                ("s2".to_owned(), holding("b")),
            ]),
            g,
        );
        let now = Instant::now();
        assert_eq!(h.get("t", "u", "s1", now), Some(holding("a")));
        assert_eq!(h.get("t", "u", "s2", now), Some(holding("b")));
        assert_eq!(h.get("t", "u", "gone", now), None);
        assert_eq!(h.state.lock().unwrap().held, 2);
    }

    #[test]
    fn forgetting_a_user_forgets_them_on_every_system_and_no_one_else() {
        let h = Holdings::default();
        for (user, system) in [("u", "s1"), ("u", "s2"), ("u2", "s1")] {
            let g = h.generation();
            h.insert("t", user, system, holding("r"), g);
        }
        h.forget_user("t", "u", None);
        assert_eq!(h.get("t", "u", "s1", Instant::now()), None);
        assert_eq!(h.get("t", "u", "s2", Instant::now()), None);
        assert!(h.get("t", "u2", "s1", Instant::now()).is_some());

        h.forget_user("t", "u2", Some("s1"));
        assert_eq!(h.get("t", "u2", "s1", Instant::now()), None);
        assert_eq!(h.state.lock().unwrap().held, 0);
    }

    #[test]
    fn no_more_than_the_capacity_is_remembered() {
        let h = Holdings::default();
        let g = h.generation();
        let many = |n: usize| (0..n).map(|i| (i.to_string(), holding("r"))).collect();
        h.insert_person("t", "u1", many(CAPACITY), g);
        h.insert_person("t", "u2", many(1), g);
        h.insert("t", "u3", "s", holding("r"), g);
        let now = Instant::now();
        assert!(h.knows("t", "u1", now));
        assert!(!h.knows("t", "u2", now));
        assert!(!h.knows("t", "u3", now));
    }
}
