//! The payout policy engine (pure): per business, per currency, what a payout may be and
//! what it needs before it goes.
//!
//! In order, for a new payout:
//! 1. the rail's own limit (Faster Payments £1,000,000; IMPS ₹5 lakh) and the business's
//!    `per_payout_max` — above either, refused;
//! 2. the velocity limits `daily_max` and `monthly_max`, over the payouts made today and
//!    this month (UTC) that were not failed or canceled — past either, refused;
//! 3. `approval_threshold` — above it, held in `requires_approval` for a second person
//!    (maker-checker: an admin or owner other than its creator);
//! 4. the cooling-off for new beneficiaries — a beneficiary younger than
//!    `new_beneficiary_cooling_off_seconds` gets the payout `scheduled` until it is old
//!    enough.
//!
//! A refusal is a 422 with the rule's name; nothing is ever sent silently past a rule.

use std::collections::BTreeMap;

use till_kit::{Currency, Money};
use time::{Duration, OffsetDateTime};

/// The longest cooling-off a business may set: 30 days.
pub const COOLING_OFF_SECONDS_MAX: i64 = 30 * 24 * 60 * 60;

/// One currency's limits, in its minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub per_payout_max: i64,
    pub daily_max: i64,
    pub monthly_max: i64,
    /// Payouts above this need a second person's approval.
    pub approval_threshold: i64,
}

/// The defaults a business starts with, per currency it can pay out in.
pub fn defaults(currency: Currency) -> Option<Limits> {
    match currency.code() {
        // £1,000,000 is the scheme's limit; £10,000 and above is a second person's call.
        "GBP" => Some(Limits {
            per_payout_max: 100_000_000,
            daily_max: 100_000_000,
            monthly_max: 1_000_000_000,
            approval_threshold: 1_000_000,
        }),
        // ₹5 lakh is IMPS's per-payment limit; ₹1 lakh and above needs approval.
        "INR" => Some(Limits {
            per_payout_max: 50_000_000,
            daily_max: 200_000_000,
            monthly_max: 2_000_000_000,
            approval_threshold: 10_000_000,
        }),
        _ => None,
    }
}

/// A business's policy: its limits per currency (defaults where it set none) and the
/// cooling-off for new beneficiaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub limits: BTreeMap<&'static str, Limits>,
    pub cooling_off_seconds: i64,
}

impl Policy {
    /// The defaults, with `overrides` (currency code → limits) laid over them.
    pub fn with(overrides: &BTreeMap<String, Limits>, cooling_off_seconds: i64) -> Policy {
        let mut limits = BTreeMap::new();
        for currency in [Currency::GBP, Currency::INR] {
            if let Some(default) = defaults(currency) {
                limits.insert(currency.code(), overrides.get(currency.code()).copied().unwrap_or(default));
            }
        }
        Policy { limits, cooling_off_seconds }
    }

    pub fn limits_of(&self, currency: Currency) -> Option<Limits> {
        self.limits.get(currency.code()).copied()
    }
}

/// What was already paid out in the currency, toward the velocity limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    pub today: i64,
    pub this_month: i64,
}

/// The policy's answer for a new payout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Queue it for the rail now.
    Send,
    /// Hold it for a second person's approval.
    RequiresApproval,
    /// Send it once the beneficiary is old enough.
    Scheduled { until: OffsetDateTime },
    /// Refused: `rule` names the limit.
    Refused { rule: &'static str, detail: String },
}

impl Decision {
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Send => "send",
            Decision::RequiresApproval => "requires_approval",
            Decision::Scheduled { .. } => "scheduled",
            Decision::Refused { .. } => "refused",
        }
    }
}

/// A payout of `amount`, through a rail that carries at most `rail_limit`, to a
/// beneficiary created at `beneficiary_created`, given what was `spent`.
pub fn decide(
    policy: &Policy,
    amount: Money,
    rail_limit: Money,
    spent: Spent,
    beneficiary_created: OffsetDateTime,
    now: OffsetDateTime,
) -> Decision {
    let currency = amount.currency();
    let shown = |minor: i64| Money::from_minor(minor, currency).to_string();
    let Some(limits) = policy.limits_of(currency) else {
        return Decision::Refused { rule: "currency", detail: format!("{} payouts are not offered.", currency.code()) };
    };
    if amount.minor() > rail_limit.minor() {
        return Decision::Refused {
            rule: "rail_limit",
            detail: format!("The rail carries at most {} per payment.", shown(rail_limit.minor())),
        };
    }
    if amount.minor() > limits.per_payout_max {
        return Decision::Refused {
            rule: "per_payout_max",
            detail: format!("The business's policy allows at most {} per payout.", shown(limits.per_payout_max)),
        };
    }
    // Checked sums: the sums of a day's payouts are far below i64's range, but a
    // corrupt row must refuse, not wrap.
    let over = |spent: i64, max: i64| spent.checked_add(amount.minor()).is_none_or(|total| total > max);
    if over(spent.today, limits.daily_max) {
        return Decision::Refused {
            rule: "daily_max",
            detail: format!(
                "The business's policy allows {} a day; {} is paid out today.",
                shown(limits.daily_max),
                shown(spent.today)
            ),
        };
    }
    if over(spent.this_month, limits.monthly_max) {
        return Decision::Refused {
            rule: "monthly_max",
            detail: format!(
                "The business's policy allows {} a month; {} is paid out this month.",
                shown(limits.monthly_max),
                shown(spent.this_month)
            ),
        };
    }
    if amount.minor() > limits.approval_threshold {
        return Decision::RequiresApproval;
    }
    cooling(policy, beneficiary_created, now)
}

