//! Group commit: rows made at the same time written together. Each write to the database costs
//! far more than a row in it, and minting or issuing tokens comes in bursts. A row is written
//! at once unless others are being made ([`Batcher::expect`], a token being signed): those are
//! waited for (at most 2 ms, about one signature) and go in the same write, as do rows that
//! arrive while one is written. Every caller gets its own row's answer: when a write of several
//! rows fails, each is tried alone.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use super::{StoreError, StoreResult};

/// How long rows announced but not yet given are waited for before a write.
const MAX_WAIT: Duration = Duration::from_millis(2);

/// Writes a batch of rows, all or none.
pub type Write<R> = Box<
    dyn for<'a> Fn(&'a [&'a R]) -> Pin<Box<dyn Future<Output = StoreResult<()>> + Send + 'a>>
        + Send
        + Sync,
>;

/// A row waiting to be written, and who waits for it.
struct Pending<R> {
    row: R,
    /// Dropped by the writer once it holds the row.
    coming: Option<Coming>,
    done: oneshot::Sender<StoreResult<()>>,
}

/// The writer of one kind of row.
pub struct Batcher<R> {
    queue: mpsc::UnboundedSender<Pending<R>>,
    /// Rows announced by [`Batcher::expect`] that the writer does not hold yet.
    coming: Arc<AtomicUsize>,
}

/// A row that will be given soon: the writer waits a little for it. Given with the row to
/// [`Batcher::write`], or dropped when making it fails.
pub struct Coming(Arc<AtomicUsize>);

impl Drop for Coming {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<R: Send + Sync + 'static> Batcher<R> {
    /// Starts the writing task on the current Tokio runtime: at most `max_rows` rows a write,
    /// written by `write`. It ends when the `Batcher` is dropped.
    pub fn start(max_rows: usize, write: Write<R>) -> Batcher<R> {
        let (queue, mut arrived) = mpsc::unbounded_channel::<Pending<R>>();
        let coming = Arc::new(AtomicUsize::new(0));
        let expected = coming.clone();
        tokio::spawn(async move {
            let mut batch: Vec<Pending<R>> = Vec::new();
            while arrived.recv_many(&mut batch, max_rows).await > 0 {
                let until = Instant::now() + MAX_WAIT;
                loop {
                    batch.iter_mut().for_each(|p| drop(p.coming.take()));
                    if batch.len() >= max_rows || expected.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                    let room = max_rows - batch.len();
                    match timeout_at(until, arrived.recv_many(&mut batch, room)).await {
                        Ok(n) if n > 0 => {}
                        _ => break,
                    }
                }
                let rows: Vec<&R> = batch.iter().map(|p| &p.row).collect();
                let written = write(&rows).await;
                drop(rows);
                match written {
                    Ok(()) => batch.drain(..).for_each(|p| {
                        let _ = p.done.send(Ok(()));
                    }),
                    Err(e) if batch.len() == 1 => {
                        let _ = batch.remove(0).done.send(Err(e));
                    }
                    Err(_) => {
                        for p in batch.drain(..) {
                            let _ = p.done.send(write(&[&p.row]).await);
                        }
                    }
                }
            }
        });
        Batcher { queue, coming }
    }

    /// Announces a row about to be made, so the writer waits for it.
    pub fn expect(&self) -> Coming {
        self.coming.fetch_add(1, Ordering::SeqCst);
        Coming(self.coming.clone())
    }

    /// Writes `row`, announced by `coming`; returns once it is committed.
    pub async fn write(&self, row: R, coming: Coming) -> StoreResult<()> {
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                row,
                coming: Some(coming),
                done,
            })
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        answer
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?
    }
}
