//! A system's list of local API tokens as published (SPEC §4), with an index of what it holds.
//!
//! The index (each entry's order key, id, status, last change and place in the payload, some
//! 40 bytes a token) lets the gate add a token minted here without reading the list back, and
//! tell a change found in the database that is already published from one that is not.
//! Built from the database or extended here, a list has the same bytes: entries ordered by
//! creation time and then id, as the database sorts them.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::authority::{LocalToken, LocalTokenStatus};

fn rfc3339(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One entry of a system's list (SPEC §4). The members are in alphabetical order, as lists
/// have always been written; `expiresAt` is `null` for a permanent token, and the token itself
/// is listed only while it is ACTIVATED.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    /// Who minted it for its subject (SPEC §11).
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<Subject<'a>>,
    created_at: String,
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    not_before: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    requested_device: Option<&'a str>,
    roles: Vec<EntryRole<'a>>,
    /// The share it was minted under.
    #[serde(skip_serializing_if = "Option::is_none")]
    share: Option<&'a str>,
    status: LocalTokenStatus,
    subject: Subject<'a>,
    system_uuid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    updated_at: String,
    uuid: &'a str,
}

#[derive(Serialize)]
struct EntryRole<'a> {
    name: &'a str,
    uuid: &'a str,
}

#[derive(Serialize)]
struct Subject<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    uuid: &'a str,
}

/// Writes the entry of `t` to `out`.
fn write_entry(out: &mut Vec<u8>, t: &LocalToken) {
    let entry = Entry {
        actor: t.actor.as_ref().map(|a| Subject {
            name: &a.name,
            kind: a.kind,
            uuid: &a.id,
        }),
        created_at: rfc3339(t.created_at),
        expires_at: t.expires_at.map(rfc3339),
        name: t.name.as_deref(),
        not_before: rfc3339(t.not_before),
        requested_device: t.requested_device.as_deref(),
        roles: t
            .roles
            .iter()
            .map(|r| EntryRole {
                name: &r.name,
                uuid: &r.id,
            })
            .collect(),
        share: t.share_id.as_deref(),
        status: t.status,
        subject: Subject {
            name: &t.subject_name,
            kind: "USER",
            uuid: &t.subject_id,
        },
        system_uuid: &t.system_id,
        token: match t.status {
            LocalTokenStatus::Activated => t.token.as_deref(),
            LocalTokenStatus::Revoked => None,
        },
        updated_at: rfc3339(t.updated_at),
        uuid: &t.id,
    };
    serde_json::to_writer(out, &entry).expect("an entry serialises");
}

/// What the index knows of one listed token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Listed {
    created_at: i64,
    id: Uuid,
    updated_at: i64,
    activated: bool,
    /// Where its entry starts in the payload.
    start: usize,
}

impl Listed {
    fn order(&self) -> (i64, Uuid) {
        (self.created_at, self.id)
    }
}

/// A system's published list: the payload and its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenList {
    payload: Bytes,
    listed: Vec<Listed>,
}

impl TokenList {
    /// The list of `tokens`, which come in the database's order.
    pub fn of(tokens: &[LocalToken]) -> TokenList {
        let mut payload = Vec::with_capacity(tokens.len() * 1024 + 2);
        let mut listed = Vec::with_capacity(tokens.len());
        payload.push(b'[');
        for (i, t) in tokens.iter().enumerate() {
            if i > 0 {
                payload.push(b',');
            }
            let start = payload.len();
            write_entry(&mut payload, t);
            listed.push(Listed {
                created_at: t.created_at,
                id: t.id.uuid(),
                updated_at: t.updated_at,
                activated: t.status == LocalTokenStatus::Activated,
                start,
            });
        }
        payload.push(b']');
        TokenList {
            payload: Bytes::from(payload),
            listed,
        }
    }

    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The list with `token` (just minted) in its place; `None` when it is listed already.
    pub fn with(&self, token: &LocalToken) -> Option<TokenList> {
        let listed = &self.listed;
        let id = token.id.uuid();
        if listed.iter().any(|l| l.id == id) {
            return None;
        }
        let order = (token.created_at, id);
        let at = listed.partition_point(|l| l.order() < order);
        let mut entry = Vec::with_capacity(1024);
        write_entry(&mut entry, token);
        let (insert_at, bytes, start) = match listed.get(at) {
            // Before the entry now at `at`: the new entry and a comma.
            Some(next) => (next.start, [entry.as_slice(), b","].concat(), next.start),
            // Last, before the `]`: the entry, after a comma unless the list was empty.
            None if listed.is_empty() => (self.payload.len() - 1, entry, self.payload.len() - 1),
            None => (
                self.payload.len() - 1,
                [b",", entry.as_slice()].concat(),
                self.payload.len(),
            ),
        };
        let mut payload = Vec::with_capacity(self.payload.len() + bytes.len());
        payload.extend_from_slice(&self.payload[..insert_at]);
        payload.extend_from_slice(&bytes);
        payload.extend_from_slice(&self.payload[insert_at..]);
        let mut extended = Vec::with_capacity(listed.len() + 1);
        extended.extend_from_slice(&listed[..at]);
        extended.push(Listed {
            created_at: token.created_at,
            id,
            updated_at: token.updated_at,
            activated: token.status == LocalTokenStatus::Activated,
            start,
        });
        extended.extend(listed[at..].iter().map(|l| Listed {
            start: l.start + bytes.len(),
            ..*l
        }));
        Some(TokenList {
            payload: Bytes::from(payload),
            listed: extended,
        })
    }

