//! Topic permissions (SPEC §4): who may publish and subscribe to what.
//!
//! Default deny. Built in: nobody but lanyard publishes under `{topic_prefix}/`; every client of
//! a tenant may subscribe to the tenant's JWKS topic; a system's token list may be subscribed by
//! the client bound to the system and by tokens carrying `lanyard:local-tokens:read`. Operators
//! add rules (`[[mqtt.acl]]`) whose topic templates name the connecting identity with
//! `{slug}`, `{client_id}`, `{sub}` and `{system}`. An identity value that is empty or holds
//! `+`, `#`, `/` or NUL fills no placeholder, so nobody widens a rule by choosing a strange name.
//!
//! `{client_id}` fills only for a client's own token (`client_credentials`, where `sub` is the
//! `client_id`): every person signing in through one app carries that app's `client_id`, so a
//! tree keyed by it would be shared by all of them. A person's token leaves `{client_id}`
//! unfilled, and the rule does not apply to it; people's own trees are keyed by `{sub}`. Likewise
//! a system binding counts for the bound client's own token only (`{system}` and the built-in
//! grant of the system's token list): a person signing in through a bound app is not the device.
//!
//! A subscription is granted only when one rule alone covers every topic its filter can match
//! ([`covers`]); a filter that only the union of several rules would cover is refused, which
//! can refuse too much but never grants too much.

use serde::{Deserialize, Serialize};

use super::ScopeSet;
use super::scope::Scope;
use super::topic::{TopicFilter, TopicName, covers, is_valid_filter, matches};

/// The scope that lets a token read every system's token list of its tenant.
pub const LOCAL_TOKENS_READ: &str = "lanyard:local-tokens:read";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AclAction {
    Publish,
    Subscribe,
    PublishSubscribe,
}

impl AclAction {
    fn publishes(self) -> bool {
        matches!(self, AclAction::Publish | AclAction::PublishSubscribe)
    }

    fn subscribes(self) -> bool {
        matches!(self, AclAction::Subscribe | AclAction::PublishSubscribe)
    }
}

/// One `[[mqtt.acl]]` rule as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// A topic filter template, e.g. `tenants/{slug}/clients/{client_id}/#`.
    pub topic: String,
    pub action: AclAction,
    /// A scope the token must carry for the rule to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

const PLACEHOLDERS: [&str; 4] = ["{slug}", "{client_id}", "{sub}", "{system}"];

impl AclRule {
    /// Checks the template: known placeholders only, each filling a whole level, and a valid
    /// filter once filled.
    pub fn validate(&self) -> Result<(), String> {
        let mut probe = self.topic.clone();
        for p in PLACEHOLDERS {
            probe = probe.replace(p, "x");
        }
        if probe.contains(['{', '}']) {
            return Err(format!(
                "mqtt.acl topic {:?} has an unknown placeholder; use {}",
                self.topic,
                PLACEHOLDERS.join(", ")
            ));
        }
        if !is_valid_filter(&probe) || probe.starts_with('$') {
            return Err(format!(
                "mqtt.acl topic {:?} is not a valid MQTT topic filter",
                self.topic
            ));
        }
        if let Some(scope) = &self.scope {
            Scope::parse(scope)
                .map_err(|e| format!("mqtt.acl topic {:?}: scope {e}", self.topic))?;
        }
        Ok(())
    }

    /// The rule's filter for `who`, or None when a placeholder cannot be filled.
    fn expand(&self, who: &Identity<'_>) -> Option<String> {
        let mut out = self.topic.clone();
        for (placeholder, value) in [
            ("{slug}", Some(who.slug)),
            ("{client_id}", who.own_client_id()),
            ("{sub}", Some(who.sub)),
            ("{system}", who.bound_system()),
        ] {
            if out.contains(placeholder) {
                out = out.replace(placeholder, safe_value(value?)?);
            }
        }
        Some(out)
    }

