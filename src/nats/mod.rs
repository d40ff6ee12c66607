//! lanyard as the authority of a NATS cluster's MQTT listeners (SPEC §13), beside or instead
//! of its own broker:
//! - [`callout`]: the auth callout every CONNECT is handed to, answering with a user JWT in the
//!   tenant's account whose permissions ([`subjects`]) and expiry are the token's;
//! - [`publisher`]: lanyard's retained topics, kept in the cluster over MQTT;
//! - [`enforcer`]: connections ended on every node when their token, client, person or key is
//!   withdrawn;
//! - [`holders`]: who holds each MQTT client id, so that no principal takes over another's
//!   session.
//!
//! [`jwt`] writes and reads the two NATS JWT shapes over `nkeys`. The retained topics come from
//! the gate's projection ([`crate::mqtt::Gate`]), which runs whether or not lanyard's own
//! listener does. Every connection to the cluster is retried until it answers: lanyard starts
//! while the cluster is away, and follows it when it comes back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::authority::Authority;
use crate::metrics::Metrics;
use crate::mqtt::Gate;

mod callout;
mod enforcer;
mod holders;
mod jwt;
mod publisher;
mod subjects;

/// The topic prefix as a NATS subject; None when NATS cannot hold it (checked at load).
pub fn translate_prefix(prefix: &str) -> Option<String> {
    subjects::translate(prefix)?.into_iter().next()
}

/// The subject NATS servers send authorization requests to.
const CALLOUT_SUBJECT: &str = "$SYS.REQ.USER.AUTH";
/// The queue group of every lanyard node: each request reaches one.
const QUEUE_GROUP: &str = "lanyard";
/// Requests answered at once; more wait (the server's own timeout bounds the wait).
const CONCURRENT_REQUESTS: usize = 512;

/// Starts the callout, the publisher and the enforcer for `nats.url`.
pub async fn start(
    authority: Arc<Authority>,
    metrics: Arc<Metrics>,
    gate: &Arc<Gate>,
    stopped: watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<()> {
    let settings = authority.settings().nats.clone();
    let issuer = jwt::Issuer::from_seed(settings.issuer_seed.expose())
        .map_err(|e| anyhow::anyhow!("nats.issuer_seed: {e}"))?;
    tracing::info!(
        "nats: serving the cluster at {} as auth callout (issuer {})",
        settings.url,
        issuer.public_key()
    );
    let connect = |user: &str, password: &str, role: &str| {
        async_nats::ConnectOptions::with_user_and_password(user.to_owned(), password.to_owned())
            .name(format!("lanyard {role} {}", authority.node_id()))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(move |event| async move {
                tracing::info!("nats: {event}");
            })
            .connect(settings.urls())
    };

    let system_client = connect(
        &settings.system_user,
        settings.system_password.expose(),
        "enforcer",
    )
    .await
    .context("nats.url: connecting the enforcer")?;
    let enforcer = Arc::new(enforcer::Enforcer {
        authority: authority.clone(),
        metrics: metrics.clone(),
        client: system_client,
        accounts: settings.accounts.clone(),
        servers: Default::default(),
    });
    // Who holds each client id is known before the callout answers its first request.
    let holders = Arc::new(holders::Holders::default());
    if let Err(e) = holders.reseed(&enforcer).await {
        tracing::warn!("nats: reading who holds each client id: {e:#}");
    }
    tasks.push(tokio::spawn(
        holders.clone().follow(enforcer.clone(), stopped.clone()),
    ));
    tasks.push(tokio::spawn(
        enforcer.follow(authority.subscribe(), stopped.clone()),
    ));

    let callout_client = connect(
        &settings.callout_user,
        settings.callout_password.expose(),
        "callout",
    )
    .await
    .context("nats.url: connecting the callout")?;
    let mut requests = callout_client
        .queue_subscribe(CALLOUT_SUBJECT, QUEUE_GROUP.into())
        .await
        .context("subscribing to the NATS auth callout")?;
    let callout = Arc::new(callout::Callout {
        authority: authority.clone(),
        metrics: metrics.clone(),
        permissions: authority.settings().mqtt.permissions(),
        issuer,
        max_payload: i64::from(authority.settings().mqtt.max_packet_size),
        accounts: settings.accounts.clone(),
        holders,
    });
    let mut stop = stopped.clone();
    tasks.push(tokio::spawn(async move {
        let busy = Arc::new(Semaphore::new(CONCURRENT_REQUESTS));
        loop {
            let message = tokio::select! {
                _ = stop.changed() => return,
                message = requests.next() => match message {
                    Some(message) => message,
                    None => return,
                },
            };
            let Some(reply) = message.reply.clone() else {
                continue;
            };
            let Ok(permit) = busy.clone().acquire_owned().await else {
                return;
            };
            let (callout, client) = (callout.clone(), callout_client.clone());
            tokio::spawn(async move {
                if let Some(answer) = callout.answer(&message.payload).await
                    && let Err(e) = client.publish(reply, answer.into()).await
                {
                    tracing::warn!("nats callout: answering failed: {e}");
                }
                drop(permit);
            });
        }
    }));

    // The publisher: one task per account, fed by one that sorts the gate's changes.
    let prefix = format!("{}/", authority.settings().mqtt.topic_prefix);
    let slug_of = move |topic: &str| -> Option<String> {
        Some(topic.strip_prefix(&prefix)?.split('/').next()?.to_owned())
    };
    let (all_tx, mut all_rx) = mpsc::unbounded_channel::<(String, Bytes)>();
    let current = gate.mirror_retained(all_tx);
    let mut routes: BTreeMap<String, mpsc::UnboundedSender<(String, Bytes)>> = BTreeMap::new();
    for (slug, account) in &settings.accounts {
        let (tx, rx) = mpsc::unbounded_channel();
        routes.insert(slug.clone(), tx);
        let start: Vec<(String, Bytes)> = current
            .iter()
            .filter(|(topic, _)| slug_of(topic).as_deref() == Some(slug.as_str()))
            .cloned()
            .collect();
        let target = publisher::Target {
            account: account.clone(),
            user: settings.publisher_user(account),
            password: settings.publisher_password.expose().to_owned(),
            addresses: settings.mqtt_addresses(),
            client_id: format!("lanyard-{account}-{}", authority.node_id()),
            max_payload: settings.max_payload as usize,
            prefix_filter: format!("{}/#", authority.settings().mqtt.topic_prefix),
        };
        tasks.push(tokio::spawn(publisher::run(
            target,
            gate.clone(),
            start,
            rx,
            stopped.clone(),
        )));
    }
    let mut stop = stopped;
    tasks.push(tokio::spawn(async move {
        loop {
            let (topic, payload) = tokio::select! {
                _ = stop.changed() => return,
                change = all_rx.recv() => match change {
                    Some(change) => change,
                    None => return,
                },
            };
            if let Some(route) = slug_of(&topic).and_then(|slug| routes.get(&slug)) {
                let _ = route.send((topic, payload));
            }
        }
    }));
    Ok(())
}
