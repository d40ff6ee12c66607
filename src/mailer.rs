//! The mail adapters behind [`authority::mail::Mailer`](crate::authority::mail::Mailer), chosen
//! by `mailer.kind`: `file` writes one RFC 5322 `.eml` file per message (the development inbox,
//! and the tests'), `smtp` sends through an SMTP server with lettre, `log` only logs.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::authority::mail::{Mail, Mailer, SendResult};
use crate::config::{MailerKind, MailerSettings, SmtpSecurity};

/// The mailer `settings` ask for.
pub fn from_settings(settings: &MailerSettings) -> anyhow::Result<Arc<dyn Mailer>> {
    let from: Mailbox = settings.from.parse().context("mailer.from")?;
    Ok(match settings.kind {
        MailerKind::File => Arc::new(FileMailer {
            dir: settings.dir.clone(),
            from,
        }),
        MailerKind::Log => {
            tracing::warn!(
                "mailer.kind = \"log\": sign-in codes are written to the log; use it for development only"
            );
            Arc::new(LogMailer)
        }
        MailerKind::Smtp => {
            let host = settings.smtp_host.as_str();
            let builder = match settings.smtp_security {
                SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
                SmtpSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                    host,
                )),
                SmtpSecurity::Starttls => {
                    AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                }
            }
            .with_context(|| format!("mailer.smtp_host = {host:?}"))?;
            let mut builder = builder.port(settings.smtp_port);
            if !settings.smtp_username.is_empty() {
                builder = builder.credentials(Credentials::new(
                    settings.smtp_username.clone(),
                    settings.smtp_password.expose().to_owned(),
                ));
            }
            Arc::new(SmtpMailer {
                transport: builder.build(),
                from,
            })
        }
    })
}

fn message(from: &Mailbox, mail: &Mail) -> anyhow::Result<Message> {
    Message::builder()
        .from(from.clone())
        .to(mail.to.parse().context("recipient address")?)
        .subject(mail.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(body(&mail.body))
        .context("building the message")
}

/// The text as sent: lines end in CRLF (RFC 5322 §2.3), and ASCII text with lines of at most
/// 998 characters (RFC 5322 §2.1.1) goes as it is (7bit), so a sign-in link stays one line a
/// person can copy; lettre would quote any line past 76 characters. Other text gets the
/// encoding lettre picks.
fn body(text: &str) -> Body {
    let text = text.replace("\r\n", "\n").replace('\n', "\r\n");
    let plain = text.bytes().all(|b| b.is_ascii() && b != 0)
        && text
            .split("\r\n")
            .all(|line| line.len() <= 998 && !line.contains('\r'));
    if plain {
        Body::dangerous_pre_encoded(text.into_bytes(), ContentTransferEncoding::SevenBit)
    } else {
        Body::new(text)
    }
}

struct FileMailer {
    dir: PathBuf,
    from: Mailbox,
}

impl Mailer for FileMailer {
    fn send(&self, mail: Mail) -> SendResult<'_> {
        Box::pin(async move {
            let formatted = message(&self.from, &mail)?.formatted();
            tokio::fs::create_dir_all(&self.dir)
                .await
                .with_context(|| format!("mailer.dir: cannot create {}", self.dir.display()))?;
            let name = format!(
                "{}-{}.eml",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
                uuid::Uuid::new_v4().simple()
            );
            // Written under a hidden name, then renamed: whoever picks up `*.eml` files never
            // reads one half-written.
            let partial = self.dir.join(format!(".{name}.partial"));
            tokio::fs::write(&partial, formatted)
                .await
                .with_context(|| format!("mailer.dir: cannot write {}", partial.display()))?;
            let path = self.dir.join(name);
            tokio::fs::rename(&partial, &path)
                .await
                .with_context(|| format!("mailer.dir: cannot write {}", path.display()))?;
            Ok(())
        })
    }
}

struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer for SmtpMailer {
    fn send(&self, mail: Mail) -> SendResult<'_> {
        Box::pin(async move {
            let message = message(&self.from, &mail)?;
            self.transport
                .send(message)
                .await
                .context("sending mail over SMTP")?;
            Ok(())
        })
    }
}

struct LogMailer;

impl Mailer for LogMailer {
    fn send(&self, mail: Mail) -> SendResult<'_> {
        Box::pin(async move {
            tracing::warn!(to = %mail.to, subject = %mail.subject, "mail (log mailer):\n{}", mail.body);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ascii_mail_keeps_its_long_lines_whole() {
        let link = format!(
            "https://lanyard.example/t/demo/auth/link?request={}&token={}",
            "a".repeat(43),
            "b".repeat(43)
        );
        let b = body(&format!("Hello,\n\n{link}\n"));
        assert_eq!(b.encoding(), ContentTransferEncoding::SevenBit);
        assert_eq!(
            String::from_utf8(b.into_vec()).unwrap(),
            format!("Hello,\r\n\r\n{link}\r\n")
        );
        let other = body("Hallo Zoë,\n");
        assert_ne!(other.encoding(), ContentTransferEncoding::SevenBit);
        let endless = body(&"x".repeat(1200));
        assert_ne!(endless.encoding(), ContentTransferEncoding::SevenBit);
    }
}
