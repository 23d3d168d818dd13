-- Each gateway's webhook names the gateway's intent (Stripe's `pi_…`, Razorpay's
-- `order_…`): finding its business (`payments.owner_of_intent`) and its row read
-- payments.intents by (gateway, gateway_intent_id), which had no index, so every webhook
-- scanned every intent of every business, three times: a cost that grows with the
-- table, not with the load. Unique, too: two of Till's intents never stand for one
-- gateway object.
CREATE UNIQUE INDEX intents_gateway_intent ON payments.intents (gateway, gateway_intent_id)
    WHERE gateway_intent_id IS NOT NULL;
