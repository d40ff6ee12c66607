//! nginx (Debian's package) in front of a tiny app, guarded by `auth_request` to lanyard's
//! `/t/{slug}/validate` with the README's snippet, verbatim but for the ports.

use std::process::Command;

use axum::http::HeaderMap;

use crate::helpers::*;
use crate::mqtt::device;

/// The README's nginx snippet.
fn readme_snippet() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```nginx\n")
        .expect("the README has an nginx snippet")
        + "```nginx\n".len();
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].to_owned()
}

/// nginx in the foreground on a free port with `locations` in its one server.
async fn nginx(dir: &std::path::Path, locations: &str) -> (Process, String) {
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server {{\n    listen 127.0.0.1:{port};\n{locations}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let mut command = Command::new("nginx");
    command.arg("-p").arg(dir).arg("-c").arg(&path);
    let server = Process::listening(command, port, "nginx").await;
    (server, format!("http://127.0.0.1:{port}"))
}

/// The app behind the web server: says who the web server says is asking.
pub async fn upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().fallback(|headers: HeaderMap| async move {
        format!(
            "hello {}",
            headers
                .get("x-user")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
        )
    });
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr.to_string()
}

pub async fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn nginx_lets_through_only_what_lanyard_validates() {
    if !installed("nginx") {
        skipped("nginx forward-auth test: nginx is not installed (Debian: nginx)");
        return;
    }
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.tenant("demo").await;
    app.authority()
        .create_scope(&t.tenant, "sensor:read", None)
        .await
        .unwrap();
    let (_, reader) = device(&app, &t, None, "sensor:read").await;
    let (_, plain) = device(&app, &t, None, "").await;
    let backend = upstream().await;
    let lanyard = app.base.trim_start_matches("http://").to_owned();
    let snippet = readme_snippet()
        .replace("127.0.0.1:9000", &backend)
        .replace("127.0.0.1:8080", &lanyard);
    let scoped = snippet.replace("/t/demo/validate;", "/t/demo/validate?scope=sensor%3Aread;");
    assert_ne!(scoped, snippet);

    let dir = tempfile::tempdir().unwrap();
    let (server, url) = nginx(dir.path(), &snippet).await;
    let (status, body) = get(&url, Some(&plain)).await;
    assert_eq!((status, body.starts_with("hello ")), (200, true), "{body}");
    assert!(!body.ends_with('?'), "the app learns who asked: {body}");
    assert_eq!(get(&url, None).await.0, 401);
    assert_eq!(get(&url, Some("garbage")).await.0, 401);
    let res = app
        .post_form(
            "/t/demo/oauth2/revoke",
            Some((&t.admin_id, &t.admin_secret)),
            &format!("token={plain}"),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        get(&url, Some(&plain)).await.0,
        401,
        "revoked: refused at once"
    );
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = nginx(dir.path(), &scoped).await;
    assert_eq!(get(&url, Some(&reader)).await.0, 200);
    let (_, other) = device(&app, &t, None, "").await;
    assert_eq!(get(&url, Some(&other)).await.0, 403, "too little scope");
    assert_eq!(get(&url, None).await.0, 401);
    app.stop().await;
}
