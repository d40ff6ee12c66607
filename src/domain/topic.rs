//! MQTT topic names and filters (MQTT 3.1.1 §4.7, 5.0 §4.7), and the one question permissions
//! ask of them: does a filter grant every topic another filter can match?

use std::fmt;

/// The longest topic or filter accepted (the UTF-8 string length limit of MQTT).
const MAX_LEN: usize = 65_535;

/// A topic a message is published to: no wildcards, no NUL, not empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicName(String);

/// A subscription filter: `+` fills one whole level, `#` only the whole last level.
/// A shared subscription (`$share/{group}/{filter}`) is kept apart from its filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    filter: String,
    share_group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid MQTT topic")]
pub struct InvalidTopic(pub String);

/// `mqtt.topic_prefix`: the topic levels under which lanyard publishes (`drivr/v1`). No
/// wildcards, no empty levels, not starting with `$`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicPrefix(String);

/// A `mqtt.topic_prefix` that cannot be one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} must be topic levels like \"drivr/v1\": no wildcards, no empty levels, not starting with '$'"
)]
pub struct InvalidPrefix(String);

impl TopicPrefix {
    pub fn parse(input: &str) -> Result<Self, InvalidPrefix> {
        let valid = !input.is_empty()
            && !input.starts_with('$')
            && !input.contains(['+', '#', '\0'])
            && input.split('/').all(|level| !level.is_empty());
        if valid {
            Ok(TopicPrefix(input.to_owned()))
        } else {
            Err(InvalidPrefix(input.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TopicPrefix {
    type Error = InvalidPrefix;
    fn try_from(text: String) -> Result<Self, InvalidPrefix> {
        Self::parse(&text)
    }
}

impl From<TopicPrefix> for String {
    fn from(prefix: TopicPrefix) -> String {
        prefix.0
    }
}

impl TopicName {
    pub fn parse(input: &str) -> Result<Self, InvalidTopic> {
        if input.is_empty() || input.len() > MAX_LEN || input.contains(['+', '#', '\0']) {
            return Err(InvalidTopic(input.to_owned()));
        }
        Ok(TopicName(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Topics beginning with `$` are the server's own (MQTT §4.7.2).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TopicFilter {
    pub fn parse(input: &str) -> Result<Self, InvalidTopic> {
        let invalid = || InvalidTopic(input.to_owned());
        if input.len() > MAX_LEN || input.contains('\0') {
            return Err(invalid());
        }
        let (share_group, filter) = match input.strip_prefix("$share/") {
            Some(rest) => {
                let (group, filter) = rest.split_once('/').ok_or_else(invalid)?;
                if group.is_empty() || group.contains(['+', '#']) {
                    return Err(invalid());
                }
                (Some(group.to_owned()), filter)
            }
            None => (None, input),
        };
        if !is_valid_filter(filter) {
            return Err(invalid());
        }
        Ok(TopicFilter {
            filter: filter.to_owned(),
            share_group,
        })
    }

    /// The filter proper, without a `$share/{group}/` prefix.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    pub fn share_group(&self) -> Option<&str> {
        self.share_group.as_deref()
    }

    /// A filter on the server's own `$` topics (other than a shared subscription).
    pub fn is_system(&self) -> bool {
        self.filter.starts_with('$')
    }
}

/// MQTT §4.7.1: `#` alone as the last level, `+` alone in its level.
pub fn is_valid_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, level)| {
        let wild_ok = !level.contains(['+', '#']) || level.len() == 1;
        let hash_last = *level != "#" || i == last;
        wild_ok && hash_last
    })
}

/// Whether `topic` is matched by `filter` (MQTT §4.7). Wildcards at the start of a filter do
/// not match `$` topics.
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match topic_levels.next() {
            Some(t) if f == "+" || f == t => continue,
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// Whether every topic that `requested` can match is also matched by `granted`: a subscription
/// to `requested` then receives nothing `granted` does not allow. Both must be valid filters.
pub fn covers(granted: &str, requested: &str) -> bool {
    let mut granted_levels = granted.split('/');
    for r in requested.split('/') {
        match granted_levels.next() {
            Some("#") => return true,
            // `#` in the request also matches topics longer than any grant short of `#`.
            _ if r == "#" => return false,
            Some("+") => continue,
            Some(g) if r != "+" && g == r => continue,
            _ => return false,
        }
    }
    // `a/#` also matches `a` itself.
    match granted_levels.next() {
        None => true,
        Some("#") => granted_levels.next().is_none(),
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_refuse_wildcards_nul_and_emptiness() {
        assert!(TopicName::parse("a/b").is_ok());
        for bad in ["", "a/+", "a/#", "a\0b"] {
            assert!(TopicName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filters_follow_the_wildcard_rules() {
        for good in ["#", "+", "a/+/c", "a/#", "/a", "a//b", "$share/g/a/#"] {
            assert!(TopicFilter::parse(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "a/#/b",
            "a#",
            "a/b+",
            "$share/g",
            "$share//a",
            "$share/+/a",
            "a\0",
        ] {
            assert!(TopicFilter::parse(bad).is_err(), "{bad:?}");
        }
        let shared = TopicFilter::parse("$share/g/a/+").unwrap();
        assert_eq!(shared.filter(), "a/+");
        assert_eq!(shared.share_group(), Some("g"));
        assert!(TopicFilter::parse("$SYS/#").unwrap().is_system());
    }

    #[test]
    fn matching_follows_the_spec() {
        assert!(matches("a/b/c", "a/+/c"));
        assert!(matches("a/b/c", "a/#"));
        assert!(matches("a", "a/#"));
        assert!(!matches("a/b", "a/+/c"));
        assert!(!matches("a/b/c", "a/+"));
        assert!(!matches("$SYS/x", "#"));
        assert!(!matches("$SYS/x", "+/x"));
        assert!(matches("$SYS/x", "$SYS/#"));
    }

    #[test]
    fn a_grant_covers_a_request_only_if_it_matches_everything_the_request_can() {
        assert!(covers("a/b", "a/b"));
        assert!(covers("a/+", "a/b"));
        assert!(covers("a/+", "a/+"));
        assert!(covers("a/#", "a/b/+/#"));
        assert!(covers("a/#", "a"));
        assert!(covers("#", "#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/+", "a/b/c"));
        assert!(!covers("a/b/#", "a/+/c"));
        assert!(!covers("a/b", "#"));
        assert!(!covers("a/b", "a/b/c"));
        assert!(!covers("a/b/c", "a/b"));
        assert!(!covers("a/+/#", "a"));
    }
}
