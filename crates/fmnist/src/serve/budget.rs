//! The server's memory, bounded whatever clients send: one budget for the upload bytes
//! held across all connections, one for the pixels being decoded, each a semaphore of
//! KiB permits held while the bytes are.

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Upload bytes held at once across all connections, at least (the budget is raised to
/// the largest upload when `--max-upload-mib` asks for more).
pub const BODY_BUDGET: usize = 48 << 20;

/// Bytes that images being decoded may take at once (the decoded pixels and their grey
/// copies), and so the most one image may take: a 6000×6000 RGB photo needs 144 MB,
/// a 40-megapixel 16-bit RGBA PNG 480 MB and is refused.
pub const DECODE_BUDGET: usize = 160 << 20;

/// A pool of bytes, lent in KiB.
pub struct Budget {
    permits: std::sync::Arc<Semaphore>,
    kib: usize,
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
        self.permits.clone().acquire_many_owned(kib).await.ok()
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
}
