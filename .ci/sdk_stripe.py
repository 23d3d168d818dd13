"""Stripe's official Python SDK (PyPI `stripe`) against Till's simulator: the simulator
speaks Stripe's API closely enough that the SDK works with nothing changed but its base
URL, and signs its webhooks so that the SDK's own verification accepts them.

Usage: python sdk_stripe.py http://127.0.0.1:PORT   (a running `till sim`)
Every check asserts; any failure exits non-zero.
"""

import http.server
import json
import sys
import threading
import time
import urllib.request

import stripe

sim = sys.argv[1].rstrip("/")
stripe.api_key = "sk_test_sdk_check"
stripe.api_base = f"{sim}/stripe"
stripe.max_network_retries = 0

# Webhooks: a receiver on loopback, registered with the simulator with a secret; each
# event must pass stripe.Webhook.construct_event, the SDK's own signature check.
SECRET = "whsec_sdk_check_secret"
received = []


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        event = stripe.Webhook.construct_event(body, self.headers["Stripe-Signature"], SECRET, tolerance=300)
        received.append(event)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()
target = json.dumps({"provider": "stripe", "url": f"http://127.0.0.1:{server.server_port}/", "secret": SECRET})
request = urllib.request.Request(f"{sim}/_sim/webhooks", data=target.encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
assert urllib.request.urlopen(request).status == 201

# Authorise, capture in part, refund in part.
intent = stripe.PaymentIntent.create(amount=1000, currency="gbp", capture_method="manual",
                                     payment_method="pm_card_visa", confirm=True, idempotency_key="sdk-1")
assert intent.status == "requires_capture" and intent.amount_capturable == 1000, intent
again = stripe.PaymentIntent.create(amount=1000, currency="gbp", capture_method="manual",
                                    payment_method="pm_card_visa", confirm=True, idempotency_key="sdk-1")
assert again.id == intent.id, "the same Idempotency-Key answers the same intent"
captured = stripe.PaymentIntent.capture(intent.id, amount_to_capture=800)
assert captured.status == "succeeded" and captured.amount_received == 800, captured
charge = stripe.Charge.retrieve(captured.latest_charge)
fee = stripe.BalanceTransaction.retrieve(charge.balance_transaction)
assert (fee.amount, fee.fee, fee.net) == (800, 32, 768), fee
refund = stripe.Refund.create(payment_intent=intent.id, amount=300)
assert refund.status == "succeeded" and refund.amount == 300, refund
assert stripe.PaymentIntent.retrieve(intent.id).amount_received == 800

# Errors come back as the SDK's own exceptions.
try:
    stripe.PaymentIntent.create(amount=500, currency="gbp", payment_method="pm_card_visa_chargeDeclined",
                                confirm=True)
    raise AssertionError("a declined card must raise CardError")
except stripe.CardError as error:
    assert error.code == "card_declined" and error.error.decline_code == "generic_decline", error
try:
    stripe.Refund.create(payment_intent=intent.id, amount=10_000)
    raise AssertionError("an over-refund must raise InvalidRequestError")
except stripe.InvalidRequestError as error:
    assert error.code == "amount_too_large", error

# Settlement: payouts and their reports, as the SDK lists them (`till sim` pays out on
# its schedule too, so what was captured may be in one payout or two).
urllib.request.urlopen(urllib.request.Request(f"{sim}/_sim/stripe/settle", method="POST"))
payouts = stripe.Payout.list(limit=10)
assert payouts.data and all(payout.status == "paid" for payout in payouts.data), payouts
assert sum(payout.amount for payout in payouts.data) == 800 - 32 - 300, payouts
kinds = sorted(line.type for payout in payouts.data
               for line in stripe.BalanceTransaction.list(payout=payout.id, limit=100).auto_paging_iter())
assert kinds.count("charge") == 1 and kinds.count("refund") == 1, kinds

# The webhooks arrived, each verified by the SDK.
deadline = time.time() + 10
wanted = {"payment_intent.amount_capturable_updated", "payment_intent.succeeded", "refund.created",
          "payment_intent.payment_failed", "payout.paid"}
while not wanted <= {event.type for event in received} and time.time() < deadline:
    time.sleep(0.1)
assert wanted <= {event.type for event in received}, [event.type for event in received]
print(f"stripe {stripe.VERSION}: every check passed against {sim} ({len(received)} webhooks verified)")
