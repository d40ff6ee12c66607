//! An energy-management gateway's view: learn the tenant's keys, its system's token list and its
//! status list from lanyard over MQTT, then decide offline whether a local API token opens the
//! door (SPEC §10). What it believes is kept in a state file between runs, so it can decide with
//! no network at all.
//!
//! ```sh
//! export CLIENT_ID=demo-device CLIENT_SECRET=…     # as the demo seed printed them
//! cargo run --example ems_device -- --state gateway.json "$LOCAL_TOKEN"            # online
//! cargo run --example ems_device -- --state gateway.json --offline "$LOCAL_TOKEN"  # offline
//! ```
//! Online, the gateway signs in with `client_credentials` (`ISSUER`, default
//! `http://127.0.0.1:8080/t/demo`), connects to MQTT (`MQTT`, default `127.0.0.1:1883`) with the
//! token as password, and takes the retained JWKS, signed key schedule, token list and status
//! list. Its trust starts from `--trust-key FILE` (a JWK given at provisioning) or, without one,
//! from the first JWKS it sees; after that it believes a key schedule only when signed by a key
//! it trusts ([`trust`]), and a status list only when signed by one of those keys and not
//! expired. Then, offline, it checks the token: the `CLOUD-` prefix, the RS256 signature by a
//! trusted key, `iss`, `aud` = its own system, `nbf`/`exp`, its bit in the status list and its
//! status in the token list.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod trust;
use trust::{StatusList, Trust};

const PREFIX: &str = "CLOUD-";
const TOPIC_PREFIX: &str = "drivr/v1";

/// What the gateway believes, kept between runs.
#[derive(Serialize, Deserialize)]
struct State {
    system: String,
    trust: Trust,
    status_list: Option<StatusList>,
    token_list: Vec<Value>,
}

struct Args {
    state: Option<PathBuf>,
    offline: bool,
    trust_key: Option<PathBuf>,
    token: String,
}

