//! The SMTP mailer against a minimal SMTP server on loopback.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::helpers::*;
use crate::signin::{app_client, person, send_otp};

/// Accepts one SMTP session and returns the DATA it received.
async fn smtp_server() -> (u16, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 test ESMTP\r\n").await.unwrap();
        let mut data = String::new();
        let mut in_data = false;
        while let Ok(Some(line)) = lines.next_line().await {
            if in_data {
                if line == "." {
                    in_data = false;
                    tx.send(std::mem::take(&mut data)).unwrap();
                    write.write_all(b"250 queued\r\n").await.unwrap();
                } else {
                    data.push_str(&line);
                    data.push('\n');
                }
                continue;
            }
            let verb = line
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            let answer: &[u8] = match verb.as_str() {
                "EHLO" | "HELO" => b"250 test\r\n",
                "DATA" => {
                    in_data = true;
                    b"354 go on\r\n"
                }
                "QUIT" => {
                    write.write_all(b"221 bye\r\n").await.unwrap();
                    return;
                }
                _ => b"250 ok\r\n",
            };
            write.write_all(answer).await.unwrap();
        }
    });
    (port, rx)
}

#[tokio::test]
async fn sign_in_codes_go_out_through_the_smtp_server() {
    let (port, mut received) = smtp_server().await;
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.mailer.kind = lanyard::config::MailerKind::Smtp;
        s.mailer.smtp_host = "127.0.0.1".into();
        s.mailer.smtp_port = port;
        s.mailer.smtp_security = lanyard::config::SmtpSecurity::None;
        s.mailer.from = "Acme Sign-in <signin@acme.example>".into();
    })
    .await;
    let t = app.tenant("acme").await;
    person(&app, &t, "ada@example.com", "").await;
    let client = app_client(&app, &t).await;
    let res = send_otp(
        &app,
        "acme",
        json!({ "email": "ada@example.com", "client_id": client }),
    )
    .await;
    assert_eq!(res.status(), 202);
    let mail = tokio::time::timeout(Duration::from_secs(5), received.recv())
        .await
        .expect("the SMTP server received a message")
        .unwrap();
    assert!(mail.contains("To: ada@example.com"), "{mail}");
    assert!(
        mail.contains("From: \"Acme Sign-in\" <signin@acme.example>"),
        "{mail}"
    );
    assert!(mail.contains("Energy App"), "{mail}");
    assert!(mail.contains(" is your code"), "{mail}");
}