    fn applies_to(&self, who: &Identity<'_>) -> bool {
        self.scope
            .as_deref()
            .is_none_or(|s| who.scopes.contains_str(s))
    }
}

fn safe_value(value: &str) -> Option<&str> {
    (!value.is_empty() && !value.contains(['+', '#', '/', '\0'])).then_some(value)
}

/// Who is asking: taken from a verified access token.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub slug: &'a str,
    pub client_id: &'a str,
    pub sub: &'a str,
    pub system: Option<&'a str>,
    pub scopes: &'a ScopeSet,
}

impl<'a> Identity<'a> {
    /// The `client_id` when the token is the client's own (`client_credentials`: its `sub` is
    /// the `client_id`); None for a person's token, which names the app they signed in through.
    pub fn own_client_id(&self) -> Option<&'a str> {
        (self.sub == self.client_id).then_some(self.client_id)
    }

    /// The system the token's client is bound to, for the client's own token only: a binding
    /// marks the device, not the people who sign in through a bound app (SPEC §6), whatever
    /// claim their token carries.
    pub fn bound_system(&self) -> Option<&'a str> {
        self.own_client_id().and(self.system)
    }
}

/// The permission rules of one broker.
#[derive(Debug, Clone)]
pub struct Permissions {
    prefix: String,
    rules: Vec<AclRule>,
}

impl Permissions {
    pub fn new(topic_prefix: &str, rules: Vec<AclRule>) -> Result<Self, String> {
        for rule in &rules {
            rule.validate()?;
        }
        Ok(Permissions {
            prefix: topic_prefix.to_owned(),
            rules,
        })
    }

    /// Whether a topic lies in lanyard's own namespace, where only lanyard publishes.
    pub fn is_reserved(&self, topic: &str) -> bool {
        topic
            .strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    pub fn jwks_topic(&self, slug: &str) -> String {
        format!("{}/{slug}/jwks", self.prefix)
    }

    /// The tenant's signed key schedule (SPEC §10).
    pub fn key_schedule_topic(&self, slug: &str) -> String {
        format!("{}/{slug}/jwks/signed", self.prefix)
    }

    /// A system's Token Status List (SPEC §10), readable by whoever may read its token list.
    pub fn status_list_topic(&self, slug: &str, system: &str) -> String {
        format!("{}/{slug}/statuslists/{system}", self.prefix)
    }

    pub fn token_list_topic(&self, slug: &str, system: &str) -> String {
        format!(
            "{}/{slug}/authorization/localApiTokens/{system}",
            self.prefix
        )
    }

    /// Publishing (also as a will): never under the prefix or to `$` topics; else by a rule.
    pub fn may_publish(&self, who: &Identity<'_>, topic: &TopicName) -> bool {
        if topic.is_system() || self.is_reserved(topic.as_str()) {
            return false;
        }
        self.rules.iter().any(|rule| {
            rule.action.publishes()
                && rule.applies_to(who)
                && rule
                    .expand(who)
                    .is_some_and(|f| matches(topic.as_str(), &f))
        })
    }

    /// Subscribing: `$` filters never; else a built-in grant or a rule must cover the filter.
    pub fn may_subscribe(&self, who: &Identity<'_>, filter: &TopicFilter) -> bool {
        if filter.is_system() {
            return false;
        }
        let requested = filter.filter();
        if self
            .builtin_grants(who)
            .iter()
            .any(|g| covers(g, requested))
        {
            return true;
        }
        self.rules.iter().any(|rule| {
            rule.action.subscribes()
                && rule.applies_to(who)
                && rule.expand(who).is_some_and(|g| covers(&g, requested))
        })
    }

    /// The topic prefix, under which only lanyard publishes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every filter `who` may publish to and every filter it may subscribe to, built-in and by
    /// rule, for a broker that enforces them itself (a NATS cluster, SPEC §13). The denials of
    /// [`Permissions::may_publish`] (the prefix, `$` topics) are the caller's to add.
    pub fn grants(&self, who: &Identity<'_>) -> (Vec<String>, Vec<String>) {
        let mut publish = Vec::new();
        let mut subscribe = self.builtin_grants(who);
        for rule in self.rules.iter().filter(|rule| rule.applies_to(who)) {
            let Some(filter) = rule.expand(who) else {
                continue;
            };
            if rule.action.publishes() {
                publish.push(filter.clone());
            }
            if rule.action.subscribes() {
                subscribe.push(filter);
            }
        }
        (publish, subscribe)
    }

    fn builtin_grants(&self, who: &Identity<'_>) -> Vec<String> {
        let Some(slug) = safe_value(who.slug) else {
            return Vec::new();
        };
        let mut grants = vec![self.jwks_topic(slug), self.key_schedule_topic(slug)];
        if let Some(system) = who.bound_system().and_then(safe_value) {
            grants.push(self.token_list_topic(slug, system));
            grants.push(self.status_list_topic(slug, system));
        }
        if who.scopes.contains_str(LOCAL_TOKENS_READ) {
            grants.push(self.token_list_topic(slug, "+"));
            grants.push(self.status_list_topic(slug, "+"));
        }
        grants
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(topic: &str, action: AclAction, scope: Option<&str>) -> AclRule {
        AclRule {
            topic: topic.into(),
            action,
            scope: scope.map(Into::into),
        }
    }

    fn perms(rules: Vec<AclRule>) -> Permissions {
        Permissions::new("drivr/v1", rules).unwrap()
    }

    fn who<'a>(client_id: &'a str, system: Option<&'a str>, scopes: &'a ScopeSet) -> Identity<'a> {
        Identity {
            slug: "acme",
            client_id,
            sub: client_id,
            system,
            scopes,
        }
    }