fn args() -> Option<Args> {
    let mut args = std::env::args().skip(1);
    let (mut state, mut offline, mut trust_key, mut token) = (None, false, None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--state" => state = Some(PathBuf::from(args.next()?)),
            "--trust-key" => trust_key = Some(PathBuf::from(args.next()?)),
            "--offline" => offline = true,
            _ if token.is_none() && !arg.starts_with("--") => token = Some(arg),
            _ => return None,
        }
    }
    Some(Args {
        state,
        offline,
        trust_key,
        token: token?,
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[tokio::main]
async fn main() -> ExitCode {
    let Some(args) = args() else {
        eprintln!(
            "usage: ems_device [--state FILE] [--offline] [--trust-key JWK_FILE] LOCAL_TOKEN\n       (online: with CLIENT_ID and CLIENT_SECRET set)"
        );
        return ExitCode::from(2);
    };
    let issuer = std::env::var("ISSUER").unwrap_or_else(|_| "http://127.0.0.1:8080/t/demo".into());
    let stored: Option<State> = args
        .state
        .as_ref()
        .and_then(|path| std::fs::read(path).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let state = if args.offline {
        match stored {
            Some(state) => state,
            None => {
                eprintln!("--offline needs a --state file written by an online run");
                return ExitCode::from(2);
            }
        }
    } else {
        match learn(&issuer, stored, args.trust_key.as_deref()).await {
            Ok(state) => state,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    if let Some(path) = &args.state
        && let Err(e) = std::fs::write(path, serde_json::to_vec_pretty(&state).expect("state"))
    {
        eprintln!("error: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    println!(
        "gateway of system {} trusts {} key(s) (schedule {}), knows {} listed token(s){}; now offline",
        state.system,
        state.trust.keys.len(),
        state
            .trust
            .seq
            .map_or("none yet".into(), |s| format!("#{s}")),
        state.token_list.len(),
        if state.status_list.is_some() {
            " and its status list"
        } else {
            ""
        },
    );
    let checked = state.trust.check_token(
        args.token.trim(),
        PREFIX,
        &state.system,
        state.status_list.as_ref(),
        &state.token_list,
        now(),
    );
    match checked {
        Ok(claims) => {
            let roles: Vec<&str> = claims["roles"]
                .as_array()
                .map(|r| r.iter().filter_map(|r| r["name"].as_str()).collect())
                .unwrap_or_default();
            println!(
                "ACCEPTED: {} ({}) with roles {:?}{}",
                claims["name"].as_str().unwrap_or("?"),
                claims["sub"].as_str().unwrap_or("?"),
                roles,
                claims["exp"]
                    .as_i64()
                    .map(|e| format!(", until {e}"))
                    .unwrap_or_else(|| ", permanently".into())
            );
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("REFUSED: {why}");
            ExitCode::from(1)
        }
    }
}

/// Online: a client_credentials token, then the retained messages over MQTT, each believed only
/// as far as its signature allows.
async fn learn(
    issuer: &str,
    stored: Option<State>,
    trust_key: Option<&std::path::Path>,
) -> Result<State, String> {
    let (Ok(client_id), Ok(secret)) = (std::env::var("CLIENT_ID"), std::env::var("CLIENT_SECRET"))
    else {
        return Err("set CLIENT_ID and CLIENT_SECRET to the gateway's client credentials".into());
    };
    let mqtt = std::env::var("MQTT").unwrap_or_else(|_| "127.0.0.1:1883".into());
    let res = reqwest::Client::new()
        .post(format!("{issuer}/oauth2/token"))
        .basic_auth(&client_id, Some(&secret))
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

    let topics = [
        format!("{TOPIC_PREFIX}/{slug}/jwks"),
        format!("{TOPIC_PREFIX}/{slug}/jwks/signed"),
        format!("{TOPIC_PREFIX}/{slug}/authorization/localApiTokens/{system}"),
        format!("{TOPIC_PREFIX}/{slug}/statuslists/{system}"),
    ];
    let messages = retained(&mqtt, &client_id, &token, &topics).await?;
    let [jwks, schedule, token_list, status_list] = messages;

    let now = now();
    // What this gateway believed before, if it is this system's gateway.
    let stored = stored.filter(|state| state.system == system && state.trust.issuer == issuer);
    let held_list = stored.as_ref().and_then(|state| state.status_list.clone());
    let mut trust = match (stored, trust_key) {
        // A key given now starts trust over: how a device is provisioned again after an
        // invalidation.
        (_, Some(path)) => {
            let jwk: Value = std::fs::read(path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or(format!("{} is not a JWK", path.display()))?;
            Trust::from_key(issuer, &jwk)?
        }
        (Some(state), None) => state.trust,
        (None, None) => {
            let jwks: Value = serde_json::from_slice(&jwks).map_err(|e| format!("JWKS: {e}"))?;
            Trust::from_jwks(issuer, &jwks)?
        }
    };
    match trust.accept_schedule(&String::from_utf8_lossy(&schedule), now) {
        Ok(true) => println!("key schedule #{} believed", trust.seq.unwrap_or_default()),
        Ok(false) => {}
        Err(e) => eprintln!("warning: {e}; keeping the keys trusted so far"),
    }
    let uri = format!("{issuer}/statuslists/{system}");
    let received = String::from_utf8_lossy(&status_list);
    let status_list = match trust.accept_status_list(&received, &uri, now, held_list.as_ref()) {
        Ok(list) => Some(list),
        Err(e) => {
            // What was believed stays believed: a bad message takes nothing away.
            eprintln!("warning: {e}; keeping the status list held");
            held_list
        }
    };
    let token_list: Vec<Value> =
        serde_json::from_slice(&token_list).map_err(|e| format!("token list: {e}"))?;
    Ok(State {
        system,
        trust,
        status_list,
        token_list,
    })
}

/// The retained message of each topic, in order.
async fn retained<const N: usize>(
    mqtt: &str,
    client_id: &str,
    token: &str,
    topics: &[String; N],
) -> Result<[Vec<u8>; N], String> {
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
    for topic in topics {
        client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut got: [Option<Vec<u8>>; N] = std::array::from_fn(|_| None);
    let wait = tokio::time::timeout(Duration::from_secs(5), async {
        while got.iter().any(Option::is_none) {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some(i) = topics.iter().position(|t| *t == p.topic) {
                        got[i] = Some(p.payload.to_vec());
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(format!("MQTT: {e}")),
            }
        }
        Ok(())
    })
    .await;
    let _ = client.disconnect().await;
    wait.map_err(|_| "the retained messages did not all arrive within 5 s".to_owned())??;
    Ok(got.map(|m| m.unwrap_or_default()))
}
