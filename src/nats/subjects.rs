//! SPEC §4's topic permissions as NATS subject permissions (SPEC §13), for the user JWT the
//! callout answers with.
//!
//! NATS keeps an MQTT topic as a subject: each level a token (`/` → `.`), a `.` inside a level
//! written `//`, an empty level written `/`; a filter's `+` is `*`, and its `#` is `>` plus the
//! parent subject (`a/#` also matches `a`). A level NATS cannot hold (one with white space) or
//! one it would read as a wildcard where MQTT means a literal (`*`, `>`) makes the filter
//! untranslatable, and the grant is left out: it can refuse too much, never grant too much.
//!
//! Publishing under the topic prefix is denied, whatever a rule allows, and so is every `$`
//! subject a connection could reach inside its account (the JetStream API that keeps the MQTT
//! sessions and retained messages, the MQTT internals): a NATS deny outranks any allow. A user
//! with nothing allowed is given an explicit deny of everything, since NATS reads an absent
//! allow list as "everything".

use super::jwt::Permission;
use crate::domain::acl::{Identity, Permissions};

/// The `$` namespaces of an account, closed to MQTT clients whatever the rules say (a rule
/// beginning with a wildcard becomes `>` or `*.…`, which in NATS match `$` subjects too).
const INTERNAL: [&str; 8] = [
    "$SYS.>", "$JS.>", "$JSC.>", "$KV.>", "$O.>", "$NRG.>", "$SRV.>", "$G.>",
];
/// The MQTT layer's own subjects (sessions, stored messages, retained messages, QoS 2 state):
/// closed to subscribing. `$MQTT.sub.` and `$MQTT.deliver.pubrel.` are left open: the server
/// subscribes there for a client's QoS 1 and 2 deliveries under the client's own permissions
/// (nats-server 2.12 and later allow them implicitly, but a deny would still count).
const MQTT_INTERNAL: [&str; 6] = [
    "$MQTT.sess.>",
    "$MQTT.msgs.>",
    "$MQTT.rmsgs.>",
    "$MQTT.JSA.>",
    "$MQTT.qos2.>",
    "$MQTT.out.>",
];
/// Closed to publishing, all of it.
const INTERNAL_PUBLISH: &str = "$MQTT.>";

