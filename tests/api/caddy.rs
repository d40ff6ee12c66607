//! Caddy (Debian's package) in front of a tiny app with `forward_auth` to lanyard's
//! `/t/{slug}/validate`, using the Caddyfile of docs/web.md verbatim but for the ports.

use std::process::Command;

use crate::helpers::*;
use crate::mqtt::device;
use crate::nginx::{get, upstream};

/// The Caddyfile of docs/web.md.
fn docs_caddyfile() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/web.md")).unwrap();
    let start = doc.find("```caddy\n").expect("docs/web.md has a Caddyfile") + "```caddy\n".len();
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].to_owned()
}

#[tokio::test]
async fn caddy_lets_through_only_what_lanyard_validates() {
    if !installed("caddy") {
        skipped("Caddy forward-auth test: caddy is not installed (Debian: caddy)");
        return;
    }
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.tenant("demo").await;
    app.authority()
        .create_scope(&t.tenant, "sensor:read", None)
        .await
        .unwrap();
    let (reader_id, reader) = device(&app, &t, None, "sensor:read").await;
    let (_, plain) = device(&app, &t, None, "").await;
    let backend = upstream().await;
    let port = free_port();
    let lanyard = app.base.trim_start_matches("http://").to_owned();
    // No admin API, no certificates: a test process owns nothing else.
    let config = format!(
        "{{\n    admin off\n    auto_https off\n    storage file_system {{\n        root {}\n    }}\n}}\n{}",
        app.dir.path().join("caddy").display(),
        docs_caddyfile()
            .replace("127.0.0.1:9000", &backend)
            .replace("127.0.0.1:8080", &lanyard)
            .replace("127.0.0.1:8443", &format!("127.0.0.1:{port}"))
    );
    let path = app.dir.path().join("Caddyfile");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new("caddy");
    command
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&path)
        .env("HOME", app.dir.path())
        .env("XDG_DATA_HOME", app.dir.path().join("xdg"))
        .env("XDG_CONFIG_HOME", app.dir.path().join("xdg"));
    let _caddy = Process::listening(command, port, "caddy").await;
    let url = format!("http://127.0.0.1:{port}/");

    let (status, body) = get(&url, Some(&reader)).await;
    assert_eq!(
        (status, body.as_str()),
        (200, format!("hello {reader_id}").as_str())
    );
    let res = reqwest::Client::new().get(&url).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(
        res.headers().get("www-authenticate").is_some(),
        "the challenge comes back through Caddy"
    );
    assert_eq!(get(&url, Some(&plain)).await.0, 403, "too little scope");
    let res = app
        .post_form(
            "/t/demo/oauth2/revoke",
            Some((&t.admin_id, &t.admin_secret)),
            &format!("token={reader}"),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        get(&url, Some(&reader)).await.0,
        401,
        "revoked: refused at once"
    );
    app.stop().await;
}
