//! Who holds each MQTT client id in the cluster, so that the callout refuses a CONNECT that
//! would take over a live session of another principal (SPEC §4): NATS itself lets any user
//! of the account take a client id over, as MQTT's rule says.
//!
//! Every lanyard node keeps the same map, fed by the cluster's connection events
//! (`$SYS.ACCOUNT.<account>.CONNECT` and `.DISCONNECT`, which name the MQTT client id, the
//! server, the connection and its `authorized_user`: the callout's [`Holder`], or a config
//! user's name), and read whole from CONNZ before the callout answers its first request and
//! every [`RESEED`] after, in case events were missed (entries of a server that did not answer
//! are kept). What it cannot see: two CONNECTs of different principals admitted in the same
//! instant, and a persistent session whose device is offline (NATS keeps no owner for it; the
//! taker gets none of its subscriptions' messages, which NATS checks against the taker's
//! permissions).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::enforcer::Enforcer;

/// Who holds a connection: kept as the user JWT's `name`, shown by CONNZ as `authorized_user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub jti: String,
    /// The token's client (not the MQTT client id).
    #[serde(rename = "client")]
    pub client_id: String,
    pub sub: String,
    pub kid: String,
}

impl Holder {
    /// The holder a connection's `authorized_user` names; None for a user lanyard did not
    /// admit (a config user: the publisher).
    pub fn of(authorized_user: &str) -> Option<Holder> {
        serde_json::from_str(authorized_user).ok()
    }

    /// The claims of the token, as far as its principals go: the callout admits no token that
    /// names an actor or another tenant's application, so a holder's client, person and id
    /// are all of them.
    pub fn claims(&self, slug: &str) -> crate::domain::AccessClaims {
        crate::domain::AccessClaims::new(
            String::new(),
            self.sub.clone(),
            slug.to_owned(),
            self.client_id.clone(),
            String::new(),
            0,
            0,
            self.jti.clone(),
        )
    }
}

/// How often the whole map is read again from the servers.
const RESEED: Duration = Duration::from_secs(30);

/// A principal: the client, and for a person's token the person.
type Principal = (String, String);

/// One live connection holding a client id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Live {
    server_id: String,
    cid: u64,
    principal: Principal,
}

/// (account, MQTT client id) → the connections holding it.
#[derive(Default)]
pub struct Holders {
    live: Mutex<HashMap<(String, String), Vec<Live>>>,
}

fn principal(holder: &Holder) -> Principal {
    (holder.client_id.clone(), holder.sub.clone())
}

/// The principal of a connection's `authorized_user`: a config user (lanyard's publisher, a
/// static user) is a principal of its own.
fn principal_of(authorized_user: &str) -> Principal {
    match Holder::of(authorized_user) {
        Some(holder) => principal(&holder),
        None => ("config".into(), authorized_user.into()),
    }
}

impl Holders {
    /// Whether a live connection of another principal holds `client_id` in `account`.
    pub fn held_by_other(&self, account: &str, client_id: &str, holder: &Holder) -> bool {
        let me = principal(holder);
        self.live
            .lock()
            .expect("holders lock")
            .get(&(account.to_owned(), client_id.to_owned()))
            .is_some_and(|live| live.iter().any(|l| l.principal != me))
    }

    fn connected(&self, account: String, client_id: String, live: Live) {
        let mut map = self.live.lock().expect("holders lock");
        let entry = map.entry((account, client_id)).or_default();
        if !entry.contains(&live) {
            entry.push(live);
        }
    }

    fn disconnected(&self, account: String, client_id: String, server_id: &str, cid: u64) {
        let mut map = self.live.lock().expect("holders lock");
        let key = (account, client_id);
        if let Some(entry) = map.get_mut(&key) {
            entry.retain(|l| !(l.server_id == server_id && l.cid == cid));
            if entry.is_empty() {
                map.remove(&key);
            }
        }
    }

    /// Reads every account's connections, and replaces what the map holds for each server
    /// that answered.
    pub async fn reseed(&self, enforcer: &Enforcer) -> anyhow::Result<()> {
        let found = enforcer.connections(None).await?;
        let mut fresh: HashMap<(String, String), Vec<Live>> = HashMap::new();
        for c in found.connections {
            if c.mqtt_client.is_empty() {
                continue;
            }
            fresh
                .entry((c.account, c.mqtt_client))
                .or_default()
                .push(Live {
                    server_id: c.server_id,
                    cid: c.cid,
                    principal: principal(&c.holder),
                });
        }
        let mut map = self.live.lock().expect("holders lock");
        for (key, live) in map.drain() {
            for l in live {
                if !found.answered.contains(&l.server_id) {
                    fresh.entry(key.clone()).or_default().push(l);
                }
            }
        }
        *map = fresh;
        Ok(())
    }

