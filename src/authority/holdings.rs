//! What people hold on systems, remembered: each local API token carries its subject's name and
//! roles on the system, so without this every mint would ask the database first.
//!
//! Keyed by tenant, user and system. Only a holding (at least one role) is remembered, never its
//! absence, so a role assigned on another node is found at the next mint anyway. An entry is
//! dropped when a role is assigned to its user on its system, when its user is deleted (here or
//! on another node, see `Authority::apply`) and on a resync. As in the token cache, a lookup
//! that started before such a change may not insert its answer afterwards: every change bumps a
//! generation, and an insert carries the generation its read started in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Role;

/// A person's name and the roles they hold on one system, by role name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub user_name: String,
    pub roles: Vec<Role>,
}

/// At most this many holdings are remembered; beyond it, the rest are read every time.
const CAPACITY: usize = 200_000;

#[derive(Default)]
pub struct Holdings {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// `tenant id/user id/system id` → holding. Ids are UUIDs, so `/` cannot occur in them.
    entries: HashMap<String, Arc<Holding>>,
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

    pub fn get(&self, tenant_id: &str, user_id: &str, system_id: &str) -> Option<Arc<Holding>> {
        let state = self.state.lock().expect("holdings lock");
        state
            .entries
            .get(&key(tenant_id, user_id, system_id))
            .cloned()
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
        if state.generation != read_in || state.entries.len() >= CAPACITY {
            return;
        }
        state
            .entries
            .insert(key(tenant_id, user_id, system_id), holding);
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
    fn a_read_that_started_before_a_change_is_not_remembered() {
        let h = Holdings::default();
        let read_in = h.generation();
        h.forget_user("t", "u", Some("s"));
        h.insert("t", "u", "s", holding("old"), read_in);
        assert_eq!(h.get("t", "u", "s"), None);

        let read_in = h.generation();
        h.insert("t", "u", "s", holding("new"), read_in);
        assert_eq!(h.get("t", "u", "s"), Some(holding("new")));
    }

    #[test]
    fn forgetting_a_user_forgets_them_on_every_system_and_no_one_else() {
        let h = Holdings::default();
        for (user, system) in [("u", "s1"), ("u", "s2"), ("u2", "s1")] {
            let g = h.generation();
            h.insert("t", user, system, holding("r"), g);
        }
        h.forget_user("t", "u", None);
        assert_eq!(h.get("t", "u", "s1"), None);
        assert_eq!(h.get("t", "u", "s2"), None);
        assert!(h.get("t", "u2", "s1").is_some());

        h.forget_user("t", "u2", Some("s1"));
        assert_eq!(h.get("t", "u2", "s1"), None);
    }
}
