//! The claims of lanyard's access tokens (SPEC §3, RFC 9068 profile with `typ: at+jwt`).

use serde::{Deserialize, Serialize};

use super::UnixTime;

/// The `typ` header of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// A user's uuid, or the `client_id` for client-credentials tokens.
    pub sub: String,
    /// The tenant's slug.
    pub aud: String,
    pub client_id: String,
    /// Space-separated scopes.
    pub scope: String,
    pub iat: UnixTime,
    pub nbf: UnixTime,
    pub exp: UnixTime,
    pub jti: String,
    /// The system a system-bound client belongs to; in a delegation's token (with `share`),
    /// the one system it may mint for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Who acts for the subject (RFC 8693 §4.1): set by token exchange with an actor token and
    /// on a delegation's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Act>,
    /// Who may exchange this token without an actor token (RFC 8693 §4.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_act: Option<MayAct>,
    /// The share a delegation's token was issued under (SPEC §11): such a token can do nothing
    /// but mint local API tokens for `system` under that share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// A technical token's application (SPEC §11): its `client_id` is a client of the host
    /// tenant, not of the tenant that issued the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppClaim>,
    /// Issued by token exchange (RFC 8693): the token acts for its subject only until its own
    /// `exp`, and what it mints ends with it. Set on impersonation too, which names no actor.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exchanged: bool,
}

impl AccessClaims {
    /// Claims with none of the optional members.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        iss: String,
        sub: String,
        aud: String,
        client_id: String,
        scope: String,
        iat: UnixTime,
        exp: UnixTime,
        jti: String,
    ) -> AccessClaims {
        AccessClaims {
            iss,
            sub,
            aud,
            client_id,
            scope,
            iat,
            nbf: iat,
            exp,
            jti,
            system: None,
            act: None,
            may_act: None,
            share: None,
            app: None,
            exchanged: false,
        }
    }

    /// A delegation's token, which can only mint local API tokens under its share.
    pub fn is_delegation(&self) -> bool {
        self.share.is_some()
    }

    /// A token someone acts through: issued by token exchange, or naming an actor.
    pub fn is_acted_through(&self) -> bool {
        self.exchanged || self.act.is_some()
    }
}

/// The actor claim (RFC 8693 §4.1): the party acting, and whoever acted for it before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Act {
    /// A person's uuid, or a client's id.
    pub sub: String,
    /// The acting client, when the actor is a client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The previous actor, when the subject token was itself a delegation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Act>>,
}

/// The longest chain of actors a token may carry: the current actor and three before it.
pub const MAX_ACT_DEPTH: usize = 4;

impl Act {
    /// Whether the actor is a client acting on its own (not a person).
    pub fn is_client(&self) -> bool {
        self.client_id.as_deref() == Some(self.sub.as_str())
    }

    /// This actor, then each one before it.
    pub fn chain(&self) -> impl Iterator<Item = &Act> {
        std::iter::successors(Some(self), |a| a.act.as_deref())
    }

    /// Each actor, the current one first, as audit events name them: `user:ID`, `client:ID`.
    pub fn named(&self) -> impl Iterator<Item = String> {
        self.chain().map(|a| {
            let kind = if a.is_client() { "client" } else { "user" };
            format!("{kind}:{}", a.sub)
        })
    }

    /// Whether `id` (a person's uuid or a client's id) is any actor of the chain.
    pub fn names(&self, id: &str) -> bool {
        self.chain().any(|a| a.sub == id)
    }

    /// This chain with `earliest` added as the first actor of all.
    pub fn preceded_by(mut self, earliest: Act) -> Act {
        let mut last = &mut self;
        while last.act.is_some() {
            last = last.act.as_deref_mut().expect("checked");
        }
        last.act = Some(Box::new(earliest));
        self
    }
}

/// The party that may act for the token's subject (RFC 8693 §4.4): a client of the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MayAct {
    pub client_id: String,
}

/// A technical token's application (SPEC §11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppClaim {
    pub name: String,
    pub version: String,
    /// The slug of the tenant the application is registered in.
    pub host_tenant: String,
    /// The grant of the issuing tenant the token was issued under: a grant made again is
    /// another, and the tokens of the one before stay refused.
    pub grant: String,
}