    fn topic(t: &str) -> TopicName {
        TopicName::parse(t).unwrap()
    }

    fn filter(f: &str) -> TopicFilter {
        TopicFilter::parse(f).unwrap()
    }

    #[test]
    fn nobody_publishes_under_the_prefix_even_with_a_rule_for_it() {
        let p = perms(vec![rule("#", AclAction::PublishSubscribe, None)]);
        let none = ScopeSet::default();
        let me = who("dev", None, &none);
        assert!(!p.may_publish(&me, &topic("drivr/v1/acme/jwks")));
        assert!(!p.may_publish(&me, &topic("drivr/v1")));
        assert!(!p.may_publish(&me, &topic("$SYS/x")));
        assert!(p.may_publish(&me, &topic("drivr/v10")));
        assert!(p.may_publish(&me, &topic("other")));
    }

    #[test]
    fn the_builtin_grants_are_the_tenants_jwks_and_the_bound_systems_list() {
        let p = perms(vec![]);
        let none = ScopeSet::default();
        let bound = who("dev", Some("s1"), &none);
        assert!(p.may_subscribe(&bound, &filter("drivr/v1/acme/jwks")));
        assert!(!p.may_subscribe(&bound, &filter("drivr/v1/other/jwks")));
        assert!(!p.may_subscribe(&bound, &filter("drivr/v1/+/jwks")));
        assert!(p.may_subscribe(&bound, &filter("drivr/v1/acme/jwks/signed")));
        assert!(!p.may_subscribe(&bound, &filter("drivr/v1/other/jwks/signed")));
        assert!(!p.may_subscribe(&bound, &filter("drivr/v1/acme/jwks/#")));
        assert!(p.may_subscribe(&bound, &filter("drivr/v1/acme/statuslists/s1")));
        assert!(!p.may_subscribe(&bound, &filter("drivr/v1/acme/statuslists/s2")));
        assert!(!p.may_subscribe(&bound, &filter("drivr/v1/acme/statuslists/+")));
        assert!(p.may_subscribe(
            &bound,
            &filter("drivr/v1/acme/authorization/localApiTokens/s1")
        ));
        assert!(!p.may_subscribe(
            &bound,
            &filter("drivr/v1/acme/authorization/localApiTokens/s2")
        ));
        assert!(!p.may_subscribe(
            &bound,
            &filter("drivr/v1/acme/authorization/localApiTokens/+")
        ));
        let reader_scopes = ScopeSet::parse(LOCAL_TOKENS_READ).unwrap();
        let reader = who("app", None, &reader_scopes);
        assert!(p.may_subscribe(
            &reader,
            &filter("drivr/v1/acme/authorization/localApiTokens/+")
        ));
        assert!(!p.may_subscribe(
            &reader,
            &filter("drivr/v1/acme/authorization/localApiTokens/#")
        ));
        assert!(p.may_subscribe(&reader, &filter("drivr/v1/acme/statuslists/+")));
        assert!(!p.may_subscribe(&reader, &filter("drivr/v1/other/statuslists/+")));
        assert!(!p.may_subscribe(&reader, &filter("#")));
        assert!(!p.may_publish(&reader, &topic("anything")));
    }

