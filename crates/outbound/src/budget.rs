//! A retry budget: retries may add at most a fixed share to a dependency's load (plus a
//! small floor per second, so a quiet dependency can still be retried). During an outage
//! every call fails, and without a budget each one would be sent `1 + retries` times,
//! multiplying the load on a party that is already failing (the "retry storm"). The
//! budget is kept in thousandths of a retry, in integers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::breaker::Clock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Retries allowed per 100 first attempts.
    pub retries_per_100_calls: u32,
    /// Retries allowed per second whatever the traffic.
    pub retries_per_second_min: u32,
    /// The most retries that can be saved up.
    pub retries_saved_max: u32,
}

impl Default for BudgetConfig {
    fn default() -> BudgetConfig {
        BudgetConfig { retries_per_100_calls: 20, retries_per_second_min: 1, retries_saved_max: 50 }
    }
}

const MILLI: u64 = 1_000;

#[derive(Debug)]
struct Tokens {
    /// Thousandths of a retry.
    balance: u64,
    refilled_at: Instant,
}

#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: BudgetConfig,
    clock: Arc<dyn Clock>,
    tokens: Arc<Mutex<Tokens>>,
}

impl RetryBudget {
    pub fn new(config: BudgetConfig, clock: Arc<dyn Clock>) -> RetryBudget {
        let tokens = Tokens { balance: u64::from(config.retries_saved_max) * MILLI, refilled_at: clock.now() };
        RetryBudget { config, clock, tokens: Arc::new(Mutex::new(tokens)) }
    }

    fn cap(&self) -> u64 {
        u64::from(self.config.retries_saved_max) * MILLI
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A first attempt: it earns the share of a retry the budget allows per call.
    pub fn deposit(&self) {
        let earned = u64::from(self.config.retries_per_100_calls) * MILLI / 100;
        let cap = self.cap();
        let mut tokens = self.lock();
        tokens.balance = tokens.balance.saturating_add(earned).min(cap);
    }

    /// Takes one retry from the budget, or says there is none left.
    pub fn withdraw(&self) -> bool {
        let now = self.clock.now();
        let cap = self.cap();
        let mut tokens = self.lock();
        let elapsed = now.saturating_duration_since(tokens.refilled_at);
        let floor = u64::try_from(elapsed.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(self.config.retries_per_second_min));
        if floor > 0 {
            tokens.balance = tokens.balance.saturating_add(floor).min(cap);
            tokens.refilled_at = now;
        }
        if tokens.balance >= MILLI {
            tokens.balance -= MILLI;
            true
        } else {
            false
        }
    }
}

/// How long until the floor alone gives one retry (for tests and diagnostics).
pub fn floor_interval(config: &BudgetConfig) -> Option<Duration> {
    (config.retries_per_second_min > 0).then(|| Duration::from_millis(MILLI / u64::from(config.retries_per_second_min)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::ManualClock;

    #[test]
    fn retries_are_a_bounded_share_of_calls() {
        let clock = ManualClock::default();
        let config = BudgetConfig { retries_per_100_calls: 10, retries_per_second_min: 0, retries_saved_max: 2 };
        let budget = RetryBudget::new(config, Arc::new(clock.clone()));
        assert!(budget.withdraw() && budget.withdraw(), "the saved-up retries");
        assert!(!budget.withdraw(), "then none");
        for _ in 0..9 {
            budget.deposit();
        }
        assert!(!budget.withdraw(), "nine calls earn 0.9 retries");
        budget.deposit();
        assert!(budget.withdraw(), "ten calls earn one");
        assert!(!budget.withdraw());
    }

    #[test]
    fn the_floor_refills_with_time_up_to_the_cap() {
        let clock = ManualClock::default();
        let config = BudgetConfig { retries_per_100_calls: 0, retries_per_second_min: 2, retries_saved_max: 3 };
        let budget = RetryBudget::new(config, Arc::new(clock.clone()));
        for _ in 0..3 {
            assert!(budget.withdraw());
        }
        assert!(!budget.withdraw());
        clock.advance(floor_interval(&config).unwrap_or_default());
        assert!(budget.withdraw(), "half a second gives one at two per second");
        assert!(!budget.withdraw());
        clock.advance(Duration::from_secs(3600));
        let taken = (0..10).filter(|_| budget.withdraw()).count();
        assert_eq!(taken, 3, "never more than the cap saved up");
    }
}
