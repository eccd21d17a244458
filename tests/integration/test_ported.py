"""What stopped apps ported from Twilio (issue 15, part B): each test here
failed before its fix.

  * Twilio's enum values in any case (MachineDetection=enable, Method=post,
    StatusCallbackEvent=Completed …), through the python SDK and curl, stored
    and acted on in their canonical spelling;
  * recording media as MP3 (…/Recordings/RE….mp3, LAME, cached once encoded,
    Range), the bare URL and .wav still WAV;
  * media without credentials unless the account sets media_auth;
  * RecordingUrl, RecordingSid and RecordingDuration on the completed status
    callback of a Record=true call;
  * no 12200 for <Record> without a timeout attribute, no "no tts.played …
    in time" on the beep, and a <Say> warning that names only what was given;
  * the account's kaphila_voice sent as voiceName on /makecall.

The built-in simulator runs in fast mode and records every answered call as
a 400 Hz tone of the call's length in whole seconds (8 kHz mono WAV)."""

import json
import os
import struct
import subprocess
import time
import urllib.parse

import pytest
from twilio.twiml.voice_response import VoiceResponse

from harness import (settle_call, DEFAULT_FROM, LIVE_TWIML, SHORT_TWIML, assert_twilio_error, fresh_number,
                     wait_for)

TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}


# ------------------------------------------------------------------ helpers

def rec_path(tg, sid, ext=".json", account="a"):
    return f"{tg.account_uri(account)}/Recordings/{sid}{ext}"


def wait_recording(tg, sid, timeout=10):
    def check():
        r = tg.http("GET", rec_path(tg, sid))
        assert r.status_code == 200, r.text
        return r.json() if r.json()["status"] == "completed" else None
    return wait_for(check, timeout, interval=0.05, message=f"recording {sid} never completed")


def recorded_call(tg, client, seconds=1.3, **kw):
    """A Record=true call kept up for `seconds`, hung up, its recording
    completed: (call sid, recording JSON)."""
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML,
                               record=True, **kw)
    tg.wait_for_status(client, call.sid, "in-progress")
    time.sleep(seconds)     # the length of the recording, not a wait for an event
    client.calls(call.sid).update(status="completed")
    tg.wait_for_status(client, call.sid, "completed")
    r = tg.http("GET", f"{tg.account_uri()}/Calls/{call.sid}/Recordings.json")
    recs = r.json()["recordings"]
    assert len(recs) == 1, recs
    return call.sid, wait_recording(tg, recs[0]["sid"])


def wav_seconds(b):
    """Seconds of audio in a PCM WAV (fmt and data chunks walked)."""
    assert b[:4] == b"RIFF" and b[8:12] == b"WAVE"
    pos, rate, align = 12, None, None
    while pos + 8 <= len(b):
        cid, size = b[pos:pos + 4], struct.unpack("<I", b[pos + 4:pos + 8])[0]
        if cid == b"fmt ":
            _, _, rate, _, align, _ = struct.unpack("<HHIIHH", b[pos + 8:pos + 24])
        elif cid == b"data":
            return min(size, len(b) - pos - 8) / align / rate
        pos += 8 + size + (size & 1)
    raise AssertionError("no data chunk")


