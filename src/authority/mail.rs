//! The port through which the authority sends mail (sign-in codes). The adapters live in
//! [`crate::mailer`]; the authority knows only this trait.

use std::future::Future;
use std::pin::Pin;

/// One plain-text message to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

pub type SendResult<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

pub trait Mailer: Send + Sync {
    fn send(&self, mail: Mail) -> SendResult<'_>;
}

/// For the one-shot commands, which send no mail.
pub struct NoMailer;

impl Mailer for NoMailer {
    fn send(&self, _mail: Mail) -> SendResult<'_> {
        Box::pin(async { anyhow::bail!("this command sends no mail") })
    }
}
