"""The Account resource (contract §6.3) and the account-level Notifications
list."""

import pytest
from twilio.base.exceptions import TwilioRestException

from harness import (assert_list_envelope, assert_matches_schema, assert_rfc2822,
                     assert_twilio_error)

ACCOUNT = "/2010-04-01/Accounts/{Sid}.json"

ACCOUNT_KEYS = {"auth_token", "date_created", "date_updated", "friendly_name",
                "owner_account_sid", "sid", "status", "subresource_uris", "type", "uri"}

SUBRESOURCES = {
    "available_phone_numbers": "AvailablePhoneNumbers", "calls": "Calls",
    "conferences": "Conferences", "incoming_phone_numbers": "IncomingPhoneNumbers",
    "notifications": "Notifications", "outgoing_caller_ids": "OutgoingCallerIds",
    "recordings": "Recordings", "transcriptions": "Transcriptions",
    "addresses": "Addresses", "signing_keys": "SigningKeys",
    "connect_apps": "ConnectApps", "sip": "SIP",
    "authorized_connect_apps": "AuthorizedConnectApps", "usage": "Usage",
    "keys": "Keys", "applications": "Applications", "short_codes": "SMS/ShortCodes",
    "queues": "Queues", "messages": "Messages", "balance": "Balance"}


def test_fetch_account_json(twigate):
    for name in ("a", "b"):
        acct = twigate.accounts[name]
        r = twigate.http("GET", f"/2010-04-01/Accounts/{acct.sid}.json", account=name)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].split(";")[0].strip() == "application/json"
        body = r.json()
        assert_matches_schema(ACCOUNT, "get", 200, body)
        assert set(body) == ACCOUNT_KEYS, sorted(body)
        assert body["sid"] == acct.sid
        assert body["owner_account_sid"] == acct.sid
        assert body["auth_token"] == acct.auth_token
        assert body["friendly_name"] == acct.friendly_name
        assert body["status"] == "active"
        assert body["type"] == "Full"
        assert body["uri"] == f"/2010-04-01/Accounts/{acct.sid}.json"
        assert_rfc2822(body["date_created"], "date_created")
        assert_rfc2822(body["date_updated"], "date_updated")
        subs = body["subresource_uris"]
        assert len(SUBRESOURCES) == 20
        assert set(subs) == set(SUBRESOURCES), sorted(subs)
        for key, name_ in SUBRESOURCES.items():
            assert subs[key] == f"/2010-04-01/Accounts/{acct.sid}/{name_}.json", (key, subs[key])


def test_fetch_account_sdk(twigate):
    acct = twigate.accounts["a"]
    c = twigate.client("a")
    fetched = c.api.accounts(acct.sid).fetch()
    assert fetched.sid == acct.sid
    assert fetched.friendly_name == acct.friendly_name
    assert fetched.status == "active"
    assert fetched.type == "Full"
    assert fetched.owner_account_sid == acct.sid
    assert fetched.date_created is not None
    # client.api.account is the same resource through the default account
    assert c.api.account.fetch().sid == acct.sid


def test_account_is_refused_to_a_standard_api_key(twigate):
    """Issue 16 §2: an SK key must not read the Account resource, whose body
    carries auth_token (the webhook signing key). Twilio lets only Main keys
    reach /Accounts; a Standard key gets 401 / 20003 and no body fields."""
    acct = twigate.accounts["a"]
    with pytest.raises(TwilioRestException) as ei:
        twigate.client("a", api_key=True).api.accounts(acct.sid).fetch()
    assert ei.value.status == 401 and ei.value.code == 20003
    r = twigate.http("GET", twigate.account_uri("a") + ".json",
                     auth=(acct.api_key_sid, acct.api_key_secret))
    assert_twilio_error(r, 401, 20003)
    assert acct.auth_token not in r.text
    # The same key still acts on the account's calls (contract §1).
    twigate.client("a", api_key=True).calls.list(limit=1)


def test_unknown_account_is_an_error(twigate):
    ghost = "AC" + "0badc0de" * 4
    r = twigate.http("GET", f"/2010-04-01/Accounts/{ghost}.json")
    assert r.status_code in (401, 404), r.text
    assert_twilio_error(r, r.status_code)


def test_account_notifications_list(twigate):
    r = twigate.http("GET", twigate.account_uri("a") + "/Notifications.json")
    assert r.status_code == 200, r.text
    body = r.json()
    assert_list_envelope(body, "notifications")
    assert_matches_schema("/2010-04-01/Accounts/{AccountSid}/Notifications.json",
                          "get", 200, body)
