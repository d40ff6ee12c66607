//! What people hold on systems, remembered: each local API token carries its subject's name and
//! roles on the system, so without this every mint would ask the database first.
//!
//! Keyed by tenant, user and system. Only a holding (at least one role) is remembered, never its
//! absence, so a role assigned on another node is found at the next mint anyway. An entry is
//! dropped when a role is assigned to its user on its system, when its user is deleted (here or
//! on another node, see `Authority::apply`) and on a resync; and it is read again once it is
//! [`MAX_AGE`] old, so an assignment an operator removed in the database stops counting soon.
//! As in the token cache, a lookup that started before a change may not insert its answer
//! afterwards: every change bumps a generation, and an insert carries the generation its read
//! started in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Role;

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

#[derive(Default)]
pub struct Holdings {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// `tenant id/user id/system id` → holding and when it was read. Ids are UUIDs, so `/`
    /// cannot occur in them.
    entries: HashMap<String, (Arc<Holding>, Instant)>,
    generation: u64,
}

fn key(tenant_id: &str, user_id: &str, system_id: &str) -> String {
    format!("{tenant_id}/{user_id}/{system_id}")
}

impl Holdings {
    /// The generation to pass to [`Holdings::insert`] once the database has answered.
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
            .entries
            .get(&key(tenant_id, user_id, system_id))
            .filter(|(_, read_at)| now.saturating_duration_since(*read_at) < MAX_AGE)
            .map(|(holding, _)| holding.clone())
    }

    /// Remembers a holding read in generation `read_in`, unless something changed since.
    pub fn insert(
        &self,
        tenant_id: &str,
        user_id: &str,
        system_id: &str,
        holding: Arc<Holding>,
        read_in: u64,
    ) {
        let mut state = self.state.lock().expect("holdings lock");
        if state.generation != read_in {
            return;
        }
        if state.entries.len() >= CAPACITY {
            state
                .entries
                .retain(|_, (_, read_at)| read_at.elapsed() < MAX_AGE);
            if state.entries.len() >= CAPACITY {
                return;
            }
        }
        state.entries.insert(
            key(tenant_id, user_id, system_id),
            (holding, Instant::now()),
        );
    }

    /// Forgets the user's holdings on one system, or on every system with `None`.
    pub fn forget_user(&self, tenant_id: &str, user_id: &str, system_id: Option<&str>) {
        let mut state = self.state.lock().expect("holdings lock");
        state.generation += 1;
        match system_id {
            Some(system_id) => {
                state.entries.remove(&key(tenant_id, user_id, system_id));
            }
            None => {
                let prefix = format!("{tenant_id}/{user_id}/");
                state.entries.retain(|k, _| !k.starts_with(&prefix));
            }
        }
    }

    pub fn forget_all(&self) {
        let mut state = self.state.lock().expect("holdings lock");
        state.generation += 1;
        state.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(role: &str) -> Arc<Holding> {
        Arc::new(Holding {
            user_name: "Ada".into(),
            roles: vec![Role {
                id: role.into(),
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
        assert_eq!(h.get("t", "u", "s", now + MAX_AGE), None);
    }

    #[test]
    fn a_read_that_started_before_a_change_is_not_remembered() {
        let h = Holdings::default();
        let read_in = h.generation();
        h.forget_user("t", "u", Some("s"));
        h.insert("t", "u", "s", holding("old"), read_in);
        assert_eq!(h.get("t", "u", "s", Instant::now()), None);

        let read_in = h.generation();
        h.insert("t", "u", "s", holding("new"), read_in);
        assert_eq!(h.get("t", "u", "s", Instant::now()), Some(holding("new")));
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
    }
}
