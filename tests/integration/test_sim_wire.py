"""The simulator's wire details that its own HTTP glue used to decide and
net/httpd now does (issue 17): refusals in Kaphila's envelope, paths as
Express sees them (percent-decoded, one trailing '/' ignored), queries
ignored even when malformed, and recording downloads with their range
headers (generated WAV bodies)."""
import requests

from harness import wait_for


def _get(sim, key, path, **headers):
    headers.setdefault("Authorization", f"Bearer {key}")
    return requests.get(sim.url + path, headers=headers, timeout=10)


def test_sim_refusals_and_paths_keep_kaphila_shape(kaphila_sim, accounts):
    key = accounts["a"].kaphila_key
    r = requests.post(kaphila_sim.url + "/makecall", data=b"x" * 70000, timeout=10,
                      headers={"Authorization": f"Bearer {key}",
                               "Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    assert r.json() == {"success": False, "error": "Request body too large"}
    # Malformed and oversized queries are not the simulator's business.
    for path in ("/calls?x=%zz", "/calls?" + "&".join(f"k{i}=1" for i in range(700)),
                 "/%63alls", "/calls/"):
        r = _get(kaphila_sim, key, path)
        assert r.status_code == 200 and r.json()["success"] is True, (path[:40], r.text)
    r = requests.get(kaphila_sim.url + "/calls", timeout=10)
    assert r.status_code == 401 and r.json() == {"success": False, "error": "API key required"}


def test_sim_recording_download_headers(kaphila_sim, accounts):
    key = accounts["a"].kaphila_key
    r = requests.post(kaphila_sim.url + "/makecall", timeout=10,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"number": "15551230000"})
    assert r.status_code == 200, r.text
    cid = r.json()["callId"]
    wait_for(lambda: _get(kaphila_sim, key, f"/calls/{cid}").json().get("status")
             in ("answered", "in-progress", "active"), message="call answered")
    assert requests.post(kaphila_sim.url + "/hangup", timeout=10,
                         headers={"Authorization": f"Bearer {key}"},
                         json={"callId": cid}).status_code == 200
    whole = None

    def downloaded():
        nonlocal whole
        whole = _get(kaphila_sim, key, f"/recordings/{cid}/download")
        return whole.status_code == 200
    wait_for(downloaded, message="recording downloadable")
    assert whole.headers["Content-Type"] == "audio/wav"
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert int(whole.headers["Content-Length"]) == len(whole.content) > 44
    assert whole.content[:4] == b"RIFF" and whole.content[8:12] == b"WAVE"
    part = _get(kaphila_sim, key, f"/recordings/{cid}/download", Range="bytes=10-99")
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 10-99/{len(whole.content)}"
    assert part.content == whole.content[10:100]
    past = _get(kaphila_sim, key, f"/recordings/{cid}/download", Range="bytes=99999999-")
    assert past.status_code == 416
    assert past.headers["Content-Range"] == f"bytes */{len(whole.content)}"
