//! How often a level-triggered reconciler that follows the registry runs its passes.
//!
//! A pass looks at every unit, so one pass per change makes a burst of N changes (a thousand
//! units submitted one request at a time) cost N passes of N units each, and the passes take
//! the cores the requests need. Paced, a reconciler idles for a multiple of its last pass's
//! duration before the next: it never takes more than its share of a core, a burst is handled
//! in few passes, and a lone change on a quiet machine is still acted on at once.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Pacing {
    idle_per_busy: u32,
    longest_pause: Duration,
    next: Instant,
}

impl Pacing {
    /// After a pass of duration `d`, the next waits `idle_per_busy × d`, at most `longest_pause`.
    pub fn new(idle_per_busy: u32, longest_pause: Duration) -> Pacing {
        Pacing {
            idle_per_busy,
            longest_pause,
            next: Instant::now(),
        }
    }

    /// Whether a pass may start at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// When the next pass may start.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// Records a pass that ran from `began` to `ended`.
    pub fn passed(&mut self, began: Instant, ended: Instant) {
        let busy = ended.saturating_duration_since(began);
        let pause = busy
            .saturating_mul(self.idle_per_busy)
            .min(self.longest_pause);
        self.next = self.next.max(ended + pause);
    }

    /// Holds the next pass until at least `at` (a pause the reconciler chose for itself).
    pub fn hold_until(&mut self, at: Instant) {
        self.next = self.next.max(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// (idle per busy, longest pause ms, pass duration ms, hold ms after the pass end, expected
    /// pause ms after the pass end)
    #[test]
    fn the_pause_follows_the_last_pass() {
        let cases = [
            (2, 200, 0, None, 0),
            (2, 200, 5, None, 10),
            (3, 200, 10, None, 30),
            (2, 200, 150, None, 200),
            (2, 200, 5, Some(100), 100),
            (2, 200, 50, Some(20), 100),
        ];
        for (idle, longest, busy, hold, pause) in cases {
            check(idle, longest, busy, hold, pause);
        }
    }

    fn check(idle: u32, longest: u64, busy: u64, hold: Option<u64>, pause: u64) {
        let mut pacing = Pacing::new(idle, ms(longest));
        let began = Instant::now();
        let ended = began + ms(busy);
        assert!(pacing.ready(began), "a fresh pacing is ready");
        pacing.passed(began, ended);
        if let Some(hold) = hold {
            pacing.hold_until(ended + ms(hold));
        }
        let case = format!("idle {idle}, longest {longest}, busy {busy}, hold {hold:?}");
        assert_eq!(pacing.next(), ended + ms(pause), "{case}");
        assert!(pacing.ready(ended + ms(pause)), "{case}");
        if pause > 0 {
            assert!(!pacing.ready(ended + ms(pause) - ms(1)), "{case}");
        }
    }
}
