//! The lock metrics the volume's D-Bus object shows (design section 8):
//! lock requests and how long their grants took.  Each node counts the
//! fcntl/flock lock calls of its own applications (the module's
//! FILE_LOCK, served by [`crate::file_locks`]) and times each grant from
//! the call to the answer, waiting included.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the grant-latency histogram's buckets, in µs (the
/// last takes everything longer).
pub const LATENCY_BUCKETS_US: [u64; 7] =
    [100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, u64::MAX];

#[derive(Debug, Default)]
pub struct LockMetrics {
    requests: AtomicU64,
    granted: [AtomicU64; LATENCY_BUCKETS_US.len()],
}

impl LockMetrics {
    /// One lock request (lock, unlock or test).
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A lock granted `waited` after it was asked for.
    pub fn granted(&self, waited: Duration) {
        let us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len() - 1);
        self.granted[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// (bucket upper bound in µs, grants in it), every bucket.
    pub fn grant_latency(&self) -> Vec<(u64, u64)> {
        LATENCY_BUCKETS_US
            .iter()
            .zip(&self.granted)
            .map(|(b, n)| (*b, n.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_land_in_the_first_bucket_that_holds_them() {
        let m = LockMetrics::default();
        m.request();
        m.request();
        m.granted(Duration::from_micros(100));
        m.granted(Duration::from_micros(101));
        m.granted(Duration::from_secs(3600));
        assert_eq!(m.requests(), 2);
        let h = m.grant_latency();
        assert_eq!(h.len(), LATENCY_BUCKETS_US.len());
        assert_eq!(h[0], (100, 1));
        assert_eq!(h[1], (1_000, 1));
        assert_eq!(h[6], (u64::MAX, 1));
        assert_eq!(h.iter().map(|(_, n)| n).sum::<u64>(), 3);
    }
}