    /// Follows the connection events until `stopped`, reading the whole map at start and every
    /// [`RESEED`].
    pub async fn follow(
        self: Arc<Self>,
        enforcer: Arc<Enforcer>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let mut events = loop {
            match enforcer.client.subscribe("$SYS.ACCOUNT.*.*").await {
                Ok(events) => break events,
                Err(e) => {
                    tracing::warn!("nats: following connection events: {e}");
                    tokio::select! {
                        _ = stopped.changed() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let mut reseed = tokio::time::interval(RESEED);
        // The first reseed is the caller's, before the callout answers.
        reseed.tick().await;
        loop {
            tokio::select! {
                _ = stopped.changed() => return,
                _ = reseed.tick() => {
                    if let Err(e) = self.reseed(&enforcer).await {
                        tracing::warn!("nats: reading who holds each client id: {e:#}");
                    }
                }
                event = events.next() => match event {
                    Some(message) => self.on_event(&message.subject, &message.payload),
                    None => return,
                },
            }
        }
    }

    fn on_event(&self, subject: &str, payload: &[u8]) {
        let connect = subject.ends_with(".CONNECT");
        if !connect && !subject.ends_with(".DISCONNECT") {
            return;
        }
        let Ok(event) = serde_json::from_slice::<ConnectionEvent>(payload) else {
            return;
        };
        let c = event.client;
        if c.client_type != "mqtt" || c.client_id.is_empty() {
            return;
        }
        if connect {
            let live = Live {
                server_id: event.server.id,
                cid: c.id,
                principal: principal_of(&c.user),
            };
            self.connected(c.acc, c.client_id, live);
        } else {
            self.disconnected(c.acc, c.client_id, &event.server.id, c.id);
        }
    }
}

/// A connect or disconnect advisory, as far as it is read.
#[derive(Deserialize)]
struct ConnectionEvent {
    server: EventServer,
    client: EventClient,
}

#[derive(Deserialize)]
struct EventServer {
    id: String,
}

#[derive(Deserialize)]
struct EventClient {
    id: u64,
    #[serde(default)]
    acc: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    client_type: String,
    /// The MQTT client id.
    #[serde(default)]
    client_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(client: &str, sub: &str) -> Holder {
        Holder {
            jti: "j".into(),
            client_id: client.into(),
            sub: sub.into(),
            kid: "k".into(),
        }
    }

    fn event(kind: &str, cid: u64, client_id: &str, who: &Holder) -> (String, Vec<u8>) {
        let body = serde_json::json!({
            "server": {"id": "N1"},
            "client": {
                "id": cid, "acc": "acme", "client_type": "mqtt", "client_id": client_id,
                "user": serde_json::to_string(who).unwrap(),
            }
        });
        (
            format!("$SYS.ACCOUNT.acme.{kind}"),
            serde_json::to_vec(&body).unwrap(),
        )
    }

    #[test]
    fn a_client_id_is_held_by_its_live_connections_only() {
        let holders = Holders::default();
        let dev = holder("dev", "dev");
        let other = holder("other", "other");
        let (subject, body) = event("CONNECT", 7, "gw-1", &dev);
        holders.on_event(&subject, &body);
        assert!(holders.held_by_other("acme", "gw-1", &other));
        assert!(!holders.held_by_other("acme", "gw-1", &dev));
        assert!(!holders.held_by_other("beta", "gw-1", &other));
        assert!(!holders.held_by_other("acme", "gw-2", &other));
        // A person signing in through the device's app is another principal.
        assert!(holders.held_by_other("acme", "gw-1", &holder("dev", "u-ada")));
        let (subject, body) = event("DISCONNECT", 7, "gw-1", &dev);
        holders.on_event(&subject, &body);
        assert!(!holders.held_by_other("acme", "gw-1", &other));
        // A config user (lanyard's publisher) holds its client id against every token.
        let body = serde_json::json!({
            "server": {"id": "N1"},
            "client": {"id": 9, "acc": "acme", "client_type": "mqtt", "client_id": "pub", "user": "lanyard-acme"}
        });
        holders.on_event(
            "$SYS.ACCOUNT.acme.CONNECT",
            &serde_json::to_vec(&body).unwrap(),
        );
        assert!(holders.held_by_other("acme", "pub", &dev));
    }
}
