//! A payment intent's statuses and what a gateway's answer makes of them. Pure.

use crate::gateway::GatewayStatus;

/// Stripe's seven statuses, and `requires_review` for a gateway reply that could not be
/// trusted (Hyperswitch's "conflicted"): nothing was posted, a person must look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentStatus {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    /// A step is with the gateway (its answer is not in yet).
    Processing,
    RequiresCapture,
    Canceled,
    Succeeded,
    RequiresReview,
}

impl IntentStatus {
    pub const ALL: [IntentStatus; 8] = [
        IntentStatus::RequiresPaymentMethod,
        IntentStatus::RequiresConfirmation,
        IntentStatus::RequiresAction,
        IntentStatus::Processing,
        IntentStatus::RequiresCapture,
        IntentStatus::Canceled,
        IntentStatus::Succeeded,
        IntentStatus::RequiresReview,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IntentStatus::RequiresPaymentMethod => "requires_payment_method",
            IntentStatus::RequiresConfirmation => "requires_confirmation",
            IntentStatus::RequiresAction => "requires_action",
            IntentStatus::Processing => "processing",
            IntentStatus::RequiresCapture => "requires_capture",
            IntentStatus::Canceled => "canceled",
            IntentStatus::Succeeded => "succeeded",
            IntentStatus::RequiresReview => "requires_review",
        }
    }

    pub fn parse(text: &str) -> Option<IntentStatus> {
        IntentStatus::ALL.into_iter().find(|status| status.as_str() == text)
    }

    pub fn of_gateway(status: GatewayStatus) -> IntentStatus {
        match status {
            GatewayStatus::RequiresPaymentMethod => IntentStatus::RequiresPaymentMethod,
            GatewayStatus::RequiresConfirmation => IntentStatus::RequiresConfirmation,
            GatewayStatus::RequiresAction => IntentStatus::RequiresAction,
            GatewayStatus::Processing => IntentStatus::Processing,
            GatewayStatus::RequiresCapture => IntentStatus::RequiresCapture,
            GatewayStatus::Canceled => IntentStatus::Canceled,
            GatewayStatus::Succeeded => IntentStatus::Succeeded,
        }
    }

    /// How far along an intent in this status is: a gateway event about a status not
    /// further along than Till's is stale (it was sent before what Till already knows).
    /// `canceled` and `succeeded` are both ends; `requires_review` is past everything a
    /// gateway can say.
    pub fn progress(self) -> u8 {
        match self {
            IntentStatus::RequiresPaymentMethod => 0,
            IntentStatus::RequiresConfirmation => 1,
            IntentStatus::RequiresAction => 2,
            IntentStatus::Processing => 3,
            IntentStatus::RequiresCapture => 4,
            IntentStatus::Canceled | IntentStatus::Succeeded => 5,
            IntentStatus::RequiresReview => 6,
        }
    }

    /// Statuses a confirm may start from.
    pub fn confirmable(self) -> bool {
        matches!(self, IntentStatus::RequiresPaymentMethod | IntentStatus::RequiresConfirmation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_as_itself() {
        for status in IntentStatus::ALL {
            assert_eq!(IntentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(IntentStatus::parse("requires_reconsideration"), None);
    }
}
