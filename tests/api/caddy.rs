//! Caddy (Debian's package) in front of a tiny app with `forward_auth` to lanyard's
//! `/t/{slug}/validate`, using the Caddyfile of docs/web.md verbatim but for the ports.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

struct Caddy(Child);

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn caddy_lets_through_only_what_lanyard_validates() {
    if !Command::new("sh")
        .arg("-c")
        .arg("command -v caddy")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
    let child = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&path)
        .env("HOME", app.dir.path())
        .env("XDG_DATA_HOME", app.dir.path().join("xdg"))
        .env("XDG_CONFIG_HOME", app.dir.path().join("xdg"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("caddy starts");
    let _caddy = Caddy(child);
    let url = format!("http://127.0.0.1:{port}/");
    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "caddy did not start");

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