# MPEG audio frame headers (ISO 11172-3, 13818-3 and the MPEG 2.5 extension):
# bitrates (kbit/s) by index for layer III, sample rates by version.
BITRATES = {3: [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
            2: [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160]}
RATES = {3: [44100, 48000, 32000], 2: [22050, 24000, 16000], 0: [11025, 12000, 8000]}


def mp3_frames(b):
    """Walks an MP3 file frame by frame (after an ID3v2 tag, if any) and
    returns (frames, seconds, sample rate, bitrate); fails on a byte that is
    not a frame header (sync 0xFFE, layer III) or a file that does not end
    on a frame boundary."""
    pos = 0
    if b[:3] == b"ID3":
        pos = 10 + ((b[6] & 0x7F) << 21 | (b[7] & 0x7F) << 14 | (b[8] & 0x7F) << 7 | (b[9] & 0x7F))
    frames = samples = 0
    rate = kbps = None
    while pos < len(b):
        assert pos + 4 <= len(b), f"truncated frame header at {pos}"
        h = int.from_bytes(b[pos:pos + 4], "big")
        assert h >> 21 == 0x7FF, f"no frame sync at byte {pos}: {b[pos:pos + 4].hex()}"
        ver, layer = (h >> 19) & 3, (h >> 17) & 3
        assert ver != 1 and layer == 1, f"not MPEG layer III at {pos}"
        bri, sri, pad = (h >> 12) & 15, (h >> 10) & 3, (h >> 9) & 1
        assert 0 < bri < 15 and sri < 3, f"bad header at {pos}"
        rate = RATES[ver][sri]
        kbps = BITRATES[3 if ver == 3 else 2][bri]
        spf = 1152 if ver == 3 else 576
        pos += spf // 8 * kbps * 1000 // rate + pad
        frames += 1
        samples += spf
    assert pos == len(b), "the file does not end on a frame boundary"
    return frames, samples / rate, rate, kbps


def notes(tg, sid):
    """The call's notifications, oldest first: [(error_code, message)]."""
    r = tg.http("GET", f"{tg.account_uri()}/Calls/{sid}/Notifications.json",
                params={"PageSize": 1000})
    assert r.status_code == 200, r.text
    out = []
    for n in reversed(r.json()["notifications"]):
        body = tg.http("GET", n["uri"]).json()
        msg = urllib.parse.parse_qs(body.get("message_text") or "").get("Msg", [""])[0]
        out.append((body["error_code"], msg))
    return out


def twiml(build):
    r = VoiceResponse()
    build(r)
    return str(r)


def finish(tg, client, sid, timeout=15):
    call = tg.wait_for_status(client, sid, TERMINAL, timeout=timeout)
    # Barrier (harness.settle_call): the transcript and callbacks are final.
    settle_call(tg, sid, timeout=max(timeout, 30))
    return call


def makecall_body(tg, sid):
    reqs = [q for q in tg.sim_get(sid)["requests"] if q["path"] == "/makecall"]
    assert len(reqs) == 1, reqs
    return reqs[0]["body"]


# ------------------------------------------------------- enums in any case

@pytest.mark.parametrize("amd,answered_by", [
    ("enable", "machine_start"), ("ENABLE", "machine_start"),
    ("detectmessageend", "machine_end_other"), ("DETECTMESSAGEEND", "machine_end_other"),
])
def test_machine_detection_any_case_sdk(twigate, client, amd, answered_by):
    """The SDK passes the value through as written; twigate stores the
    canonical spelling, so DetectMessageEnd's answers (machine_end_*) come
    out, as the fetched Call shows."""
    call = client.calls.create(to=fresh_number("0004"), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                               machine_detection=amd)
    done = twigate.wait_for_status(client, call.sid, TERMINAL)
    assert done.status == "completed"
    assert done.answered_by == answered_by
    assert makecall_body(twigate, call.sid)["useAmd"] is True


def test_enum_values_any_case_sdk_methods_and_events(twigate, client, receiver):
    """Method=post, StatusCallbackMethod=get and StatusCallbackEvent words in
    any case act as their canonical values."""
    receiver.set("/voice", SHORT_TWIML)
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, url=receiver.url("/voice"),
                               method="post", status_callback=receiver.url("/status"),
                               status_callback_method="get",
                               status_callback_event=["Initiated", "RINGING", "answered",
                                                      "Completed"])
    twigate.wait_for_status(client, call.sid, TERMINAL)
    voice = receiver.wait_for_requests("/voice", call_sid=call.sid)[0]
    assert voice.method == "POST" and voice.valid
    got = receiver.wait_for_requests("/status", count=4, call_sid=call.sid)
    assert [r.params["CallStatus"] for r in got] == ["initiated", "ringing", "in-progress",
                                                     "completed"]
    assert all(r.method == "GET" and r.valid for r in got)


