//! Identifiers of what lanyard keeps: tenants, clients, people, systems, roles and local tokens.
//!
//! Each is its own type, so one cannot be passed where another is meant, and each is valid by
//! construction: parsed where it comes in (a GraphQL `UUID`, a CLI argument), generated for a
//! new record, or read back from the database, which holds only ids these types wrote. An id
//! reads as its text (`Deref<Target = str>`), the form the database, the tokens and the MQTT
//! topics carry; a UUID id also gives its [`Uuid`] to the doors that show one.

use std::fmt;
use std::ops::Deref;

use uuid::Uuid;

/// Text that is not an id of the kind asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown:?} is not a {what} id: {rule}")]
pub struct InvalidId {
    what: &'static str,
    shown: String,
    rule: &'static str,
}

impl InvalidId {
    fn new(what: &'static str, text: &str, rule: &'static str) -> Self {
        InvalidId {
            what,
            shown: text.chars().take(80).collect(),
            rule,
        }
    }
}

/// What every id type shares: the text, its comparisons and conversions.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// An id read back from the database, which only holds ids of this type.
            pub fn stored(text: String) -> Self {
                debug_assert!(Self::parse(&text).is_ok(), "stored {text:?}");
                $name(text)
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        // Hash and equality are the text's, so a map keyed by ids is searched with a `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(text: String) -> Result<Self, InvalidId> {
                Self::parse(&text)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(text: &str) -> Result<Self, InvalidId> {
                Self::parse(text)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }
    };
}

/// An id that is a UUID, kept in its hyphenated lower-case form.
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        id_type!($(#[$doc])* $name);

        impl $name {
            /// A new random id.
            pub fn generate() -> Self {
                $name(Uuid::new_v4().to_string())
            }

            /// Any form of UUID; kept hyphenated and lower-case, as stored.
            pub fn parse(text: &str) -> Result<Self, InvalidId> {
                Uuid::parse_str(text)
                    .map(Self::from)
                    .map_err(|_| InvalidId::new($what, text, "it is not a UUID"))
            }

            pub fn uuid(&self) -> Uuid {
                Uuid::parse_str(&self.0).expect("a UUID id holds a UUID")
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                $name(uuid.hyphenated().to_string())
            }
        }
    };
}

uuid_id!(
    /// A tenant's id (its slug is what the world sees).
    TenantId,
    "tenant"
);
uuid_id!(
    /// A person's id: the `sub` of their tokens.
    UserId,
    "user"
);
uuid_id!(
    /// A system's id: the audience of its local API tokens.
    SystemId,
    "system"
);
uuid_id!(
    /// A role's id.
    RoleId,
    "role"
);
uuid_id!(
    /// A local API token's id: its `jti`.
    LocalTokenId,
    "local token"
);

id_type!(
    /// An OAuth client's `client_id`: `[A-Za-z0-9._-]{3,64}`, chosen or generated.
    ClientId
);

impl ClientId {
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        let valid = (3..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(ClientId(text.to_owned()))
        } else {
            Err(InvalidId::new(
                "client",
                text,
                "a client_id is 3 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_ids_take_any_uuid_form_and_keep_the_stored_one() {
        let id = UserId::parse("6FA459EA-EE8A-3CA4-894E-DB77E160355E").unwrap();
        assert_eq!(id, "6fa459ea-ee8a-3ca4-894e-db77e160355e");
        assert_eq!(id.uuid().to_string(), id.as_str());
        let generated = SystemId::generate();
        assert_eq!(SystemId::parse(&generated).unwrap(), generated);
    }

    #[test]
    fn refuses_what_is_not_an_id_and_says_which() {
        let e = SystemId::parse("00000000-0000").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"00000000-0000\" is not a system id: it is not a UUID"
        );
        assert!(UserId::parse("").is_err());
        for bad in ["ab", "a b c", "ünï", &"x".repeat(65), "a/b"] {
            assert!(ClientId::parse(bad).is_err(), "{bad}");
        }
        for good in ["abc", "demo-app", "A.b_c-9"] {
            assert_eq!(ClientId::parse(good).unwrap(), good);
        }
    }

    #[test]
    fn reads_back_from_json_only_when_valid() {
        let id: TenantId =
            serde_json::from_str("\"6fa459ea-ee8a-3ca4-894e-db77e160355e\"").unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"6fa459ea-ee8a-3ca4-894e-db77e160355e\""
        );
        assert!(serde_json::from_str::<TenantId>("\"nope\"").is_err());
    }
}
