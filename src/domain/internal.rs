//! An unexpected failure on its way to a door. Use-cases do not log it: they return it inside
//! their error, with the cause chain and what they were doing, and the door logs it once and
//! answers without it (a client never sees internals).

use std::fmt;
use std::sync::Arc;

/// The cause of a failure that is nobody's fault but the server's (a database that does not
/// answer, a key that does not open). Cheap to clone; two are equal only if they are the same
/// failure.
#[derive(Clone)]
pub struct Internal(Arc<anyhow::Error>);

impl Internal {
    /// `cause`, while doing `context` ("loading signing keys").
    pub fn new(context: &'static str, cause: impl Into<anyhow::Error>) -> Self {
        Internal(Arc::new(cause.into().context(context)))
    }

    /// A failure with no error value behind it, described by `message`.
    pub fn msg(context: &'static str, message: impl fmt::Display) -> Self {
        Internal(Arc::new(anyhow::anyhow!("{message}").context(context)))
    }

    /// Logs the failure with its whole cause chain; `door` says who answered for it.
    pub fn log(&self, door: &str) {
        tracing::error!("{door}: {self}");
    }
}

impl fmt::Display for Internal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl fmt::Debug for Internal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Internal({self})")
    }
}

impl PartialEq for Internal {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Internal {}

impl std::error::Error for Internal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_what_was_done_and_the_whole_chain() {
        let cause = anyhow::anyhow!("connection refused").context("opening the pool");
        let e = Internal::new("loading signing keys", cause);
        assert_eq!(
            e.to_string(),
            "loading signing keys: opening the pool: connection refused"
        );
        assert_eq!(e, e.clone());
        assert_ne!(e, Internal::msg("loading signing keys", "x"));
    }
}