def curl(tg, path, data, account="a"):
    """POSTs form data with the curl binary; (status, JSON body)."""
    acct = tg.accounts[account]
    argv = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--noproxy", "*",
            "-u", f"{acct.sid}:{acct.auth_token}", tg.base_url + path]
    for k, v in data:
        argv += ["--data-urlencode", f"{k}={v}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=True).stdout
    body, _, code = out.rpartition("\n")
    return int(code), json.loads(body) if body else None


def test_enum_values_any_case_curl(twigate, client):
    calls = f"{twigate.account_uri()}/Calls.json"
    code, body = curl(twigate, calls, [("To", fresh_number("0004")), ("From", DEFAULT_FROM),
                                       ("Twiml", SHORT_TWIML), ("MachineDetection", "enable"),
                                       ("StatusCallbackEvent", "COMPLETED initiated")])
    assert code == 201, body
    done = twigate.wait_for_status(client, body["sid"], TERMINAL)
    assert done.answered_by == "machine_start"
    # A live call ended with Status=Completed (the update's enum).
    code, body = curl(twigate, calls, [("To", fresh_number()), ("From", DEFAULT_FROM),
                                       ("Twiml", LIVE_TWIML), ("Method", "Get")])
    assert code == 201, body
    twigate.wait_for_status(client, body["sid"], "in-progress")
    code, upd = curl(twigate, f"{twigate.account_uri()}/Calls/{body['sid']}.json",
                     [("Status", "Completed")])
    assert code == 200, upd
    assert twigate.wait_for_status(client, body["sid"], "completed").status == "completed"
    # A word that is not the enum's in any case is still refused, and no call made.
    code, err = curl(twigate, calls, [("To", fresh_number()), ("From", DEFAULT_FROM),
                                      ("Twiml", SHORT_TWIML), ("MachineDetection", "enabled")])
    assert code == 400 and err["code"] == 21200, err
    assert "Enable|DetectMessageEnd" in err["message"] and "'enabled'" in err["message"], err


def test_list_status_filter_any_case(twigate, client):
    call = client.calls.create(to=fresh_number("0001"), from_=DEFAULT_FROM, twiml=SHORT_TWIML)
    twigate.wait_for_status(client, call.sid, "busy")
    path = f"{twigate.account_uri()}/Calls.json"
    for word in ("busy", "BUSY", "Busy"):
        r = twigate.http("GET", path, params={"Status": word, "To": call.to})
        assert r.status_code == 200, r.text
        assert [c["sid"] for c in r.json()["calls"]] == [call.sid], (word, r.json())
    assert_twilio_error(twigate.http("GET", path, params={"Status": "bussy"}), 400, 21200)


def test_recording_enums_any_case(twigate, client, receiver):
    """The Recordings resource's enums too (Status=Stopped, Trim, channels)."""
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML)
    twigate.wait_for_status(client, call.sid, "in-progress")
    base = f"{twigate.account_uri()}/Calls/{call.sid}/Recordings"
    r = twigate.http("POST", base + ".json", data={"RecordingChannels": "Dual",
                                                   "Trim": "Do-Not-Trim",
                                                   "RecordingStatusCallbackEvent": "Completed"})
    assert r.status_code == 201, r.text
    sid = r.json()["sid"]
    r = twigate.http("POST", f"{base}/{sid}.json", data={"Status": "Stopped"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "stopped"
    client.calls(call.sid).update(status="completed")
    twigate.wait_for_status(client, call.sid, "completed")


# ------------------------------------------------------------------ MP3

@pytest.fixture(scope="module")
def recorded(twigate):
    """One completed Record=true recording of about two seconds."""
    client = twigate.client("a")
    call_sid, rec = recorded_call(twigate, client, seconds=2.2)
    return call_sid, rec


def test_mp3_media_is_encoded_once_and_cached(twigate, recorded):
    _, rec = recorded
    sid = rec["sid"]
    wav = twigate.http("GET", rec_path(twigate, sid, ""))
    assert wav.status_code == 200 and wav.headers["Content-Type"] == "audio/x-wav"
    cache = f"{twigate.db_path}.recordings/{sid}.mp3"
    assert not os.path.exists(cache)

    r = twigate.http("GET", rec_path(twigate, sid, ".mp3"))
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "audio/mpeg"
    assert r.headers.get("Accept-Ranges") == "bytes"
    frames, seconds, rate, kbps = mp3_frames(r.content)
    assert rate == 8000 and kbps == 32, (rate, kbps)
    # LAME adds its encoder delay and pads the last frame: < 0.25 s at 8 kHz.
    want = wav_seconds(wav.content)
    assert want >= 2 and want <= seconds <= want + 0.25, (seconds, want, frames)

    # Cached beside the WAV: the second fetch is the same file, not encoded again.
    st = os.stat(cache)
    with open(cache, "rb") as f:
        assert f.read() == r.content
    again = twigate.http("GET", rec_path(twigate, sid, ".mp3"))
    assert again.status_code == 200 and again.content == r.content
    assert os.stat(cache).st_mtime_ns == st.st_mtime_ns
    assert os.stat(cache).st_ino == st.st_ino
    assert twigate.log_text().count("mp3: encoded") == 1

    # The bare URL and .wav are still the WAV.
    for ext in ("", ".wav"):
        w = twigate.http("GET", rec_path(twigate, sid, ext))
        assert w.headers["Content-Type"] == "audio/x-wav" and w.content == wav.content


@pytest.mark.parametrize("header,start,end", [
    ("bytes=0-3", 0, 3), ("bytes=288-", 288, None), ("bytes=-100", -100, None),
])
def test_mp3_range(twigate, recorded, header, start, end):
    _, rec = recorded
    full = twigate.http("GET", rec_path(twigate, rec["sid"], ".mp3")).content
    r = twigate.http("GET", rec_path(twigate, rec["sid"], ".mp3"), headers={"Range": header})
    assert r.status_code == 206, r.text
    assert r.headers["Content-Type"] == "audio/mpeg"
    want = full[start:] if end is None else full[start:end + 1]
    assert r.content == want
    first = start if start >= 0 else len(full) + start
    assert r.headers["Content-Range"] == f"bytes {first}-{first + len(want) - 1}/{len(full)}"
    r = twigate.http("GET", rec_path(twigate, rec["sid"], ".mp3"),
                     headers={"Range": f"bytes={len(full)}-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(full)}"


def test_mp3_first_fetch_with_range_and_wav_gone_from_cache(twigate, client):
    """The first .mp3 request may carry a Range, and may find the WAV gone
    from the cache: the engine fetches it from Kaphila again, then the
    encoder answers."""
    call_sid, rec = recorded_call(twigate, client)
    cache_dir = f"{twigate.db_path}.recordings"
    os.unlink(f"{cache_dir}/{call_sid}.wav")
    r = twigate.http("GET", rec_path(twigate, rec["sid"], ".mp3"), headers={"Range": "bytes=0-3"})
    assert r.status_code == 206, r.text
    assert r.headers["Content-Type"] == "audio/mpeg"
    assert int.from_bytes(r.content[:2], "big") >> 5 == 0x7FF    # frame sync
    full = twigate.http("GET", rec_path(twigate, rec["sid"], ".mp3"))
    mp3_frames(full.content)
    assert full.content[:4] == r.content


def test_mp3_of_a_missing_or_unfinished_recording(twigate, client):
    assert_twilio_error(twigate.http("GET", rec_path(twigate, "RE" + "0" * 32, ".mp3")), 404, 20404)
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML, record=True)
    twigate.wait_for_status(client, call.sid, "in-progress")
    rec = wait_for(lambda: twigate.http(
        "GET", f"{twigate.account_uri()}/Calls/{call.sid}/Recordings.json").json()["recordings"])
    body = assert_twilio_error(twigate.http("GET", rec_path(twigate, rec[0]["sid"], ".mp3")),
                               404, 20404)
    assert "not available yet" in body["message"], body
    client.calls(call.sid).update(status="completed")
    twigate.wait_for_status(client, call.sid, "completed")


# ---------------------------------------------------------- media auth

def test_media_without_credentials_by_default(twigate, recorded):
    """As on Twilio without "HTTP Basic auth for media": RecordingUrl is
    fetched without credentials; the recording's JSON still needs them, and
    wrong credentials are still refused."""
    _, rec = recorded
    sid = rec["sid"]
    for ext in ("", ".wav", ".mp3"):
        r = twigate.http("GET", rec_path(twigate, sid, ext), auth=None)
        assert r.status_code == 200, (ext, r.text)
    assert_twilio_error(twigate.http("GET", rec_path(twigate, sid), auth=None), 401, 20003)
    acct = twigate.accounts["a"]
    assert_twilio_error(twigate.http("GET", rec_path(twigate, sid, ""),
                                     auth=(acct.sid, "wrong")), 401, 20003)
    # Another account's path does not find it, with or without credentials.
    for auth in (None, "default"):
        assert_twilio_error(twigate.http("GET", rec_path(twigate, sid, "", account="b"),
                                         account="b", auth=auth), 404, 20404)


@pytest.fixture(scope="module")
def media_auth_tg(make_twigate_module):
    return make_twigate_module(overrides={"account.a.media_auth": True})


def test_media_auth_on_requires_credentials(media_auth_tg):
    tg = media_auth_tg
    _, rec = recorded_call(tg, tg.client("a"))
    for ext in ("", ".wav", ".mp3"):
        assert_twilio_error(tg.http("GET", rec_path(tg, rec["sid"], ext), auth=None), 401, 20003)
        r = tg.http("GET", rec_path(tg, rec["sid"], ext))
        assert r.status_code == 200, (ext, r.text)


# ------------------------------------- Record=true: the completed callback

def test_record_true_completed_callback_carries_the_recording(twigate, client, receiver):
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML,
                               record=True, status_callback=receiver.url("/st"))
    twigate.wait_for_status(client, call.sid, "in-progress")
    time.sleep(1.2)        # the recording's length, not a wait for an event
    client.calls(call.sid).update(status="completed")
    req = receiver.wait_for_requests("/st", call_sid=call.sid)[0]
    assert req.valid and req.method == "POST"
    p = req.params
    assert p["CallStatus"] == "completed"
    recs = twigate.http("GET", f"{twigate.account_uri()}/Calls/{call.sid}/Recordings.json")
    rec = recs.json()["recordings"][0]
    assert p["RecordingSid"] == rec["sid"]
    assert p["RecordingUrl"] == f"{twigate.base_url}{twigate.account_uri()}/Recordings/{rec['sid']}"
    assert p["RecordingDuration"] == p["CallDuration"], p
    done = wait_recording(twigate, rec["sid"])
    assert int(done["duration"]) == int(p["RecordingDuration"])
    assert twigate.http("GET", p["RecordingUrl"], auth=None).status_code == 200

    # Without Record=true: none of them.
    receiver.set("/v", SHORT_TWIML)
    plain = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, url=receiver.url("/v"),
                                status_callback=receiver.url("/st"))
    q = receiver.wait_for_requests("/st", call_sid=plain.sid)[0].params
    assert q["CallStatus"] == "completed"
    assert not {"RecordingUrl", "RecordingSid", "RecordingDuration"} & set(q), q


# -------------------------------------------- <Record>, <Say> warnings

def test_record_without_timeout_is_no_warning(twigate, client, receiver):
    def build(r):
        r.record(action="/rec/a", max_length=1, play_beep=False, finish_on_key="")
    receiver.set("/voice", twiml(build))
    receiver.set("/rec/a", "<Response><Hangup/></Response>")
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, url=receiver.url("/voice"))
    receiver.wait_for_requests("/rec/a", call_sid=call.sid)
    finish(twigate, client, call.sid)
    assert notes(twigate, call.sid) == []


