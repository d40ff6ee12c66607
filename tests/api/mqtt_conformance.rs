//! MQTT conformance (docs/mqtt.md, "Conformance"): the behaviours of MQTT 3.1.1 and 5.0 that
//! the router and the gate share, each checked at the packet level, and all of them again with
//! Eclipse paho-mqtt 2.x (`tests/interop/mqtt_conformance.py`).

use std::time::Duration;

use crate::helpers::*;
use crate::mqtt::{device, wide_open};

/// A wide-open lanyard and a token for a client of tenant `demo`: the password of every client
/// id a check connects with.
async fn open_broker() -> (TestApp, String) {
    let app = wide_open().await;
    let t = app.tenant("demo").await;
    let (_, token) = device(&app, &t, None, "").await;
    (app, token)
}

#[tokio::test]
async fn paho_mqtt_finds_every_behaviour_conforming() {
    let Some(python) = interop_python() else {
        return;
    };
    let (app, token) = open_broker().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/mqtt_conformance.py"
    );
    let mut command = tokio::process::Command::new(python);
    command
        .arg(script)
        .args(["--port", &app.mqtt_addr().port().to_string(), "--token", &token]);
    if let Ok(only) = std::env::var("CONFORMANCE_ONLY") {
        for name in only.split(',') {
            command.args(["--only", name]);
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(240), command.output())
        .await
        .expect("the paho checks finish")
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{said}");
    assert!(out.status.success(), "{said}");
    app.stop().await;
}
