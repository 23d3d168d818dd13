//! A circuit breaker per dependency.
//!
//! Closed: calls pass, and their outcomes are counted over a sliding window (a ring of
//! buckets). When the window holds at least `minimum_calls` and the share of failures
//! reaches `failure_rate_percent`, the breaker opens. Open: every call is refused at
//! once, without being made, until `open_for` has passed. Half-open: up to
//! `half_open_trials` calls go through as trials; one failure opens the breaker again,
//! and that many successes close it (with an empty window).
//!
//! Hand-written rather than taken from a crate: the state machine is small, it runs on a
//! clock tests control, and its state is exposed to callers (`state`). `failsafe`, the
//! best-known crate, changes from half-open to closed on the first successful call and
//! sets no limit on trial calls; here both are part of the contract.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What time it is, for the breaker and the retry budget: the real clock, or a clock a
/// test moves by hand.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Instant;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: Instant,
    offset: Arc<Mutex<Duration>>,
}

impl Default for ManualClock {
    fn default() -> ManualClock {
        ManualClock { start: Instant::now(), offset: Arc::default() }
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *offset = offset.saturating_add(by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        let offset = *self.offset.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.start + offset
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// How far back outcomes count.
    pub window: Duration,
    /// The window's resolution: outcomes are counted in this many buckets.
    pub buckets: u32,
    /// Calls the window must hold before the failure rate means anything.
    pub minimum_calls: u32,
    /// Failures, in percent of the window's calls, that open the breaker.
    pub failure_rate_percent: u32,
    /// How long an open breaker refuses calls before it lets trials through.
    pub open_for: Duration,
    /// Trial calls in half-open: at most this many at once, and this many successes close it.
    pub half_open_trials: u32,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig {
            window: Duration::from_secs(30),
            buckets: 10,
            minimum_calls: 20,
            failure_rate_percent: 50,
            open_for: Duration::from_secs(30),
            half_open_trials: 3,
        }
    }
}

/// The breaker's state, as callers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed { calls: u32, failures: u32 },
    Open { retry_after: Duration },
    HalfOpen { trials_in_flight: u32, successes: u32 },
}

