-- Gateways' webhooks, received and verified: one row per provider event id, so an event
-- delivered twice (or three times, shuffled) is applied once. The row is the business's
-- once the event's object is known to be one of its intents; until then only the
-- platform scope sees it.
CREATE TABLE payments.gateway_events (
    gateway      text        NOT NULL CHECK (gateway IN ('stripe')),
    event_id     text        NOT NULL,
    type         text        NOT NULL,
    object_id    text,
    business_id  uuid,
    -- What receiving it did: `expedited` (a step in flight is resumed now), `stale` (Till
    -- is already as far or further), `review` (the gateway moved without Till: a person
    -- must look), `ignored` (a type Till does not act on, or an object it does not know).
    outcome      text        CHECK (outcome IN ('expedited', 'stale', 'review', 'ignored')),
    created_at   timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway, event_id)
);

ALTER TABLE payments.gateway_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY gateway_events_platform_or_owner ON payments.gateway_events
    USING (till.current_scope() = 'platform' OR business_id = till.current_business_id())
    WITH CHECK (till.current_scope() = 'platform' OR business_id = till.current_business_id());
GRANT SELECT, INSERT ON payments.gateway_events TO till_app;
GRANT UPDATE (outcome) ON payments.gateway_events TO till_app;

-- The business of a gateway's intent: what a webhook about it needs to know before it
-- can act as that business, and all it reveals.
CREATE FUNCTION payments.owner_of_intent(intent_gateway text, gateway_id text) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT business_id FROM payments.intents WHERE gateway = intent_gateway AND gateway_intent_id = gateway_id
$$;
REVOKE ALL ON FUNCTION payments.owner_of_intent(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION payments.owner_of_intent(text, text) TO till_app;
