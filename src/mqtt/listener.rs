//! The MQTT listeners: accepting connections (plain and TLS) within the connection limits, each
//! served by its own task ([`super::connection`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::Gate;
use super::connection;
use super::sessions::EndReason;
use crate::connections::{PerSource, Permits, WarnOnce};

/// The rustls acceptor of the TLS listener, from PEM files named by the config.
pub(super) fn tls_acceptor(cert_file: &str, key_file: &str) -> anyhow::Result<TlsAcceptor> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!("mqtt.tls_cert_file: cannot read PEM certificates from {cert_file}")
        })?;
    if certs.is_empty() {
        anyhow::bail!("mqtt.tls_cert_file: {cert_file} holds no certificate");
    }
    let key = PrivateKeyDer::from_pem_file(key_file).with_context(|| {
        format!("mqtt.tls_key_file: cannot read a PEM private key from {key_file}")
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("mqtt.tls_cert_file and mqtt.tls_key_file do not make a usable certificate")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

pub(super) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    gate: Arc<Gate>,
    (limit, per_source): (Permits, Arc<PerSource>),
    mut stopped: watch::Receiver<bool>,
) {
    let full = WarnOnce::default();
    loop {
        let accepted = tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!("mqtt accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Connections that have not finished their CONNECT count too, and time out. Both
        // limits close the excess at once, before anything is read from it (SPEC §7).
        let Some(slot) = per_source.admit(peer.ip()) else {
            tracing::debug!(%peer, "mqtt: too many connections from this source; closed");
            continue;
        };
        let Some(permit) = limit.try_take() else {
            if full.ready() {
                tracing::warn!(%peer, "mqtt: connection limit reached, closing new connections");
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let gate = gate.clone();
        match &tls {
            None => {
                tokio::spawn(async move {
                    connection::serve(gate, stream, peer, permit).await;
                    drop(slot);
                });
            }
            Some(acceptor) => {
                let handshake = acceptor.accept(stream);
                tokio::spawn(async move {
                    let _slot = slot;
                    // The handshake gets the CONNECT timeout too, so a stalled one is let go.
                    match tokio::time::timeout(gate.connect_timeout, handshake).await {
                        Ok(Ok(stream)) => connection::serve(gate, stream, peer, permit).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "mqtt: TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "mqtt: TLS handshake timed out"),
                    }
                });
            }
        }
    }
    gate.sessions.end_where(EndReason::ShuttingDown, |_| true);
}