def test_record_with_timeout_is_a_warning(twigate, client, receiver):
    def build(r):
        r.record(action="/rec/b", max_length=1, play_beep=False, finish_on_key="", timeout=3)
    receiver.set("/voice2", twiml(build))
    receiver.set("/rec/b", "<Response><Hangup/></Response>")
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, url=receiver.url("/voice2"))
    receiver.wait_for_requests("/rec/b", call_sid=call.sid)
    finish(twigate, client, call.sid)
    got = notes(twigate, call.sid)
    assert [c for c, _ in got] == ["12200"], got
    assert "timeout" in got[0][1] and "silence" in got[0][1], got


@pytest.fixture(scope="module")
def sim_beep_3s(make_twigate_module):
    """Sounds play for 3 s in the simulator, as with its default play_ms (the
    fast mode divides sim.play_ms = 60000 by 20): the length twigate's beep
    fallback timer used to have."""
    return make_twigate_module(overrides={"sim.play_ms": 60000})


def test_record_beep_waits_for_tts_played(sim_beep_3s, receiver):
    tg = sim_beep_3s
    client = tg.client("a")

    def build(r):
        r.record(action="/rec/beep", max_length=1, finish_on_key="")
    receiver.set("/voice", twiml(build))
    receiver.set("/rec/beep", "<Response><Hangup/></Response>")
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, url=receiver.url("/voice"))
    receiver.wait_for_requests("/rec/beep", call_sid=call.sid, timeout=20)
    finish(tg, client, call.sid)
    assert "no tts.played" not in tg.log_text()
    ev = tg.http("GET", f"{tg.account_uri()}/Calls/{call.sid}/Events.json",
                 params={"PageSize": 1000}).json()["events"]
    assert not [e for e in ev if "playback-timeout" in (e["request"].get("url") or "")], ev
    # The beep was played (and waited for) before the window opened.
    reqs = [q["path"] for q in tg.sim_get(call.sid)["requests"]]
    assert "/play" in reqs, reqs


