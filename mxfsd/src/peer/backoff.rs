//! Exponential backoff with jitter for redialling a peer.

use std::time::Duration;

/// First delay after a failure or a lost link.
pub const INITIAL: Duration = Duration::from_millis(100);
/// Longest delay: a restarted peer is found again within a few seconds.
pub const CAP: Duration = Duration::from_secs(5);

/// Delays that double from `initial` to `cap`, each drawn uniformly from
/// the upper half of its step ("equal jitter"): never below half the step,
/// so it still backs off, and spread out, so the nodes that lost one peer
/// together do not all redial it in the same millisecond.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    step: Duration,
    rng: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(INITIAL, CAP)
    }
}

impl Backoff {
    pub fn new(initial: Duration, cap: Duration) -> Self {
        let mut seed = [0u8; 8];
        // Jitter only needs to differ between nodes, not to be secret; if
        // the OS has no randomness for us, the clock will do.
        if getrandom::getrandom(&mut seed).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            seed = nanos.to_le_bytes();
        }
        Backoff::with_seed(initial, cap, u64::from_le_bytes(seed))
    }

    /// Deterministic jitter, for tests.
    pub fn with_seed(initial: Duration, cap: Duration, seed: u64) -> Self {
        let initial = initial.min(cap);
        Backoff {
            initial,
            cap,
            step: initial,
            rng: seed,
        }
    }

    /// The delay before the next attempt; the step after it doubles.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = step.saturating_mul(2).min(self.cap);
        let half = step / 2;
        let spread = u64::try_from((step - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = match spread {
            0 => 0,
            s => self.next_u64() % (s + 1).max(1),
        };
        half + Duration::from_nanos(jitter)
    }

    /// After a link that came up: the next failure starts from `initial`.
    pub fn reset(&mut self) {
        self.step = self.initial;
    }

    /// splitmix64: tiny, any seed works, good enough for jitter.
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_in_the_upper_half_and_resets() {
        let mut b = Backoff::with_seed(INITIAL, CAP, 1);
        let mut step = INITIAL;
        let mut seen = Vec::new();
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(d >= step / 2 && d <= step, "{d:?} outside {step:?}");
            seen.push(d);
            step = (step * 2).min(CAP);
        }
        // the last ones are capped
        assert!(seen[11] <= CAP && seen[11] >= CAP / 2);
        // jitter actually varies
        let mut capped: Vec<_> = seen[8..].to_vec();
        capped.dedup();
        assert!(capped.len() > 1);
        b.reset();
        assert!(b.next_delay() <= INITIAL);
    }

    #[test]
    fn different_seeds_spread() {
        let a: Vec<_> = (0..5)
            .map(|s| Backoff::with_seed(INITIAL, CAP, s).next_delay())
            .collect();
        let mut d = a.clone();
        d.sort();
        d.dedup();
        assert!(d.len() > 1, "{a:?}");
    }
}
