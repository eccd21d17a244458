"""Helpers shared by the operations tests (test_ops_*.py, docs/operations.md):
running the binaries by hand, reading twigate's log, and SIGHUP reloads.

Each test there starts its own daemons (make_twigate), so a log offset or a
configuration file written here belongs to that test alone."""

import os
import re
import signal

import requests

from .daemon import build_dir, render_config
from .util import wait_for

ALL_EVENTS = ["initiated", "ringing", "answered", "completed"]
TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}


def session():
    """A requests session that ignores proxy settings from the environment."""
    s = requests.Session()
    s.trust_env = False
    return s


def binary(name):
    return os.path.join(build_dir(), name)


def child_env(**extra):
    """The environment for a binary run by hand: without the TWIGATE_* keys of
    the test run, which would override its configuration file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIGATE_")}
    env.update(extra)
    return env


def wait_log(tg, pattern, start=0, timeout=8):
    """Waits for a log line matching pattern after byte offset start."""
    rx = re.compile(pattern)
    try:
        return wait_for(lambda: rx.search(tg.log_text()[start:]), timeout)
    except AssertionError:
        raise AssertionError(f"no log line matching {pattern!r}; log tail:\n{tg.log_tail(30)}")


def reload_config(tg, settings, extra_text=""):
    """Writes settings (plus raw extra_text) as the config file and sends
    SIGHUP; returns the log offset before the signal."""
    mark = len(tg.log_text())
    with open(tg.config_path, "w", encoding="utf-8") as f:
        f.write(render_config(settings) + extra_text)
    tg.proc.send_signal(signal.SIGHUP)
    return mark
