//! The auth callout (NATS ADR-26, SPEC §13): every CONNECT to the cluster is handed to lanyard
//! on `$SYS.REQ.USER.AUTH`, in queue group `lanyard`, so each request reaches one lanyard node.
//!
//! The password is checked exactly as at lanyard's own broker ([`Authority::verify_bearer`]:
//! signature, issuer, audience, time, revocation, client and person still there); only MQTT
//! connections are admitted; the tenant must have a NATS account (`nats.accounts`). The answer
//! is a user JWT in the tenant's account whose `exp` is the token's and whose permissions are
//! SPEC §4's, translated ([`subjects`](super::subjects)). Its `name` records who holds the
//! connection ([`Holder`]), which is how the enforcer finds it again on any node. A client id
//! held by a live connection of another principal is refused ([`Holders`]). A request the server
//! has stopped waiting for is not answered: under a burst, the ones still wanted go first.
//! A refusal reaches the client as CONNACK `0x05`; its reason is logged here, never the
//! password.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::holders::{Holder, Holders};
use super::jwt::{self, AuthorizationRequest, Issuer, User};
use super::subjects;
use crate::authority::tokens::MAX_BEARER_LEN;
use crate::authority::{Authority, TokenRejected};
use crate::domain::acl::Permissions;
use crate::metrics::Metrics;

/// A request the server stopped waiting for this long ago is not answered; the margin allows
/// for the clocks of lanyard and the server differing a little.
const LATE_MARGIN_SECS: i64 = 2;

pub(super) struct Callout {
    pub authority: Arc<Authority>,
    pub metrics: Arc<Metrics>,
    pub permissions: Permissions,
    pub issuer: Issuer,
    /// The largest message a connection may publish (`mqtt.max_packet_size`).
    pub max_payload: i64,
    /// Tenant slug → NATS account.
    pub accounts: BTreeMap<String, String>,
    /// Who holds each client id.
    pub holders: Arc<Holders>,
}

impl Callout {
    /// The signed answer to a request; None when the request cannot be read (the server then
    /// times out, which refuses the connection).
    pub async fn answer(&self, payload: &[u8]) -> Option<String> {
        let request = match jwt::read_request(payload) {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!("nats callout: a request was not read: {e}");
                self.metrics.nats_callout("unreadable");
                return None;
            }
        };
        // The server stopped waiting (its callout timeout, 2 s by default): an answer would
        // be signed for nobody. Under a burst, the requests still wanted are answered first.
        if request
            .exp
            .is_some_and(|exp| exp + LATE_MARGIN_SECS < unix_now())
        {
            self.metrics.nats_callout("late");
            return None;
        }
        let decision = self.decide(&request).await;
        let now = self.authority.now();
        let info = &request.nats.client_info;
        match &decision {
            Ok(user) => {
                self.metrics.nats_callout("admitted");
                tracing::debug!(
                    server = %request.nats.server_id.name,
                    client = %info.mqtt_id,
                    account = %user.account,
                    "nats callout: admitted"
                );
            }
            Err((outcome, reason)) => {
                self.metrics.nats_callout(outcome);
                tracing::info!(
                    server = %request.nats.server_id.name,
                    host = %info.host,
                    client = %info.mqtt_id,
                    kind = %info.kind,
                    "nats callout: refused: {reason}"
                );
            }
        }
        let answer = decision.as_ref().map_err(|(_, reason)| reason.as_str());
        Some(jwt::response(&self.issuer, &request, answer, now))
    }

    async fn decide(&self, request: &AuthorizationRequest) -> Result<User, (&'static str, String)> {
        let nats = &request.nats;
        // Auth callout users are not held to MQTT by `allowed_connection_types`: a device
        // token must not open the cluster's NATS protocol.
        if nats.client_info.kind != "mqtt" {
            return Err((
                "not_mqtt",
                format!(
                    "a {:?} connection; only MQTT connections are admitted",
                    nats.client_info.kind
                ),
            ));
        }
        let password = nats.connect_opts.pass.as_str();
        if password.is_empty() || password.len() > MAX_BEARER_LEN {
            return Err(("bad_token", "no usable password".into()));
        }
        let known = match self.authority.verify_bearer(password).await {
            Ok(known) => known,
            Err(TokenRejected::Unavailable(cause)) => {
                return Err((
                    "unavailable",
                    format!("the token could not be checked: {cause}"),
                ));
            }
            Err(e) => return Err(("bad_token", e.to_string())),
        };
        // What the enforcer could not follow (an actor deleted, a grant revoked in another
        // tenant) is not admitted: such tokens connect to lanyard's own broker.
        if known.verified.claims.act.is_some() || known.verified.claims.app.is_some() {
            return Err((
                "bad_token",
                "a token that names an actor, or another tenant's application, is not admitted here; connect to lanyard's own broker".into(),
            ));
        }
        let slug = known.tenant.slug.as_str();
        let Some(account) = self.accounts.get(slug) else {
            return Err((
                "no_account",
                format!("tenant {slug} has no NATS account (nats.accounts)"),
            ));
        };
        let claims = &known.verified.claims;
        let identity = known.identity();
        let holder = Holder {
            jti: claims.jti.clone(),
            client_id: claims.client_id.clone(),
            sub: claims.sub.clone(),
            kid: known.verified.kid.clone(),
        };
        // MQTT lets a second CONNECT take a client id over; lanyard only lets its own
        // principal do it (SPEC §4).
        let mqtt_id = &nats.client_info.mqtt_id;
        if self.holders.held_by_other(account, mqtt_id, &holder) {
            return Err((
                "client_id_held",
                format!("client id {mqtt_id:?} is held by another principal"),
            ));
        }
        let (publish, subscribe) = subjects::permissions(&self.permissions, &identity);
        Ok(User {
            account: account.clone(),
            name: serde_json::to_string(&holder).expect("a holder serialises"),
            expires: claims.exp,
            max_payload: self.max_payload,
            publish,
            subscribe,
        })
    }
}

/// The wall clock, which the server's timeout follows.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