    /// Whether the list shows the token `id` as last changed at `updated_at`, and as ACTIVATED
    /// or not, as a row read from the database says.
    pub fn shows(&self, id: &str, activated: bool, updated_at: i64) -> bool {
        let Ok(id) = Uuid::try_parse(id) else {
            return false;
        };
        self.listed
            .iter()
            .any(|l| l.id == id && l.updated_at == updated_at && l.activated == activated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::Role;
    use crate::domain::SystemId;
    use serde_json::json;

    fn token(id: u128, created_at: i64) -> LocalToken {
        LocalToken {
            id: Uuid::from_u128(id).into(),
            system_id: SystemId::parse("5f0c4a4e-3b39-4a4c-9d6e-2b0f6f1f7c11").unwrap(),
            status: LocalTokenStatus::Activated,
            subject_id: Uuid::from_u128(7).into(),
            subject_name: "Ada".into(),
            roles: vec![Role {
                id: Uuid::from_u128(8).into(),
                name: "Owner".into(),
            }],
            name: None,
            requested_device: Some("Panel".into()),
            not_before: created_at,
            expires_at: Some(created_at + 60),
            created_at,
            updated_at: created_at,
            token: Some("CLOUD-a.b.c".into()),
            listed_until: Some(created_at + 60),
            status_idx: None,
            actor: None,
            share_id: None,
        }
    }

    #[test]
    fn an_entry_has_the_members_of_spec_4_in_alphabetical_order() {
        let mut t = token(7, 1_700_000_000);
        // serde_json writes an object's members sorted by name.
        let expected = json!({
            "uuid": t.id,
            "createdAt": "2023-11-14T22:13:20Z",
            "updatedAt": "2023-11-14T22:13:20Z",
            "status": "ACTIVATED",
            "expiresAt": "2023-11-14T22:14:20Z",
            "notBefore": "2023-11-14T22:13:20Z",
            "systemUuid": t.system_id,
            "roles": [{ "uuid": "00000000-0000-0000-0000-000000000008", "name": "Owner" }],
            "subject": { "uuid": "00000000-0000-0000-0000-000000000007", "name": "Ada", "type": "USER" },
            "token": "CLOUD-a.b.c",
            "requestedDevice": "Panel",
        });
        let listed = |t: &LocalToken| {
            String::from_utf8(TokenList::of(std::slice::from_ref(t)).payload().to_vec())
        };
        assert_eq!(listed(&t).unwrap(), format!("[{expected}]"));
        // Permanent, named and revoked: `expiresAt` null, and the token no longer listed.
        t.expires_at = None;
        t.name = Some("Door".into());
        t.requested_device = None;
        t.status = LocalTokenStatus::Revoked;
        let expected = json!({
            "uuid": t.id,
            "createdAt": "2023-11-14T22:13:20Z",
            "updatedAt": "2023-11-14T22:13:20Z",
            "status": "REVOKED",
            "expiresAt": null,
            "notBefore": "2023-11-14T22:13:20Z",
            "systemUuid": t.system_id,
            "roles": [{ "uuid": "00000000-0000-0000-0000-000000000008", "name": "Owner" }],
            "subject": { "uuid": "00000000-0000-0000-0000-000000000007", "name": "Ada", "type": "USER" },
            "name": "Door",
        });
        assert_eq!(listed(&t).unwrap(), format!("[{expected}]"));
    }

    #[test]
    fn a_token_added_lands_where_the_database_would_put_it() {
        let all = [
            token(1, 100),
            token(5, 100),
            token(9, 100),
            token(2, 200),
            token(3, 300),
        ];
        // Every token left out of the list and added back, at each place in the order.
        for missing in 0..all.len() {
            let mut rest = all.to_vec();
            let added = rest.remove(missing);
            let extended = TokenList::of(&rest).with(&added).expect("not listed yet");
            assert_eq!(extended, TokenList::of(&all), "token {missing} added");
        }
        let empty = TokenList::of(&[]);
        assert_eq!(&empty.payload()[..], b"[]");
        assert_eq!(empty.with(&all[0]), Some(TokenList::of(&all[..1])));
    }

    #[test]
    fn a_listed_token_is_not_added_twice_and_its_changes_are_told_apart() {
        let t = token(7, 100);
        let list = TokenList::of(std::slice::from_ref(&t));
        assert_eq!(list.with(&t), None);
        assert!(list.shows(&t.id, true, 100));
        assert!(!list.shows(&t.id, false, 100), "revoked in the same second");
        assert!(!list.shows(&t.id, true, 101));
        assert!(!list.shows(&token(8, 100).id, true, 100));
        assert!(!list.shows("not-a-uuid", true, 100));
    }
}
