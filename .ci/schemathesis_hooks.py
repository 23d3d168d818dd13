"""Hooks for Till's contract run (.ci/contract), loaded through SCHEMATHESIS_HOOKS.

A real client gives each new request a key of its own and reuses a key only to retry
the same request. Generated keys repeat ("0", "00", ...) across unrelated test cases, and
a repeated key on a POST of the same body replays its first response, describing a
resource that a later test case may have deleted; so every Idempotency-Key the contract
allows is made unique per request here. A key the contract refuses (empty, too long,
not printable ASCII) is left as generated, so that its 400 is still tested. Replays are
tested, exactly, by crates/till/tests/api/idempotency.rs.
"""

import re
import uuid

import schemathesis

VALID_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")


@schemathesis.hook
def before_call(context, case, kwargs):
    # The headers about to be sent (a test of a missing header has none to change).
    headers = kwargs.get("headers") or {}
    for name in list(headers):
        if name.lower() == "idempotency-key" and isinstance(headers[name], str) and VALID_KEY.match(headers[name]):
            headers[name] = f"st-{uuid.uuid4()}"


@schemathesis.hook
def map_headers(context, headers):
    # The stateful phase builds its requests from generated headers without `before_call`.
    if headers:
        for name in list(headers):
            if name.lower() == "idempotency-key" and isinstance(headers[name], str) and VALID_KEY.match(headers[name]):
                headers[name] = f"st-{uuid.uuid4()}"
    return headers
