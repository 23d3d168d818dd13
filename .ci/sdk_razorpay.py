"""Razorpay's official Python SDK (PyPI `razorpay`) against Till's simulator: the SDK
works with nothing changed but its base URL, and the simulator's webhooks pass the SDK's
own signature check.

Usage: python sdk_razorpay.py http://127.0.0.1:PORT   (a running `till sim`)
Every check asserts; any failure exits non-zero.
"""

import http.server
import json
import sys
import threading
import time
import urllib.request

import razorpay

sim = sys.argv[1].rstrip("/")
client = razorpay.Client(auth=("rzp_test_sdk_check", "sdk_check_secret"), base_url=f"{sim}/razorpay")

SECRET = "razorpay_sdk_check_webhook_secret"
received = []


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        # Raises SignatureVerificationError unless the signature is the body's.
        client.utility.verify_webhook_signature(body, self.headers["X-Razorpay-Signature"], SECRET)
        assert self.headers["X-Razorpay-Event-Id"], "every event has its id"
        received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()
target = json.dumps({"provider": "razorpay", "url": f"http://127.0.0.1:{server.server_port}/", "secret": SECRET})
request = urllib.request.Request(f"{sim}/_sim/webhooks", data=target.encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
assert urllib.request.urlopen(request).status == 201


def payment_of(order_id, status):
    """The order's payment once it is in `status` (the customer answers the collect)."""
    deadline = time.time() + 10
    while time.time() < deadline:
        items = client.order.payments(order_id)["items"]
        if items and items[0]["status"] == status:
            return items[0]
        time.sleep(0.1)
    raise AssertionError(f"no {status} payment on {order_id}: {client.order.payments(order_id)}")


# An order captured by hand: a UPI collect approved by success@razorpay, then captured.
order = client.order.create({"amount": 50000, "currency": "INR", "receipt": "sdk-1",
                             "payment": {"capture": "manual"}})
assert order["entity"] == "order" and order["status"] == "created", order
assert client.order.all({"receipt": "sdk-1"})["items"][0]["id"] == order["id"]
created = client.payment.createUpi({"amount": 50000, "currency": "INR", "order_id": order["id"],
                                    "email": "buyer@example.in", "contact": "+919000090000", "method": "upi",
                                    "upi": {"flow": "collect", "vpa": "success@razorpay", "expiry_time": 5}})
payment_id = created["razorpay_payment_id"]
assert payment_of(order["id"], "authorized")["id"] == payment_id
captured = client.payment.capture(payment_id, 50000, {"currency": "INR"})
assert captured["status"] == "captured" and captured["captured"] is True, captured
assert (captured["fee"], captured["tax"]) == (1180, 180), captured
assert client.order.fetch(order["id"])["status"] == "paid"

# Refunds, partial, as the SDK makes and lists them.
refund = client.payment.refund(payment_id, {"amount": 20000, "speed": "normal"})
assert refund["entity"] == "refund" and refund["status"] == "processed" and refund["amount"] == 20000, refund
assert [item["id"] for item in client.payment.fetch_multiple_refund(payment_id)["items"]] == [refund["id"]]
assert client.refund.fetch(refund["id"])["payment_id"] == payment_id

# Errors come back as the SDK's own exceptions.
try:
    client.payment.refund(payment_id, {"amount": 40000})
    raise AssertionError("an over-refund must raise BadRequestError")
except razorpay.errors.BadRequestError as error:
    assert "greater than amount captured" in str(error), error

# A declined collect: failure@razorpay fails, automatically captured orders alike.
declined = client.order.create({"amount": 10000, "currency": "INR", "receipt": "sdk-2"})
client.payment.createUpi({"amount": 10000, "currency": "INR", "order_id": declined["id"], "method": "upi",
                          "email": "buyer@example.in", "contact": "+919000090000",
                          "upi": {"flow": "collect", "vpa": "failure@razorpay"}})
failed = payment_of(declined["id"], "failed")
assert failed["error_reason"] == "payment_failed", failed

# Settlement: what was captured less its fee and the refund, and its recon lines.
urllib.request.urlopen(urllib.request.Request(f"{sim}/_sim/razorpay/settle", method="POST"))
settlements = client.settlement.all({"count": 10})["items"]
assert sum(item["amount"] for item in settlements) == 50000 - 1180 - 20000, settlements
day = time.gmtime(settlements[0]["created_at"] + 5 * 3600 + 1800)
recon = client.settlement.report({"year": day.tm_year, "month": day.tm_mon, "day": day.tm_mday})["items"]
assert sorted(item["type"] for item in recon) == ["payment", "refund"], recon

deadline = time.time() + 10
wanted = {"payment.authorized", "payment.captured", "order.paid", "refund.processed", "payment.failed",
          "settlement.processed"}
while not wanted <= {event["event"] for event in received} and time.time() < deadline:
    time.sleep(0.1)
assert wanted <= {event["event"] for event in received}, [event["event"] for event in received]
print(f"razorpay {razorpay.__version__ if hasattr(razorpay, '__version__') else '2.0.1'}: every check passed "
      f"against {sim} ({len(received)} webhooks verified)")
