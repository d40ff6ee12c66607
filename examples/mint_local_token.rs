//! An app's view: sign a person in with a mailed one-time code, then mint a local API token for
//! one of their systems through GraphQL.
//!
//! ```sh
//! cargo run --example mint_local_token -- http://127.0.0.1:8080/t/demo demo-app demo@example.com "$SYSTEM"
//! ```
//! Asks for a code (`POST {issuer}/auth/send-otp`), reads it from the newest message of the file
//! mailer's outbox (`data/outbox`, or `OUTBOX`), signs in with the OTP grant, and calls
//! `createLocalApiToken` for a day. Prints the token, which also appears on the system's retained
//! list `drivr/v1/{slug}/authorization/localApiTokens/{system}`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [issuer, client_id, email, system] = args.as_slice() else {
        eprintln!("usage: mint_local_token ISSUER CLIENT_ID EMAIL SYSTEM_UUID");
        return ExitCode::from(2);
    };
    let outbox = PathBuf::from(std::env::var("OUTBOX").unwrap_or_else(|_| "data/outbox".into()));
    match run(
        issuer.trim_end_matches('/'),
        client_id,
        email,
        system,
        &outbox,
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    issuer: &str,
    client_id: &str,
    email: &str,
    system: &str,
    outbox: &PathBuf,
) -> Result<(), String> {
    let http = reqwest::Client::new();
    let asked_at = SystemTime::now();
    let res = http
        .post(format!("{issuer}/auth/send-otp"))
        .json(&json!({ "email": email, "client_id": client_id }))
        .send()
        .await
        .map_err(|e| format!("cannot reach {issuer}: {e}"))?;
    if res.status() != 202 {
        return Err(format!(
            "send-otp answered {}: {}",
            res.status(),
            res.text().await.unwrap_or_default()
        ));
    }
    let code = read_code(outbox, asked_at).await?;
    println!("code {code} read from {}", outbox.display());

    let res = http
        .post(format!("{issuer}/oauth2/token"))
        .form(&[
            ("grant_type", "urn:lanyard:params:oauth:grant-type:otp"),
            ("client_id", client_id),
            ("email", email),
            ("code", code.as_str()),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let tokens: Value = res.json().await.map_err(|e| e.to_string())?;
    let access = tokens["access_token"]
        .as_str()
        .ok_or_else(|| format!("sign-in refused: {tokens}"))?;
    println!("signed in as {email}");

    let graphql = issuer
        .rsplit_once("/t/")
        .map(|(base, _)| format!("{base}/graphql"))
        .ok_or("the issuer should look like http://HOST/t/SLUG")?;
    let body: Value = http
        .post(graphql)
        .bearer_auth(access)
        .json(&json!({
            "query": "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\", requestedDevice: \"mint_local_token example\") { uuid jwt } }",
            "variables": { "s": system },
        }))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let created = &body["data"]["createLocalApiToken"];
    let (Some(uuid), Some(jwt)) = (created["uuid"].as_str(), created["jwt"].as_str()) else {
        return Err(format!("minting refused: {}", body["errors"]));
    };
    println!("minted local API token {uuid} for system {system}, valid for a day:\n{jwt}");
    Ok(())
}

/// The code in the newest `.eml` written after `since`, waiting a few seconds for it.
async fn read_code(outbox: &PathBuf, since: SystemTime) -> Result<String, String> {
    for _ in 0..50 {
        let newest = std::fs::read_dir(outbox)
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .filter(|(modified, _)| *modified >= since)
            .max();
        if let Some((_, path)) = newest {
            let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
            if let Some(at) = text.find(" is your code") {
                return Ok(text[at.saturating_sub(6)..at].to_owned());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "no sign-in mail appeared in {}; is mailer.kind = \"file\"?",
        outbox.display()
    ))
}
