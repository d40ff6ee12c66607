//! The `lanyard` command line: parse arguments, load the settings, call into the app.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use lanyard::app::{App, Signals, open_authority};
use lanyard::config::{LogFormat, Settings, Sources};
use lanyard::domain::{Slug, SystemClock};

#[derive(Parser)]
#[command(
    name = "lanyard",
    version,
    about = "A device-token authority for IoT fleets"
)]
struct Cli {
    /// The config file (default: ./broker.toml if it exists).
    #[arg(long, global = true, env = "LANYARD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Create a tenant if it is missing, and a new admin client for it; prints JSON.
    Bootstrap {
        /// The tenant's slug: 2-63 characters of a-z, 0-9 and '-'.
        #[arg(long)]
        tenant: String,
        /// The tenant's display name (default: the slug).
        #[arg(long)]
        name: Option<String>,
    },
    /// Print the effective configuration (secrets redacted).
    Config,
    /// Print a new NATS account nkey for the auth callout: the public key for the cluster's
    /// `auth_callout.issuer`, the seed for `nats.issuer_seed` (docs/nats.md).
    NatsKey,
    /// Reseal every signing key under a new key-encryption key, in one transaction. Stop every
    /// node first, then start them with the new key: the old one no longer starts.
    Rekey {
        /// A file holding the new key, 32 random bytes in base64
        /// (`openssl rand -base64 32 > new.kek`).
        #[arg(long)]
        new_key_file: PathBuf,
    },
}

/// What is logged when `RUST_LOG` is not set.
const DEFAULT_LOG: &str = "info,sqlx=warn,rumqttd=off";

/// The log filter for `RUST_LOG`. rumqttd's router is an internal part of the broker whose
/// spans, even at level `error`, are made for every message it routes; they stay off unless
/// `RUST_LOG` names rumqttd.
fn log_filter(rust_log: Option<String>) -> String {
    match rust_log {
        None => DEFAULT_LOG.to_owned(),
        Some(filter) if filter.contains("rumqttd") => filter,
        Some(filter) => format!("{filter},rumqttd=off"),
    }
}

/// Logs to stderr in the configured format; `RUST_LOG` filters.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(std::env::var("RUST_LOG").ok()))
        .unwrap_or_else(|_| DEFAULT_LOG.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The settings say how to log, so they are read first; a config that cannot be read is
    // reported as plain text.
    let settings = match Settings::load(Sources {
        file: cli.config.as_deref(),
        env: std::env::vars().collect(),
    }) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(settings.log.format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli.command, settings));
    // Blocking work still running must not hold the exit: `serve` has had its shutdown time.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Option<Command>, settings: Settings) -> anyhow::Result<()> {
    match command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let signals = Signals::listen();
            let app = App::build(settings).await?;
            if let Some(seed) = app.demo() {
                print!(
                    "{}",
                    lanyard::app::demo_instructions(
                        seed,
                        app.authority().settings(),
                        app.mqtt_addr().map(|a| a.port())
                    )
                );
            }
            app.run_until_signalled(signals).await
        }
        Command::Migrate => {
            open_authority(settings, Arc::new(SystemClock)).await?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Bootstrap { tenant, name } => {
            let slug = Slug::parse(&tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
            let authority = open_authority(settings, Arc::new(SystemClock)).await?;
            let out = authority.bootstrap(&slug, name.as_deref()).await?;
            println!("{}", serde_json::to_string(&out)?);
            Ok(())
        }
        Command::Config => {
            print!("{}", settings.to_redacted_toml());
            Ok(())
        }
        Command::NatsKey => {
            let key = nkeys::KeyPair::new_account();
            println!("issuer={}", key.public_key());
            println!("seed={}", key.seed()?);
            Ok(())
        }
        Command::Rekey { new_key_file } => {
            let text = std::fs::read_to_string(&new_key_file).map_err(|e| {
                anyhow::anyhow!(
                    "--new-key-file: cannot read {}: {e}",
                    new_key_file.display()
                )
            })?;
            let new = lanyard::crypto::KeyEncryptionKey::from_base64(&text)
                .map_err(|e| anyhow::anyhow!("--new-key-file: {}: {e}", new_key_file.display()))?;
            let authority = open_authority(settings, Arc::new(SystemClock)).await?;
            let count = authority.rekey(&new).await?;
            eprintln!(
                "resealed {count} signing key(s) under the new key-encryption key; start every node with it (keys.encryption_key or keys.encryption_key_file): the old key no longer starts"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_logs_only_when_asked_for_by_name() {
        assert_eq!(log_filter(None), DEFAULT_LOG);
        assert_eq!(log_filter(Some("warn".into())), "warn,rumqttd=off");
        assert_eq!(
            log_filter(Some("debug,rumqttd=trace".into())),
            "debug,rumqttd=trace"
        );
    }
}
