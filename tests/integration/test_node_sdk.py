"""The official twilio-node SDK (npm twilio@6.2.0, pinned in
tests/node/package.json) against twigate: tests/node/sdk_smoke.js does the
checks and exits 0 only when all pass."""

import os
import shutil
import subprocess

import pytest

from harness.oas import REPO_ROOT

NODE_DIR = REPO_ROOT / "tests" / "node"


@pytest.fixture(scope="module")
def node_sdk():
    node = shutil.which("node")
    npm = shutil.which("npm")
    assert node, "node is not installed (scripts/install-deps.sh test)"
    if not (NODE_DIR / "node_modules" / "twilio" / "package.json").exists():
        assert npm, "npm is not installed and tests/node/node_modules is missing"
        # Installs exactly what package-lock.json pins.
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"npm ci failed:\n{r.stdout}\n{r.stderr}"
    r = subprocess.run([node, "-p", "require('twilio/package.json').version"],
                       cwd=NODE_DIR, capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "6.2.0", f"twilio-node version {r.stdout!r} {r.stderr}"
    return node


def test_node_sdk_smoke(twigate, node_sdk):
    acct = twigate.accounts["a"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("TWILIO_REGION", "TWILIO_EDGE", "TWILIO_ACCOUNT_SID",
                        "TWILIO_AUTH_TOKEN")}
    env.update(BASE_URL=twigate.base_url, ACCOUNT_SID=acct.sid, AUTH_TOKEN=acct.auth_token)
    r = subprocess.run([node_sdk, "sdk_smoke.js"], cwd=NODE_DIR, env=env,
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, (
        f"sdk_smoke.js exited {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
        f"\n--- twigate log (tail)\n{twigate.log_tail(40)}")
    assert "sdk_smoke: OK" in r.stdout