/// Whether a call may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go; report the outcome with [`Breaker::record`]. `trial` if it is a half-open trial.
    Allowed { trial: bool },
    /// Do not call: the breaker is open for this long yet.
    Refused { retry_after: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// The call says nothing about the dependency (it could not even be made): it is not
    /// counted, and a half-open trial's place is given back.
    Neutral,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which slice of time the counts are for (its index since the clock's epoch).
    slice: u64,
    calls: u32,
    failures: u32,
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

#[derive(Debug)]
struct Inner {
    state: State,
    buckets: Vec<Bucket>,
}

/// One dependency's breaker. Clones share it.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    epoch: Instant,
    inner: Arc<Mutex<Inner>>,
}

impl Breaker {
    pub fn new(config: BreakerConfig, clock: Arc<dyn Clock>) -> Breaker {
        let config = BreakerConfig {
            buckets: config.buckets.max(1),
            minimum_calls: config.minimum_calls.max(1),
            half_open_trials: config.half_open_trials.max(1),
            ..config
        };
        let epoch = clock.now();
        let buckets = vec![Bucket::default(); usize::try_from(config.buckets).unwrap_or(1)];
        Breaker { config, clock, epoch, inner: Arc::new(Mutex::new(Inner { state: State::Closed, buckets })) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bucket_span(&self) -> Duration {
        (self.config.window / self.config.buckets).max(Duration::from_millis(1))
    }

    fn slice(&self, now: Instant) -> u64 {
        let span = self.bucket_span().as_nanos().max(1);
        u64::try_from(now.duration_since(self.epoch).as_nanos() / span).unwrap_or(u64::MAX)
    }

    /// Calls and failures in the window ending now.
    fn window(&self, inner: &Inner, now: Instant) -> (u32, u32) {
        let current = self.slice(now);
        let oldest = current.saturating_sub(u64::from(self.config.buckets) - 1);
        inner
            .buckets
            .iter()
            .filter(|bucket| bucket.slice >= oldest && bucket.slice <= current)
            .fold((0_u32, 0_u32), |(calls, failures), bucket| {
                (calls.saturating_add(bucket.calls), failures.saturating_add(bucket.failures))
            })
    }

    /// Whether a call may be made now.
    pub fn admit(&self) -> Admission {
        let now = self.clock.now();
        let mut inner = self.lock();
        match inner.state {
            State::Closed => Admission::Allowed { trial: false },
            State::Open { until } if now < until => Admission::Refused { retry_after: until - now },
            State::Open { .. } => {
                inner.state = State::HalfOpen { in_flight: 1, successes: 0 };
                Admission::Allowed { trial: true }
            }
            State::HalfOpen { in_flight, successes }
                if in_flight.saturating_add(successes) < self.config.half_open_trials =>
            {
                inner.state = State::HalfOpen { in_flight: in_flight + 1, successes };
                Admission::Allowed { trial: true }
            }
            // Enough trials are out: the rest wait for their verdict.
            State::HalfOpen { .. } => Admission::Refused { retry_after: self.bucket_span() },
        }
    }

    /// Reports the outcome of an admitted call.
    pub fn record(&self, admission: Admission, outcome: Outcome) {
        let Admission::Allowed { trial } = admission else { return };
        let now = self.clock.now();
        let mut inner = self.lock();
        if trial {
            let State::HalfOpen { in_flight, successes } = inner.state else {
                // Opened again by another trial meanwhile: this verdict comes too late.
                return;
            };
            inner.state = match outcome {
                Outcome::Neutral => State::HalfOpen { in_flight: in_flight.saturating_sub(1), successes },
                Outcome::Failure => State::Open { until: now + self.config.open_for },
                Outcome::Success if successes + 1 >= self.config.half_open_trials => {
                    inner.buckets.iter_mut().for_each(|bucket| *bucket = Bucket::default());
                    State::Closed
                }
                Outcome::Success => {
                    State::HalfOpen { in_flight: in_flight.saturating_sub(1), successes: successes + 1 }
                }
            };
            return;
        }
        if !matches!(inner.state, State::Closed) || outcome == Outcome::Neutral {
            // A call admitted while closed, ending after the breaker opened, changes
            // nothing; nor does a call that says nothing about the dependency.
            return;
        }
        let slice = self.slice(now);
        let index = usize::try_from(slice % u64::from(self.config.buckets)).unwrap_or(0);
        let bucket = &mut inner.buckets[index];
        if bucket.slice != slice {
            *bucket = Bucket { slice, calls: 0, failures: 0 };
        }
        bucket.calls = bucket.calls.saturating_add(1);
        if outcome == Outcome::Failure {
            bucket.failures = bucket.failures.saturating_add(1);
        }
        let (calls, failures) = self.window(&inner, now);
        let failing = u64::from(failures) * 100 >= u64::from(calls) * u64::from(self.config.failure_rate_percent);
        if calls >= self.config.minimum_calls && failing {
            inner.state = State::Open { until: now + self.config.open_for };
        }
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        let now = self.clock.now();
        let inner = self.lock();
        match inner.state {
            State::Closed => {
                let (calls, failures) = self.window(&inner, now);
                BreakerState::Closed { calls, failures }
            }
            State::Open { until } if now < until => BreakerState::Open { retry_after: until - now },
            // Its time is up: the next call is a trial, so it reads as half-open with none
            // out. A caller that asks the state before it calls (does the channel take
            // messages?) must not see `Open` here, or it would never call again and the
            // breaker, which moves to half-open only when a call is admitted, would stay
            // open for good.
            State::Open { .. } => BreakerState::HalfOpen { trials_in_flight: 0, successes: 0 },
            State::HalfOpen { in_flight, successes } => {
                BreakerState::HalfOpen { trials_in_flight: in_flight, successes }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(clock: &ManualClock) -> Breaker {
        let config = BreakerConfig {
            window: Duration::from_secs(10),
            buckets: 10,
            minimum_calls: 4,
            failure_rate_percent: 50,
            open_for: Duration::from_secs(5),
            half_open_trials: 2,
        };
        Breaker::new(config, Arc::new(clock.clone()))
    }

    fn call(breaker: &Breaker, outcome: Outcome) -> Admission {
        let admission = breaker.admit();
        breaker.record(admission, outcome);
        admission
    }

    #[test]
    fn opens_on_the_failure_rate_only_after_the_minimum_calls() {
        let clock = ManualClock::default();
        let breaker = breaker(&clock);
        for _ in 0..3 {
            call(&breaker, Outcome::Failure);
        }
        assert_eq!(breaker.state(), BreakerState::Closed { calls: 3, failures: 3 }, "three calls are too few");
        call(&breaker, Outcome::Success);
        assert!(matches!(breaker.state(), BreakerState::Open { .. }), "3 of 4 failed");
        assert!(matches!(breaker.admit(), Admission::Refused { retry_after } if retry_after == Duration::from_secs(5)));
    }

    #[test]
    fn a_healthy_rate_stays_closed_and_old_failures_leave_the_window() {
        let clock = ManualClock::default();
        let breaker = breaker(&clock);
        for _ in 0..3 {
            call(&breaker, Outcome::Failure);
        }
        clock.advance(Duration::from_secs(11));
        for _ in 0..4 {
            call(&breaker, Outcome::Success);
        }
        call(&breaker, Outcome::Failure);
        assert_eq!(breaker.state(), BreakerState::Closed { calls: 5, failures: 1 });
    }

    #[test]
    fn half_open_lets_trials_through_and_closes_after_enough_successes() {
        let clock = ManualClock::default();
        let breaker = breaker(&clock);
        for _ in 0..4 {
            call(&breaker, Outcome::Failure);
        }
        clock.advance(Duration::from_secs(5));
        let first = breaker.admit();
        let second = breaker.admit();
        assert_eq!((first, second), (Admission::Allowed { trial: true }, Admission::Allowed { trial: true }));
        assert!(matches!(breaker.admit(), Admission::Refused { .. }), "only two trials at once");
        breaker.record(first, Outcome::Success);
        assert_eq!(breaker.state(), BreakerState::HalfOpen { trials_in_flight: 1, successes: 1 });
        breaker.record(second, Outcome::Success);
        assert_eq!(breaker.state(), BreakerState::Closed { calls: 0, failures: 0 });
    }

    #[test]
    fn an_open_breaker_whose_time_is_up_reads_as_half_open_before_anyone_calls() {
        let clock = ManualClock::default();
        let breaker = breaker(&clock);
        for _ in 0..4 {
            call(&breaker, Outcome::Failure);
        }
        clock.advance(Duration::from_millis(4_999));
        assert_eq!(breaker.state(), BreakerState::Open { retry_after: Duration::from_millis(1) });
        clock.advance(Duration::from_millis(1));
        assert_eq!(breaker.state(), BreakerState::HalfOpen { trials_in_flight: 0, successes: 0 });
        assert_eq!(breaker.admit(), Admission::Allowed { trial: true });
    }

    #[test]
    fn a_failed_trial_opens_it_again() {
        let clock = ManualClock::default();
        let breaker = breaker(&clock);
        for _ in 0..4 {
            call(&breaker, Outcome::Failure);
        }
        clock.advance(Duration::from_secs(6));
        let trial = breaker.admit();
        breaker.record(trial, Outcome::Failure);
        assert_eq!(breaker.state(), BreakerState::Open { retry_after: Duration::from_secs(5) });
        clock.advance(Duration::from_secs(1));
        assert!(matches!(breaker.admit(), Admission::Refused { retry_after } if retry_after == Duration::from_secs(4)));
    }

    #[test]
    fn a_neutral_call_counts_for_nothing_and_gives_back_its_trial() {
        let clock = ManualClock::default();
        let breaker = breaker(&clock);
        call(&breaker, Outcome::Neutral);
        assert_eq!(breaker.state(), BreakerState::Closed { calls: 0, failures: 0 });
        for _ in 0..4 {
            call(&breaker, Outcome::Failure);
        }
        clock.advance(Duration::from_secs(5));
        let trial = breaker.admit();
        breaker.record(trial, Outcome::Neutral);
        assert_eq!(breaker.state(), BreakerState::HalfOpen { trials_in_flight: 0, successes: 0 });
    }

    #[test]
    fn refused_calls_and_late_verdicts_change_nothing() {
        let clock = ManualClock::default();
        let breaker = breaker(&clock);
        let early = breaker.admit();
        for _ in 0..4 {
            call(&breaker, Outcome::Failure);
        }
        breaker.record(early, Outcome::Success);
        assert!(matches!(breaker.state(), BreakerState::Open { .. }), "a call from before it opened does not close it");
        let refused = breaker.admit();
        breaker.record(refused, Outcome::Success);
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
    }
}
