//! An energy-management gateway's view: learn the tenant's keys and the system's token list from
//! lanyard over MQTT, then decide offline whether a local API token opens the door.
//!
//! ```sh
//! export CLIENT_ID=demo-device CLIENT_SECRET=…     # as the demo seed printed them
//! cargo run --example ems_device -- "$LOCAL_TOKEN"
//! ```
//! The gateway signs in with `client_credentials` (`ISSUER`, default
//! `http://127.0.0.1:8080/t/demo`), connects to MQTT (`MQTT`, default `127.0.0.1:1883`) with the
//! token as password, takes the retained JWKS and its system's list, and disconnects. Then, with
//! no network, it checks the local token: the `CLOUD-` prefix, the RS256 signature by a key of
//! the JWKS, `iss`, `aud` = its own system, `nbf`/`exp`, and the token's status on the list.

use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

const PREFIX: &str = "CLOUD-";
const TOPIC_PREFIX: &str = "drivr/v1";

#[tokio::main]
async fn main() -> ExitCode {
    let Some(local_token) = std::env::args().nth(1) else {
        eprintln!("usage: ems_device LOCAL_TOKEN   (with CLIENT_ID and CLIENT_SECRET set)");
        return ExitCode::from(2);
    };
    let issuer = std::env::var("ISSUER").unwrap_or_else(|_| "http://127.0.0.1:8080/t/demo".into());
    let mqtt = std::env::var("MQTT").unwrap_or_else(|_| "127.0.0.1:1883".into());
    let (Ok(client_id), Ok(secret)) = (std::env::var("CLIENT_ID"), std::env::var("CLIENT_SECRET"))
    else {
        eprintln!("set CLIENT_ID and CLIENT_SECRET to the gateway's client credentials");
        return ExitCode::from(2);
    };
    let online = match learn(&issuer, &mqtt, &client_id, &secret).await {
        Ok(state) => state,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "gateway of system {} knows {} key(s) and {} listed token(s); now offline",
        online.system,
        online.jwks.keys.len(),
        online.list.len()
    );
    match check(&online, &issuer, local_token.trim()) {
        Ok(who) => {
            println!("ACCEPTED: {who}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("REFUSED: {why}");
            ExitCode::from(1)
        }
    }
}

struct Learned {
    system: String,
    jwks: JwkSet,
    list: Vec<Value>,
}

/// Online: a client_credentials token, then the retained JWKS and token list over MQTT.
async fn learn(issuer: &str, mqtt: &str, client_id: &str, secret: &str) -> Result<Learned, String> {
    let res = reqwest::Client::new()
        .post(format!("{issuer}/oauth2/token"))
        .basic_auth(client_id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .map_err(|e| format!("cannot reach {issuer}: {e}"))?;
    let body: Value = res.json().await.map_err(|e| e.to_string())?;
    let token = body["access_token"]
        .as_str()
        .ok_or_else(|| format!("no token: {body}"))?
        .to_owned();
    let claims: Value = token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or("the access token is not a JWT")?;
    let slug = claims["aud"].as_str().ok_or("no aud")?.to_owned();
    let system = claims["system"]
        .as_str()
        .ok_or("this client is not bound to a system")?
        .to_owned();

    let (host, port) = mqtt.rsplit_once(':').ok_or("MQTT must be HOST:PORT")?;
    let mut options = MqttOptions::new(
        format!("{client_id}-ems"),
        host,
        port.parse().map_err(|_| "bad MQTT port")?,
    );
    options.set_credentials(client_id, token);
    options.set_keep_alive(Duration::from_secs(30));
    // A list holds about 1.3 KB per token; rumqttc's default limit is 10 KiB.
    options.set_max_packet_size(4 << 20, 64 << 10);
    let (client, mut events) = AsyncClient::new(options, 10);
    let jwks_topic = format!("{TOPIC_PREFIX}/{slug}/jwks");
    let list_topic = format!("{TOPIC_PREFIX}/{slug}/authorization/localApiTokens/{system}");
    client
        .subscribe(&jwks_topic, QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    client
        .subscribe(&list_topic, QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    let (mut jwks, mut list) = (None, None);
    let wait = tokio::time::timeout(Duration::from_secs(5), async {
        while jwks.is_none() || list.is_none() {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == jwks_topic => {
                    jwks = serde_json::from_slice::<JwkSet>(&p.payload).ok();
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == list_topic => {
                    list = serde_json::from_slice::<Vec<Value>>(&p.payload).ok();
                }
                Ok(_) => {}
                Err(e) => return Err(format!("MQTT: {e}")),
            }
        }
        Ok(())
    })
    .await;
    let _ = client.disconnect().await;
    wait.map_err(|_| "the retained JWKS and list did not arrive within 5 s".to_owned())??;
    Ok(Learned {
        system,
        jwks: jwks.ok_or("no JWKS")?,
        list: list.ok_or("no list")?,
    })
}

/// Offline: everything the gateway needs is in `state`.
fn check(state: &Learned, issuer: &str, presented: &str) -> Result<String, String> {
    let jwt = presented
        .strip_prefix(PREFIX)
        .ok_or(format!("not a local API token (no {PREFIX} prefix)"))?;
    let header = decode_header(jwt).map_err(|e| format!("malformed: {e}"))?;
    let kid = header.kid.ok_or("no kid in the header")?;
    let jwk = state.jwks.find(&kid).ok_or(format!(
        "signed by key {kid}, which the tenant does not publish"
    ))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[&state.system]);
    validation.set_required_spec_claims(&["iss", "aud", "sub"]);
    validation.validate_nbf = true;
    let claims = decode::<Value>(jwt, &key, &validation)
        .map_err(|e| format!("the token does not verify: {e}"))?
        .claims;
    let jti = claims["jti"].as_str().ok_or("no jti")?;
    let entry = state
        .list
        .iter()
        .find(|e| e["uuid"] == jti)
        .ok_or("not on this system's list (unknown here, or expired)")?;
    if entry["status"] != "ACTIVATED" {
        return Err(format!(
            "the token was {}",
            entry["status"].as_str().unwrap_or("?")
        ));
    }
    let roles: Vec<&str> = claims["roles"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    Ok(format!(
        "{} ({}) with roles {:?}{}",
        claims["name"].as_str().unwrap_or("?"),
        claims["sub"].as_str().unwrap_or("?"),
        roles,
        claims["exp"]
            .as_i64()
            .map(|e| format!(", until {e}"))
            .unwrap_or_else(|| ", permanently".into())
    ))
}
