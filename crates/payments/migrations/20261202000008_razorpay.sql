-- Razorpay beside Stripe: INR intents are routed to it (UPI collect). Its intents,
-- payouts (settlements) and webhook events are stored in the same tables, and each
-- business's money with it in ledger accounts of its own (`receivable:razorpay`,
-- `settled:razorpay`), so that the checker compares each gateway's figures apart.
ALTER TABLE payments.intents DROP CONSTRAINT intents_gateway_check;
ALTER TABLE payments.intents ADD CONSTRAINT intents_gateway_check CHECK (gateway IN ('stripe', 'razorpay'));

ALTER TABLE payments.gateway_payouts DROP CONSTRAINT gateway_payouts_gateway_check;
ALTER TABLE payments.gateway_payouts ADD CONSTRAINT gateway_payouts_gateway_check
    CHECK (gateway IN ('stripe', 'razorpay'));

ALTER TABLE payments.gateway_events DROP CONSTRAINT gateway_events_gateway_check;
ALTER TABLE payments.gateway_events ADD CONSTRAINT gateway_events_gateway_check
    CHECK (gateway IN ('stripe', 'razorpay'));

ALTER TABLE payments.ledger_accounts DROP CONSTRAINT ledger_accounts_role_check;
ALTER TABLE payments.ledger_accounts ADD CONSTRAINT ledger_accounts_role_check
    CHECK (role IN ('receivable:stripe', 'receivable:razorpay', 'merchant_pending', 'refund_capacity',
                    'merchant_available', 'settled:stripe', 'settled:razorpay'));
