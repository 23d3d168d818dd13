"""simple-salesforce (PyPI) against Till's simulated Salesforce org: the SDK works with
nothing changed but its instance URL (the simulator's TLS listener, whose self-signed
certificate the caller trusts through REQUESTS_CA_BUNDLE), upserting by external id,
reading back, and a Composite request answered per subrequest; an expired session is the
SDK's own SalesforceExpiredSession.

Usage: python sdk_salesforce.py https://127.0.0.1:TLS_PORT http://127.0.0.1:PORT
Every check asserts; any failure exits non-zero.
"""

import json
import sys
import urllib.request

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceExpiredSession, SalesforceMalformedRequest

org, sim = sys.argv[1].rstrip("/"), sys.argv[2].rstrip("/")

# The client-credentials flow, as Till's connected app signs in.
token = requests.post(
    f"{org}/services/oauth2/token",
    data={"grant_type": "client_credentials", "client_id": "3MVG9sdkcheck", "client_secret": "till_simulator_salesforce_secret"},
    timeout=10,
).json()
assert token["token_type"] == "Bearer", token
assert token["instance_url"] == org, token

sf = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], version="60.0")

# Upsert by external id: made (201), then updated (204 from the SDK's view, 200 here).
assert sf.Account.upsert("Till_Business_Id__c/biz_sdk", {"Name": "SDK Check Ltd", "BillingCountryCode": "GB"}) == 201
assert sf.Account.upsert("Till_Business_Id__c/biz_sdk", {"Name": "SDK Check Limited"}) in (200, 204)
account = sf.Account.get_by_custom_id("Till_Business_Id__c", "biz_sdk")
assert account["Name"] == "SDK Check Limited", account
assert account["attributes"]["type"] == "Account", account

# Composite: one response per subrequest, each with its own status.
answer = sf.restful(
    "composite",
    method="POST",
    json={
        "allOrNone": False,
        "compositeRequest": [
            {"method": "PATCH", "url": "/services/data/v60.0/sobjects/Opportunity/Till_Payment_Id__c/pi_sdk",
             "referenceId": "payment", "body": {"Name": "Payment pi_sdk", "StageName": "Closed Won",
                                                 "CloseDate": "2026-12-04", "Amount": 12.50,
                                                 "Account": {"Till_Business_Id__c": "biz_sdk"}}},
            {"method": "PATCH", "url": "/services/data/v60.0/sobjects/Opportunity/Till_Payment_Id__c/pi_orphan",
             "referenceId": "orphan", "body": {"Name": "Orphan", "Account": {"Till_Business_Id__c": "biz_none"}}},
        ],
    },
)
statuses = {item["referenceId"]: item["httpStatusCode"] for item in answer["compositeResponse"]}
assert statuses == {"payment": 201, "orphan": 404}, answer

# A record the org refuses: the SDK's own exception.
faults = f"{sim}/_sim/faults"
def arm(operation, fault):
    body = json.dumps({"provider": "salesforce", "operation": operation, "fault": fault}).encode()
    request = urllib.request.Request(faults, data=body, headers={"Content-Type": "application/json"})
    assert urllib.request.urlopen(request, timeout=10).status == 201

arm("upsert:Account/biz_refused", "validation_error")
try:
    sf.Account.upsert("Till_Business_Id__c/biz_refused", {"Name": "Refused"})
    raise AssertionError("the validation rule should refuse it")
except SalesforceMalformedRequest as error:
    assert error.content[0]["errorCode"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION", error.content

# The org ends the session: the SDK says so in its own terms.
arm("upsert", "session_expired")
try:
    sf.Account.upsert("Till_Business_Id__c/biz_sdk", {"Name": "Again"})
    raise AssertionError("the session should have expired")
except SalesforceExpiredSession:
    pass

calls = json.load(urllib.request.urlopen(f"{sim}/_sim/calls?provider=salesforce", timeout=10))["data"]
assert [call["operation"] for call in calls].count("upsert") >= 3, calls
print("simple-salesforce against the simulator: ok")