    #[test]
    fn rule_templates_fill_only_with_safe_identity_values() {
        let p = perms(vec![rule(
            "t/{slug}/{client_id}/#",
            AclAction::PublishSubscribe,
            None,
        )]);
        let none = ScopeSet::default();
        assert!(p.may_publish(&who("dev", None, &none), &topic("t/acme/dev/x")));
        assert!(!p.may_publish(&who("dev", None, &none), &topic("t/acme/other/x")));
        for evil in ["+", "#", "a/b", "", "a\0"] {
            let me = who(evil, None, &none);
            assert!(!p.may_publish(&me, &topic("t/acme/x/y")), "{evil:?}");
            assert!(!p.may_subscribe(&me, &filter("t/acme/+/#")), "{evil:?}");
        }
        let sys = perms(vec![rule("s/{system}", AclAction::Subscribe, None)]);
        assert!(!sys.may_subscribe(&who("dev", None, &none), &filter("s/x")));
        assert!(sys.may_subscribe(&who("dev", Some("x"), &none), &filter("s/x")));
        assert!(!sys.may_publish(&who("dev", Some("x"), &none), &topic("s/x")));
    }

    fn person<'a>(app: &'a str, sub: &'a str, scopes: &'a ScopeSet) -> Identity<'a> {
        Identity {
            slug: "acme",
            client_id: app,
            sub,
            system: None,
            scopes,
        }
    }

    #[test]
    fn a_client_id_tree_belongs_to_the_clients_own_tokens_not_to_people_of_the_app() {
        let p = perms(vec![rule(
            "tenants/{slug}/clients/{client_id}/#",
            AclAction::PublishSubscribe,
            None,
        )]);
        let none = ScopeSet::default();
        let device = who("app", None, &none);
        assert!(p.may_publish(&device, &topic("tenants/acme/clients/app/cmd")));
        assert!(p.may_subscribe(&device, &filter("tenants/acme/clients/app/#")));
        let ada = person("app", "u-ada", &none);
        assert!(!p.may_publish(&ada, &topic("tenants/acme/clients/app/cmd")));
        assert!(!p.may_subscribe(&ada, &filter("tenants/acme/clients/app/#")));
        assert!(!p.may_subscribe(&ada, &filter("tenants/acme/clients/app/cmd")));
    }

    #[test]
    fn a_binding_opens_the_systems_topics_to_the_device_not_to_people_of_the_app() {
        let p = perms(vec![rule(
            "tenants/{slug}/systems/{system}/#",
            AclAction::PublishSubscribe,
            None,
        )]);
        let none = ScopeSet::default();
        let list = filter("drivr/v1/acme/authorization/localApiTokens/s1");
        let device = who("app", Some("s1"), &none);
        assert!(p.may_subscribe(&device, &list));
        assert!(p.may_subscribe(&device, &filter("tenants/acme/systems/s1/#")));
        let ada = Identity {
            system: Some("s1"),
            ..person("app", "u-ada", &none)
        };
        assert!(!p.may_subscribe(&ada, &list));
        assert!(!p.may_subscribe(&ada, &filter("tenants/acme/systems/s1/#")));
        assert!(!p.may_publish(&ada, &topic("tenants/acme/systems/s1/unlock")));
    }

    #[test]
    fn people_of_one_app_each_get_their_own_sub_tree() {
        let p = perms(vec![
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
        ]);
        let none = ScopeSet::default();
        let ada = person("app", "u-ada", &none);
        let bob = person("app", "u-bob", &none);
        assert!(p.may_subscribe(&ada, &filter("tenants/acme/users/u-ada/#")));
        assert!(p.may_publish(&ada, &topic("tenants/acme/users/u-ada/lock")));
        assert!(!p.may_subscribe(&bob, &filter("tenants/acme/users/u-ada/#")));
        assert!(!p.may_publish(&bob, &topic("tenants/acme/users/u-ada/lock")));
        assert!(!p.may_subscribe(&bob, &filter("tenants/acme/users/+/lock")));
    }

    #[test]
    fn a_rule_grants_only_its_action() {
        let p = perms(vec![
            rule("up/#", AclAction::Publish, None),
            rule("down/#", AclAction::Subscribe, None),
        ]);
        let none = ScopeSet::default();
        let me = who("dev", None, &none);
        assert!(p.may_publish(&me, &topic("up/x")));
        assert!(!p.may_subscribe(&me, &filter("up/x")));
        assert!(p.may_subscribe(&me, &filter("down/x")));
        assert!(!p.may_publish(&me, &topic("down/x")));
    }

    #[test]
    fn dollar_topics_stay_closed_even_to_a_rule_an_identity_fills_with_one() {
        // A client id may begin with `$`: the rule it fills must still not open `$` topics.
        let p = perms(vec![
            rule("#", AclAction::PublishSubscribe, None),
            rule("{client_id}/#", AclAction::PublishSubscribe, None),
        ]);
        let none = ScopeSet::default();
        let dollar = who("$SYS", None, &none);
        assert!(!p.may_publish(&dollar, &topic("$SYS/x")));
        assert!(!p.may_subscribe(&dollar, &filter("$SYS/#")));
        assert!(!p.may_subscribe(&dollar, &filter("$share/g/$SYS/#")));
        let dev = who("dev", None, &none);
        assert!(!p.may_subscribe(&dev, &filter("$SYS/#")));
        assert!(p.may_subscribe(&dev, &filter("#")));
    }

    #[test]
    fn a_rule_with_a_scope_applies_only_to_tokens_carrying_it() {
        let p = perms(vec![rule("r/#", AclAction::Subscribe, Some("sensor:read"))]);
        let none = ScopeSet::default();
        let with = ScopeSet::parse("sensor:read").unwrap();
        assert!(!p.may_subscribe(&who("a", None, &none), &filter("r/x")));
        assert!(p.may_subscribe(&who("a", None, &with), &filter("r/x")));
        assert!(p.may_subscribe(&who("a", None, &with), &filter("$share/g/r/#")));
        assert!(!p.may_subscribe(&who("a", None, &with), &filter("$share/g/#")));
    }

    #[test]
    fn bad_templates_are_refused_at_load() {
        for bad in ["a/{nope}", "a/#/b", "a/{slug}x+", "$SYS/#", ""] {
            assert!(
                Permissions::new("p", vec![rule(bad, AclAction::Publish, None)]).is_err(),
                "{bad:?}"
            );
        }
        let bad_scope = rule("a", AclAction::Publish, Some("not a scope"));
        assert!(Permissions::new("p", vec![bad_scope]).is_err());
    }
}