/// The NATS subjects an MQTT filter (or topic) covers; None when it cannot be translated.
pub fn translate(filter: &str) -> Option<Vec<String>> {
    if filter.is_empty() || filter.starts_with('$') {
        return None;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let mut tokens = Vec::with_capacity(levels.len());
    for (i, level) in levels.iter().enumerate() {
        let token = match *level {
            "" => "/".to_owned(),
            "+" => "*".to_owned(),
            "#" if i == levels.len() - 1 => ">".to_owned(),
            "*" | ">" => return None,
            level if level.contains(['+', '#']) => return None,
            level if level.chars().any(char::is_whitespace) => return None,
            level => level.replace('.', "//"),
        };
        tokens.push(token);
    }
    let subject = tokens.join(".");
    let mut subjects = vec![subject];
    if levels.len() > 1 && levels.last() == Some(&"#") {
        // MQTT's `a/#` matches `a` too; NATS's `a.>` does not.
        tokens.pop();
        subjects.push(tokens.join("."));
    }
    Some(subjects)
}

/// What `who` may publish and subscribe to, as NATS permissions.
pub fn permissions(rules: &Permissions, who: &Identity<'_>) -> (Permission, Permission) {
    let (publish, subscribe) = rules.grants(who);
    let translated = |filters: Vec<String>| -> Vec<String> {
        let mut subjects: Vec<String> = filters
            .iter()
            .filter_map(|f| translate(f))
            .flatten()
            .collect();
        subjects.sort();
        subjects.dedup();
        subjects
    };
    let internal = || INTERNAL.iter().map(|s| s.to_string());
    // Checked at load (`nats` needs a prefix NATS can hold); nothing would be left out anyway.
    let prefix = translate(&format!("{}/#", rules.prefix())).unwrap_or_default();
    let publish = Permission {
        allow: translated(publish),
        deny: prefix
            .into_iter()
            .chain(internal())
            .chain([INTERNAL_PUBLISH.to_owned()])
            .collect(),
    };
    let subscribe = Permission {
        allow: translated(subscribe),
        deny: internal()
            .chain(MQTT_INTERNAL.iter().map(|s| s.to_string()))
            .collect(),
    };
    (closed_if_empty(publish), closed_if_empty(subscribe))
}

/// NATS reads an absent allow list as "everything": nothing allowed is said with a deny of all.
fn closed_if_empty(mut permission: Permission) -> Permission {
    if permission.allow.is_empty() {
        permission.deny = vec![">".into()];
    }
    permission
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ScopeSet;
    use crate::domain::acl::{AclAction, AclRule, LOCAL_TOKENS_READ};

    fn t(filter: &str) -> Option<Vec<String>> {
        translate(filter)
    }

    fn v(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn topics_and_filters_become_subjects_as_nats_converts_them() {
        assert_eq!(t("drivr/v1/acme/jwks"), v(&["drivr.v1.acme.jwks"]));
        assert_eq!(t("a/+/c"), v(&["a.*.c"]));
        assert_eq!(t("a/#"), v(&["a.>", "a"]));
        assert_eq!(t("a/+/#"), v(&["a.*.>", "a.*"]));
        assert_eq!(t("#"), v(&[">"]));
        assert_eq!(t("+"), v(&["*"]));
        assert_eq!(t("v1.2/x"), v(&["v1//2.x"]));
        assert_eq!(t("/a"), v(&["/.a"]));
        assert_eq!(t("a//b"), v(&["a./.b"]));
        assert_eq!(t("a/"), v(&["a./"]));
    }

    #[test]
    fn what_nats_would_read_otherwise_is_not_translated() {
        for bad in [
            "a/*",
            "a/>/b",
            ">",
            "a b/c",
            "a/\tb",
            "$SYS/#",
            "$JS/API/x",
            "",
            "a/#/b",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    fn rule(topic: &str, action: AclAction, scope: Option<&str>) -> AclRule {
        AclRule {
            topic: topic.into(),
            action,
            scope: scope.map(Into::into),
        }
    }

    fn shipped() -> Permissions {
        Permissions::new(
            "drivr/v1",
            vec![
                rule(
                    "tenants/{slug}/clients/{client_id}/#",
                    AclAction::PublishSubscribe,
                    None,
                ),
                rule(
                    "tenants/{slug}/users/{sub}/#",
                    AclAction::PublishSubscribe,
                    None,
                ),
                rule(
                    "tenants/{slug}/systems/{system}/#",
                    AclAction::Subscribe,
                    None,
                ),
                rule("sensors/{slug}/#", AclAction::Publish, Some("sensor:write")),
                rule("everything/#", AclAction::PublishSubscribe, Some("admin")),
            ],
        )
        .unwrap()
    }

    fn device<'a>(id: &'a str, system: Option<&'a str>, scopes: &'a ScopeSet) -> Identity<'a> {
        Identity {
            slug: "acme",
            client_id: id,
            sub: id,
            system,
            scopes,
        }
    }

    #[test]
    fn a_bound_device_gets_its_tree_its_systems_topics_and_the_builtins() {
        let none = ScopeSet::default();
        let (publish, subscribe) = permissions(&shipped(), &device("dev", Some("s1"), &none));
        assert_eq!(
            publish.allow,
            [
                "tenants.acme.clients.dev",
                "tenants.acme.clients.dev.>",
                "tenants.acme.users.dev",
                "tenants.acme.users.dev.>",
            ]
        );
        assert!(publish.deny.contains(&"drivr.v1".to_string()));
        assert!(publish.deny.contains(&"drivr.v1.>".to_string()));
        assert!(publish.deny.contains(&"$JS.>".to_string()));
        assert_eq!(
            subscribe.allow,
            [
                "drivr.v1.acme.authorization.localApiTokens.s1",
                "drivr.v1.acme.jwks",
                "drivr.v1.acme.jwks.signed",
                "drivr.v1.acme.statuslists.s1",
                "tenants.acme.clients.dev",
                "tenants.acme.clients.dev.>",
                "tenants.acme.systems.s1",
                "tenants.acme.systems.s1.>",
                "tenants.acme.users.dev",
                "tenants.acme.users.dev.>",
            ]
        );
        assert!(publish.deny.contains(&"$MQTT.>".to_string()));
        assert!(!subscribe.deny.contains(&"$MQTT.>".to_string()));
        assert!(subscribe.deny.contains(&"$MQTT.sess.>".to_string()));
        assert!(!subscribe.deny.contains(&">".to_string()));
    }

    #[test]
    fn a_person_gets_the_sub_tree_not_the_apps_and_a_reader_every_list() {
        let scopes = ScopeSet::parse(LOCAL_TOKENS_READ).unwrap();
        let ada = Identity {
            slug: "acme",
            client_id: "app",
            sub: "u-ada",
            system: Some("s1"),
            scopes: &scopes,
        };
        let (publish, subscribe) = permissions(&shipped(), &ada);
        assert_eq!(
            publish.allow,
            ["tenants.acme.users.u-ada", "tenants.acme.users.u-ada.>"]
        );
        assert!(
            subscribe
                .allow
                .contains(&"drivr.v1.acme.authorization.localApiTokens.*".to_string())
        );
        assert!(
            subscribe
                .allow
                .contains(&"drivr.v1.acme.statuslists.*".to_string())
        );
        assert!(!subscribe.allow.iter().any(|s| s.contains("systems")));
        assert!(!subscribe.allow.iter().any(|s| s.contains("clients")));
    }

    #[test]
    fn scoped_rules_count_only_with_their_scope() {
        let with = ScopeSet::parse("sensor:write admin").unwrap();
        let (publish, subscribe) = permissions(&shipped(), &device("dev", None, &with));
        assert!(publish.allow.contains(&"sensors.acme.>".to_string()));
        assert!(publish.allow.contains(&"everything.>".to_string()));
        assert!(subscribe.allow.contains(&"everything.>".to_string()));
        assert!(!subscribe.allow.contains(&"sensors.acme.>".to_string()));
        let none = ScopeSet::default();
        let (publish, _) = permissions(&shipped(), &device("dev", None, &none));
        assert!(!publish.allow.iter().any(|s| s.starts_with("sensors")));
    }

    #[test]
    fn identity_values_nats_would_read_as_wildcards_fill_nothing() {
        let none = ScopeSet::default();
        for evil in ["*", ">", "a b"] {
            let (publish, subscribe) = permissions(&shipped(), &device(evil, Some(evil), &none));
            for subject in publish.allow.iter().chain(&subscribe.allow) {
                for level in [
                    "clients",
                    "users",
                    "systems",
                    "localApiTokens",
                    "statuslists",
                ] {
                    assert!(
                        !subject.contains(&format!("{level}.{evil}")),
                        "{evil:?} gave {subject}"
                    );
                }
            }
            // Only the tenant's JWKS topics are left.
            assert_eq!(
                subscribe.allow,
                ["drivr.v1.acme.jwks", "drivr.v1.acme.jwks.signed"]
            );
            assert_eq!(publish.deny, [">"]);
        }
        // A `.` in a value stays inside its level.
        let (publish, _) = permissions(&shipped(), &device("a.b", None, &none));
        assert!(
            publish
                .allow
                .contains(&"tenants.acme.clients.a//b.>".to_string())
        );
    }

    #[test]
    fn nothing_allowed_is_said_as_a_deny_of_everything() {
        let none = ScopeSet::default();
        let bare = Permissions::new("drivr/v1", vec![]).unwrap();
        let (publish, subscribe) = permissions(&bare, &device("dev", None, &none));
        assert!(publish.allow.is_empty());
        assert_eq!(publish.deny, [">"]);
        assert_eq!(
            subscribe.allow,
            ["drivr.v1.acme.jwks", "drivr.v1.acme.jwks.signed"]
        );
    }

    #[test]
    fn a_rule_for_everything_still_denies_the_prefix_and_the_internals() {
        let none = ScopeSet::default();
        let all = Permissions::new(
            "drivr/v1",
            vec![rule("#", AclAction::PublishSubscribe, None)],
        )
        .unwrap();
        let (publish, subscribe) = permissions(&all, &device("dev", None, &none));
        assert_eq!(publish.allow, [">"]);
        for denied in ["drivr.v1", "drivr.v1.>", "$JS.>", "$MQTT.>", "$SYS.>"] {
            assert!(publish.deny.contains(&denied.to_string()), "{denied}");
        }
        assert!(subscribe.allow.contains(&">".to_string()));
        for denied in [
            "$JS.>",
            "$SYS.>",
            "$MQTT.sess.>",
            "$MQTT.rmsgs.>",
            "$MQTT.msgs.>",
        ] {
            assert!(subscribe.deny.contains(&denied.to_string()), "{denied}");
        }
        // The server's own QoS 1 and 2 deliveries to the client stay possible.
        assert!(
            !subscribe
                .deny
                .iter()
                .any(|d| d.starts_with("$MQTT.sub") || d == "$MQTT.>")
        );
    }
}