def test_say_warning_names_only_the_attributes_given(twigate, client, receiver):
    receiver.set("/say", '<Response><Say voice="alice">Hi</Say></Response>')
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, url=receiver.url("/say"))
    finish(twigate, client, call.sid)
    got = notes(twigate, call.sid)
    assert [c for c, _ in got] == ["12200"], got
    assert 'voice="alice"' in got[0][1] and "language" not in got[0][1].split(">")[0], got
    receiver.set("/say2", '<Response><Say language="fr-FR">Salut</Say></Response>')
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, url=receiver.url("/say2"))
    finish(twigate, client, call.sid)
    got = notes(twigate, call.sid)
    assert got[0][1].startswith('<Say language="fr-FR">'), got


# ---------------------------------------------------------- kaphila_voice

@pytest.fixture(scope="module")
def voice_tg(make_twigate_module):
    return make_twigate_module(overrides={"account.a.kaphila_voice": "en-US-Neural2-C"})


def test_kaphila_voice_is_sent_as_voice_name(voice_tg):
    tg = voice_tg
    for account, want in (("a", "en-US-Neural2-C"), ("b", None)):
        client = tg.client(account)
        call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML)
        tg.wait_for_status(client, call.sid, TERMINAL)
        body = makecall_body(tg, call.sid)
        assert body.get("voiceName") == want, body
