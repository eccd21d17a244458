"""One date filter for every list (issue 17: rest_date_filter in src/http/rest.c):
Calls' StartTime/EndTime and Recordings' DateCreated read the same way — an
empty value is no filter, a malformed one is 400/21200 naming the parameter."""

import pytest

from harness import SHORT_TWIML, assert_twilio_error, fresh_number

TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}


def sids(resp, key):
    assert resp.status_code == 200, resp.text[:300]
    return {x["sid"] for x in resp.json()[key]}


@pytest.mark.parametrize("name", ["StartTime", "StartTime<", "StartTime>", "EndTime", "EndTime>"])
def test_empty_call_date_filter_is_no_filter(twigate, name):
    c = twigate.client()
    to = fresh_number()
    sid = c.calls.create(to=to, from_=fresh_number(), twiml=SHORT_TWIML).sid
    twigate.wait_for_status(c, sid, TERMINAL)
    uri = twigate.account_uri() + "/Calls.json"
    plain = sids(twigate.http("GET", uri, params={"To": to}), "calls")
    assert plain == {sid}
    # Before: Calls answered 400 here while Recordings ignored the empty value.
    assert sids(twigate.http("GET", uri, params={"To": to, name: ""}), "calls") == plain


@pytest.mark.parametrize("path,name,key", [("/Calls.json", "StartTime", "calls"),
                                           ("/Recordings.json", "DateCreated", "recordings")])
def test_both_lists_read_dates_alike(twigate, path, name, key):
    uri = twigate.account_uri() + path
    sids(twigate.http("GET", uri, params={name: ""}), key)
    sids(twigate.http("GET", uri, params={name + ">": "1970-01-01"}), key)
    assert sids(twigate.http("GET", uri, params={name + "<": "1970-01-02"}), key) == set()
    body = assert_twilio_error(twigate.http("GET", uri, params={name: "yesterday"}), 400, 21200)
    assert body["message"].startswith(name + " must be a date")
