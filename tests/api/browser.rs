//! A real browser (headless Chromium over WebDriver) signs a person in to the example web app
//! (`examples/web_app.rs`) through lanyard's hosted page: the mailed code, the one-click link,
//! the link in a second browser, the session, logout. Screenshots of the page and of its error
//! state are written to `$CARGO_TARGET_TMPDIR/screenshots`.

use std::process::Command;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::helpers::*;
use crate::signin::{code_for, outbox_files, person};
use crate::web::link_of;

#[allow(dead_code)]
#[path = "../../examples/web_app.rs"]
mod web_app;

/// chromedriver on a free port, once it answers.
async fn chromedriver() -> (Process, String) {
    let port = free_port();
    let mut command = Command::new("chromedriver");
    command.arg(format!("--port={port}"));
    let driver = Process::listening(command, port, "chromedriver").await;
    (driver, format!("http://127.0.0.1:{port}"))
}

/// A fresh browser: its own profile, so its own cookies.
async fn browser(driver: &str) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,800"] }),
    );
    ClientBuilder::rustls()
        .expect("TLS roots")
        .capabilities(caps)
        .connect(driver)
        .await
        .expect("a Chromium session")
}

async fn screenshot(client: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, client.screenshot().await.unwrap()).unwrap();
    eprintln!("screenshot: {}", path.display());
}

async fn text_of(client: &Client, css: &str) -> String {
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Types into the field labelled by `id` and submits its form.
async fn fill_and_submit(client: &Client, id: &str, value: &str) {
    let field = client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id(id))
        .await
        .unwrap();
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
    let form = field
        .find(Locator::XPath("./ancestor::form"))
        .await
        .unwrap();
    form.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_person_signs_in_to_the_example_app_in_chromium() {
    for program in ["chromium", "chromedriver"] {
        if !installed(program) {
            skipped(&format!(
                "browser sign-in test: {program} is not installed (Debian: chromium chromium-driver)"
            ));
            return;
        }
    }
    let port = free_port();
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.http.listen = format!("127.0.0.1:{port}").parse().unwrap();
        s.http.public_url = format!("http://127.0.0.1:{port}");
    })
    .await;
    let t = app.tenant("acme").await;
    person(&app, &t, "ada@example.com", "").await;
    // Registered like the demo seed's app: any loopback port, for sign-in and for logout.
    let admin = app.admin_token(&t).await;
    let body = crate::graphql::gql(&app, Some(&admin), "mutation { createClient(input: {name: \"Web App\", public: true, redirectUris: [\"http://127.0.0.1/callback\"], postLogoutRedirectUris: [\"http://127.0.0.1/\"]}) { clientId } }", json!({})).await;
    let web_client = body["data"]["createClient"]["clientId"]
        .as_str()
        .unwrap()
        .to_owned();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(web_app::serve(
        listener,
        web_app::Config {
            issuer: t.tenant.issuer.clone(),
            client_id: web_client,
            base_url: app_url.clone(),
        },
    ));

    let (_driver, driver_url) = chromedriver().await;
    let a = browser(&driver_url).await;

    // The code: the app sends the browser to lanyard's page.
    a.goto(&format!("{app_url}/login")).await.unwrap();
    assert_eq!(text_of(&a, "h1").await, "Sign in to Web App");
    assert!(text_of(&a, ".tenant").await.contains("acme"));
    screenshot(&a, "sign-in-email").await;
    let before = outbox_files(&app).len();
    fill_and_submit(&a, "email", "ada@example.com").await;
    let (code, _) = code_for(&app, "ada@example.com", before).await;
    fill_and_submit(&a, "code", "000000").await;
    let error = text_of(&a, "#code-error").await;
    if code != "000000" {
        assert!(error.contains("not right"), "{error}");
        screenshot(&a, "sign-in-wrong-code").await;
    }
    fill_and_submit(&a, "code", &code).await;
    assert_eq!(text_of(&a, "#greeting").await, "Signed in as Ada Lovelace");
    assert_eq!(text_of(&a, "#email").await, "ada@example.com");
    screenshot(&a, "signed-in").await;

    // Logout ends the session at lanyard and comes back to the app.
    a.find(Locator::Id("logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(&a, "#greeting").await, "Not signed in");

    // The one-click link: refused in a second browser, good in the first, once.
    a.goto(&format!("{app_url}/login")).await.unwrap();
    let before = outbox_files(&app).len();
    fill_and_submit(&a, "email", "ada@example.com").await;
    let (_, mail) = code_for(&app, "ada@example.com", before).await;
    let link = link_of(&mail);
    let b = browser(&driver_url).await;
    b.goto(&link).await.unwrap();
    assert!(text_of(&b, "p.error").await.contains("another browser"));
    screenshot(&b, "link-in-another-browser").await;
    a.goto(&link).await.unwrap();
    assert_eq!(text_of(&a, "#greeting").await, "Signed in as Ada Lovelace");
    b.goto(&link).await.unwrap();
    assert!(text_of(&b, "h1").await.contains("not possible"));

    // Signed in at lanyard: a second sign-in needs no code and sends no mail.
    let mails = outbox_files(&app).len();
    a.goto(&format!("{app_url}/login")).await.unwrap();
    assert_eq!(text_of(&a, "#greeting").await, "Signed in as Ada Lovelace");
    assert_eq!(outbox_files(&app).len(), mails);

    // Logout, and the next sign-in asks again.
    a.find(Locator::Id("logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(&a, "#greeting").await, "Not signed in");
    a.goto(&format!("{app_url}/login")).await.unwrap();
    assert_eq!(text_of(&a, "h1").await, "Sign in to Web App");

    b.close().await.unwrap();
    a.close().await.unwrap();
    server.abort();
    app.stop().await;
}
