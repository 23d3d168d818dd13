//! Exponential backoff with full jitter (Marc Brooker, "Exponential Backoff And Jitter",
//! AWS Architecture Blog, 2015): the wait before retry `n` (0-based) is a uniformly
//! random duration in `[0, min(cap, base · 2^n)]`. Full jitter spreads the retries of
//! many clients that failed together, so they do not return together.
//!
//! Hand-written, in integers (milliseconds): the formula is one line, and the crates that
//! offer it either use floats or a different jitter.

use std::time::Duration;

/// How retries wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The ceiling of the wait before retry `attempt` (0-based): `min(cap, base · 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let base_ms = u64::try_from(self.base.as_millis()).unwrap_or(u64::MAX);
        let cap_ms = u64::try_from(self.cap.as_millis()).unwrap_or(u64::MAX);
        // base · 2^attempt, saturating: a shift that loses bits has overflowed.
        let grown =
            (attempt < 64).then(|| base_ms << attempt).filter(|grown| grown >> attempt == base_ms).unwrap_or(u64::MAX);
        Duration::from_millis(grown.min(cap_ms))
    }

    /// The wait before retry `attempt`, given a uniformly random `random` (any u64): full
    /// jitter over `[0, ceiling]`, but never less than a `Retry-After` the party asked
    /// for (itself bounded by the cap, so a hostile `Retry-After` cannot park a caller).
    pub fn delay(&self, attempt: u32, random: u64, retry_after: Option<Duration>) -> Duration {
        let ceiling_ms = u64::try_from(self.ceiling(attempt).as_millis()).unwrap_or(u64::MAX);
        let jittered = Duration::from_millis(random % ceiling_ms.saturating_add(1));
        match retry_after {
            Some(asked) => jittered.max(asked.min(self.cap)),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let backoff = Backoff { base: Duration::from_millis(100), cap: Duration::from_secs(2) };
        let ceilings: Vec<u128> = (0..7).map(|attempt| backoff.ceiling(attempt).as_millis()).collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(backoff.ceiling(200), Duration::from_secs(2), "no overflow for huge attempts");
    }

    #[test]
    fn retry_after_is_honoured_within_the_cap() {
        let backoff = Backoff { base: Duration::from_millis(100), cap: Duration::from_secs(2) };
        assert_eq!(backoff.delay(0, 0, Some(Duration::from_secs(1))), Duration::from_secs(1));
        assert_eq!(backoff.delay(0, 0, Some(Duration::from_secs(3600))), Duration::from_secs(2));
    }

    proptest! {
        #[test]
        fn every_delay_is_within_zero_and_the_ceiling(
            base_ms in 1_u64..10_000, cap_ms in 1_u64..1_000_000, attempt in 0_u32..100, random in any::<u64>()
        ) {
            let backoff = Backoff { base: Duration::from_millis(base_ms), cap: Duration::from_millis(cap_ms) };
            let delay = backoff.delay(attempt, random, None);
            prop_assert!(delay <= backoff.ceiling(attempt));
            prop_assert!(backoff.ceiling(attempt) <= backoff.cap);
            let expected = base_ms.saturating_mul(1_u64.checked_shl(attempt).unwrap_or(u64::MAX)).min(cap_ms);
            prop_assert_eq!(backoff.ceiling(attempt), Duration::from_millis(expected));
        }

        #[test]
        fn the_jitter_covers_the_whole_range(attempt in 0_u32..8) {
            let backoff = Backoff { base: Duration::from_millis(64), cap: Duration::from_secs(60) };
            let ceiling = backoff.ceiling(attempt);
            prop_assert_eq!(backoff.delay(attempt, 0, None), Duration::ZERO);
            let top = u64::try_from(ceiling.as_millis()).unwrap_or(0);
            prop_assert_eq!(backoff.delay(attempt, top, None), ceiling);
        }
    }
}
