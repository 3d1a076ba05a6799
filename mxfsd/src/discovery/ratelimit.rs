//! Rate limit for log lines about bad datagrams, per source address.
//!
//! Anyone on the LAN can send us datagrams as fast as the wire allows, and
//! can spoof the source address of each: the limiter must bound both the
//! log volume and its own memory.  Each source gets at most one line per
//! period; `max_sources - 1` sources are tracked one by one, and the rest
//! share the last entry, so the table never holds more than
//! `max_sources`.  Entries older than a period are dropped when room is
//! needed.  Pure (time passed in).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct LogLimiter {
    period: Duration,
    max_sources: usize,
    /// `None`: every source that did not fit.
    sources: HashMap<Option<IpAddr>, Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    logged_at: Instant,
    suppressed: u64,
}

/// Permission to log one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    /// Lines held back for this source (or the overflow bucket) since its
    /// last line.
    pub suppressed: u64,
    /// The line stands for many sources: the table of sources is full.
    pub overflow: bool,
}

impl LogLimiter {
    pub fn new(period: Duration, max_sources: usize) -> Self {
        LogLimiter {
            period,
            max_sources,
            sources: HashMap::new(),
        }
    }

    /// Tracked sources, the overflow bucket not counted.
    fn individual(&self) -> usize {
        self.sources.len() - usize::from(self.sources.contains_key(&None))
    }

    /// May we log about a datagram from `src` at `now`?
    pub fn check(&mut self, src: IpAddr, now: Instant) -> Option<Permit> {
        // One slot is kept for the overflow bucket.
        let room = self.max_sources.saturating_sub(1);
        let known = self.sources.contains_key(&Some(src));
        if !known && self.individual() >= room {
            let period = self.period;
            self.sources
                .retain(|_, e| now.saturating_duration_since(e.logged_at) < period);
        }
        let key = if known || self.individual() < room {
            Some(src)
        } else {
            None
        };
        let overflow = key.is_none();
        match self.sources.get_mut(&key) {
            None => {
                self.sources.insert(
                    key,
                    Entry {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(Permit {
                    suppressed: 0,
                    overflow,
                })
            }
            Some(e) if now.saturating_duration_since(e.logged_at) >= self.period => {
                let suppressed = std::mem::take(&mut e.suppressed);
                e.logged_at = now;
                Some(Permit {
                    suppressed,
                    overflow,
                })
            }
            Some(e) => {
                e.suppressed += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn one_line_per_source_per_period() {
        let mut l = LogLimiter::new(MIN, 8);
        let t0 = Instant::now();
        let first = Permit {
            suppressed: 0,
            overflow: false,
        };
        assert_eq!(l.check(ip(1), t0), Some(first));
        assert_eq!(l.check(ip(1), t0 + Duration::from_secs(1)), None);
        assert_eq!(l.check(ip(1), t0 + Duration::from_secs(59)), None);
        // another source is not held back by the first
        assert_eq!(l.check(ip(2), t0), Some(first));
        assert_eq!(
            l.check(ip(1), t0 + MIN),
            Some(Permit {
                suppressed: 2,
                overflow: false
            })
        );
        assert_eq!(l.check(ip(1), t0 + MIN), None);
    }

    #[test]
    fn many_sources_share_one_bucket_and_memory_stays_bounded() {
        let mut l = LogLimiter::new(MIN, 4);
        let t0 = Instant::now();
        let mut lines = 0;
        for n in 0..=255u8 {
            if let Some(p) = l.check(ip(n), t0) {
                lines += 1;
                assert_eq!(p.overflow, n >= 3, "source {n}");
            }
        }
        // three sources of their own, then one line for the rest
        assert_eq!(lines, 4);
        assert!(l.sources.len() <= 4);
        // once the period is over, old entries make room again
        let p = l.check(ip(200), t0 + MIN).unwrap();
        assert!(!p.overflow);
        assert!(l.sources.len() <= 4);
    }
}
