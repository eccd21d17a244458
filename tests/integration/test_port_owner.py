"""One owner per port (issue 18): a second twigate on a port that is taken —
by another twigate or by any other program — fails to start with exit status
1 and an error naming the port, instead of sharing the port through
SO_REUSEPORT and splitting requests between two databases."""

import socket

import pytest

from harness import DEFAULT_FROM, fresh_number

HANGUP = "<Response><Hangup/></Response>"


def start_expecting_failure(tg):
    """Spawns tg and waits for it to exit; returns (exit code, log)."""
    from harness.daemon import binary
    tg._spawn([binary("twigate"), "--config", tg.config_path])
    try:
        code = tg.proc.wait(30)
    finally:
        if tg.proc.poll() is None:
            tg.proc.kill()
            tg.proc.wait()
    tg.proc = None
    return code, tg.log_text()


def test_second_twigate_on_the_same_port_exits_1(make_twigate):
    first = make_twigate()
    sid = first.client().calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=HANGUP).sid
    second = make_twigate(overrides={"listen.port": first.port, "public_url": first.base_url},
                          start=False)
    code, log = start_expecting_failure(second)
    assert code == 1, log
    assert f"127.0.0.1:{first.port}" in log and "already in use" in log, log
    # The first one still owns every request: its call is always there.
    for _ in range(20):
        assert first.client().calls(sid).fetch().sid == sid
    second.assert_clean_log()


def test_port_held_by_another_program_exits_1(make_twigate):
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen(4)
    port = holder.getsockname()[1]
    try:
        tg = make_twigate(overrides={"listen.port": port,
                                     "public_url": f"http://127.0.0.1:{port}"}, start=False)
        code, log = start_expecting_failure(tg)
        assert code == 1, log
        assert f"127.0.0.1:{port}" in log and "already in use" in log, log
    finally:
        holder.close()