/// After approval (or with none needed): now, or once the beneficiary is old enough.
pub fn cooling(policy: &Policy, beneficiary_created: OffsetDateTime, now: OffsetDateTime) -> Decision {
    let until = beneficiary_created + Duration::seconds(policy.cooling_off_seconds);
    if until > now {
        Decision::Scheduled { until }
    } else {
        Decision::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gbp(minor: i64) -> Money {
        Money::from_minor(minor, Currency::GBP)
    }

    fn policy() -> Policy {
        let mut overrides = BTreeMap::new();
        overrides.insert(
            "GBP".to_string(),
            Limits { per_payout_max: 50_000, daily_max: 100_000, monthly_max: 150_000, approval_threshold: 20_000 },
        );
        Policy::with(&overrides, 3_600)
    }

    #[test]
    fn rules_apply_in_order() {
        let now = OffsetDateTime::now_utc();
        let old = now - Duration::days(2);
        let rail = gbp(100_000_000);
        let decide = |amount: i64, spent: Spent, created| decide(&policy(), gbp(amount), rail, spent, created, now);
        assert_eq!(decide(10_000, Spent::default(), old), Decision::Send);
        assert_eq!(decide(20_000, Spent::default(), old), Decision::Send, "at the threshold is not above it");
        assert_eq!(decide(20_001, Spent::default(), old), Decision::RequiresApproval);
        assert!(matches!(decide(50_001, Spent::default(), old), Decision::Refused { rule: "per_payout_max", .. }));
        assert!(matches!(
            decide(10_000, Spent { today: 90_001, this_month: 90_001 }, old),
            Decision::Refused { rule: "daily_max", .. }
        ));
        assert!(matches!(
            decide(10_000, Spent { today: 0, this_month: 140_001 }, old),
            Decision::Refused { rule: "monthly_max", .. }
        ));
        assert_eq!(
            decide(10_000, Spent { today: 90_000, this_month: 140_000 }, old),
            Decision::Send,
            "up to the limit"
        );
        let fresh = now - Duration::seconds(60);
        assert_eq!(
            decide(10_000, Spent::default(), fresh),
            Decision::Scheduled { until: fresh + Duration::seconds(3_600) }
        );
        // Approval comes before cooling-off; once approved, the cooling-off still holds.
        assert_eq!(decide(30_000, Spent::default(), fresh), Decision::RequiresApproval);
        assert!(matches!(cooling(&policy(), fresh, now), Decision::Scheduled { .. }));
    }

    #[test]
    fn the_rail_limit_binds_whatever_the_policy() {
        let now = OffsetDateTime::now_utc();
        let mut generous = BTreeMap::new();
        generous.insert(
            "GBP".to_string(),
            Limits {
                per_payout_max: i64::MAX,
                daily_max: i64::MAX,
                monthly_max: i64::MAX,
                approval_threshold: i64::MAX,
            },
        );
        let policy = Policy::with(&generous, 0);
        let refused = decide(&policy, gbp(100_000_001), gbp(100_000_000), Spent::default(), now, now);
        assert!(matches!(refused, Decision::Refused { rule: "rail_limit", .. }));
        // Sums that would overflow refuse instead of wrapping.
        let spent = Spent { today: i64::MAX, this_month: 0 };
        assert!(matches!(
            decide(&policy, gbp(1), gbp(100_000_000), spent, now, now),
            Decision::Refused { rule: "daily_max", .. }
        ));
    }

    #[test]
    fn a_currency_left_out_keeps_its_defaults() {
        let policy = policy();
        assert_eq!(policy.limits_of(Currency::INR), defaults(Currency::INR));
        assert_ne!(policy.limits_of(Currency::GBP), defaults(Currency::GBP));
        assert_eq!(policy.limits_of(Currency::USD), None);
    }
}
