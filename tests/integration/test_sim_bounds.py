"""kaphila-sim reads the same defaults and bounds as twigate's sim.* keys
(include/sim/sim.h): a value the config would refuse is refused on the
command line too (issue 17: the two used to disagree)."""

import os
import subprocess

import pytest

BUILD = os.environ.get("TWIGATE_BUILD", "build")


@pytest.mark.parametrize("flag,value", [("--ring-ms", "600001"), ("--answer-ms", "600001"),
                                        ("--play-ms", "600001"), ("--tts-ms-per-char", "10001")])
def test_kaphila_sim_refuses_what_the_config_refuses(flag, value):
    # Before the fix these were accepted and the simulator started serving;
    # the timeout then fails the test instead of hanging it.
    p = subprocess.run([os.path.join(BUILD, "kaphila-sim"), "--port", "0", "--key", "k",
                        flag, value], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert f"bad value '{value}'" in p.stderr
