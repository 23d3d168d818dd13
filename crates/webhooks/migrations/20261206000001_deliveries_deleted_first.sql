-- Deleting an endpoint deletes its deliveries first, in their own statement, and then
-- the endpoint (crates/webhooks/src/api.rs, delete_endpoint): the delivery worker locks a
-- delivery and then its endpoint, and a cascade from the endpoint would take the same two
-- locks in the other order and could deadlock with it (found by schemathesis: a 500 on
-- DELETE /v1/webhook_endpoints/{id} while deliveries were being claimed). The tenant
-- policy on the table already covers DELETE.
GRANT DELETE ON webhooks.deliveries TO till_app;
