//! The server's memory, bounded whatever clients send: one budget for the upload bytes
//! held across all connections, one for the pixels being decoded, each a semaphore of
//! KiB permits held while the bytes are.

use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Upload bytes held at once across all connections, at least (the budget is raised to
/// the largest upload when `--max-upload-mib` asks for more).
pub const BODY_BUDGET: usize = 48 << 20;

/// Uploads declaring at most this many bytes (drawings, screenshots, small photos) are
/// held against a budget of their own, [`SMALL_BODY_BUDGET`].
pub const SMALL_UPLOAD: usize = 512 << 10;

/// Bytes held at once for small uploads.
pub const SMALL_BODY_BUDGET: usize = 16 << 20;

/// Bytes that images being decoded may take at once (the decoded pixels and their grey
/// copies), and so the most one image may take: a 6000×4000 RGB photo needs 120 MB,
/// a 6000×6000 16-bit RGBA PNG 432 MB and is refused.
pub const DECODE_BUDGET: usize = 160 << 20;

/// A pool of bytes, lent in KiB. While a borrower waits, holders that have stalled are
/// asked to give theirs back ([`Budget::pressed`]), so that stalled uploads cannot keep
/// live ones out for long.
pub struct Budget {
    permits: std::sync::Arc<Semaphore>,
    kib: usize,
    pressure: Notify,
}

/// Bytes lent from a [`Budget`], returned when dropped.
pub type Lease = OwnedSemaphorePermit;

impl Budget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        let kib = bytes.div_ceil(1024).max(1);
        Self {
            permits: std::sync::Arc::new(Semaphore::new(kib)),
            kib,
            pressure: Notify::new(),
        }
    }

    /// The whole budget in bytes.
    pub fn bytes(&self) -> usize {
        self.kib * 1024
    }

    /// Borrows `bytes`, waiting until they are free; `None` when they exceed the whole
    /// budget (they never will be free).
    pub async fn lease(&self, bytes: usize) -> Option<Lease> {
        let kib = u32::try_from(bytes.div_ceil(1024)).ok()?;
        if kib as usize > self.kib {
            return None;
        }
        loop {
            if let Ok(lease) = self.permits.clone().try_acquire_many_owned(kib) {
                return Some(lease);
            }
            // Ask stalled holders to give up, again as more of them become stalled.
            self.pressure.notify_waiters();
            tokio::select! {
                lease = self.permits.clone().acquire_many_owned(kib) => return lease.ok(),
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// Completes when a borrower is waiting for bytes: a holder that has made no
    /// progress for a while should then give its bytes back.
    pub async fn pressed(&self) {
        self.pressure.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn leases_wait_for_returned_bytes_and_refuse_the_impossible() {
        let budget = Budget::new(10 << 10);
        let a = budget.lease(6 << 10).await.unwrap();
        assert!(budget.lease(11 << 10).await.is_none());
        // 6 + 6 > 10: the second waits until the first is returned.
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), budget.lease(6 << 10));
        assert!(waiting.await.is_err());
        drop(a);
        assert!(budget.lease(6 << 10).await.is_some());
    }

    #[tokio::test]
    async fn a_waiting_borrower_presses_the_holders() {
        let budget = std::sync::Arc::new(Budget::new(10 << 10));
        let held = budget.lease(10 << 10).await.unwrap();
        let holder = {
            let budget = budget.clone();
            tokio::spawn(async move {
                budget.pressed().await;
                drop(held); // a stalled holder gives its bytes back
            })
        };
        tokio::task::yield_now().await;
        let lease = tokio::time::timeout(Duration::from_secs(5), budget.lease(4 << 10)).await;
        assert!(lease.unwrap().is_some());
        holder.await.unwrap();
    }
}
