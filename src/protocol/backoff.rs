//! Jittered exponential backoff ("full jitter"): spreads out callers that collide.

use std::time::Duration;

pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff { next: first, cap }
    }

    /// A random pause in [ceiling/2, ceiling]; the ceiling doubles up to the cap.
    pub fn next_pause(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.cap);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_stays_in_range() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let pauses: Vec<Duration> = (0..5).map(|_| b.next_pause()).collect();
        assert!(pauses[0] >= Duration::from_millis(50) && pauses[0] <= Duration::from_millis(100));
        assert!(pauses[4] >= Duration::from_millis(200) && pauses[4] <= Duration::from_millis(400));
    }
}
