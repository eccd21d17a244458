"""`make run` and the README (issue 15): the demo is started exactly as
`make run` starts it (scripts/run-demo.sh, conf/twigate.conf, the built-in
simulator at its normal speed), on a free port chosen the way the README says
(TWIGATE_LISTEN_PORT), in a scratch directory so its database stays out of the
checkout. Then:

* the banner shows the URLs the daemon really uses (base URL and simulator);
* the banner's pasteable lines run as printed: place a call, press a key on
  it through the simulator's control API, read its transcript;
* every shell, python and node snippet of README.md runs as pasted against
  it, with only the base URL's port rewritten (the README says they assume
  8080), and what each printed is checked against the daemon;
* what the demo leaves behind (twigate.db*, *.recordings/) is ignored by git;
* `twigate --print-config` alone prints the defaults.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import threading

import pytest
import requests

from harness import free_port, wait_for
from harness.daemon import SANITIZER_MARKERS, binary
from harness.oas import REPO_ROOT

README = REPO_ROOT / "README.md"
DEMO = REPO_ROOT / "scripts" / "run-demo.sh"
CONF = REPO_ROOT / "conf" / "twigate.conf"
NODE_MODULES = REPO_ROOT / "tests" / "node" / "node_modules"
README_BASE = "http://127.0.0.1:8080"
SNIPPET_SKIP = "<!-- snippet: not run"
RUNNABLE = {"sh": "shell", "bash": "shell", "python": "python", "js": "node"}
CA_RE = re.compile(r"CA[0-9a-f]{32}")


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TWIGATE_", "TWILIO_"))}
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    env.update(extra)
    return env


class Demo:
    """scripts/run-demo.sh in its own process group (so Ctrl-C can be
    simulated), stdout and stderr collected by threads."""

    def __init__(self, workdir, args=(), env=None):
        self.workdir = str(workdir)
        self.out, self.err = [], []
        self.proc = subprocess.Popen(
            ["bash", str(DEMO), binary("twigate"), *args], cwd=self.workdir,
            env=_env(TWIGATE_CONF=str(CONF), **(env or {})), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()
        try:
            wait_for(lambda: "Ctrl-C stops twigate." in self.stdout or self.proc.poll() is not None,
                     30, message="no banner")
        except AssertionError:
            self.interrupt()
            raise
        assert self.proc.poll() is None, f"run-demo.sh exited:\n{self.stdout}\n{self.stderr}"
        self.banner = self.stdout
        self.base = self._field("Base URL")
        self.sim = self._field("Simulator")
        self.sid = self._field("Account SID")
        self.token = self._field("Auth token")

    @staticmethod
    def _pump(stream, sink):
        for line in iter(stream.readline, b""):
            sink.append(line.decode("utf-8", "replace"))

    @property
    def stdout(self):
        return "".join(self.out)

    @property
    def stderr(self):
        return "".join(self.err)

    def _field(self, label):
        m = re.search(rf"^  {label} +(\S+)", self.banner, re.M)
        assert m, f"the banner has no {label} line:\n{self.banner}"
        return m.group(1)

    def interrupt(self, timeout=30):
        """Ctrl-C, as a terminal sends it: SIGINT to the whole process group."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"make run did not stop on Ctrl-C:\n{self.stderr[-2000:]}")


@pytest.fixture(scope="module")
def demo_port():
    return free_port()


@pytest.fixture(scope="module")
def demo(tmp_path_factory, demo_port):
    d = Demo(tmp_path_factory.mktemp("make-run"), env={"TWIGATE_LISTEN_PORT": str(demo_port)})
    yield d
    code = d.interrupt()
    assert code == 0, f"make run exited {code} on Ctrl-C:\n{d.stderr[-3000:]}"
    assert "stopped cleanly" in d.stderr, d.stderr[-2000:]
    hits = [m for m in SANITIZER_MARKERS if m in d.stderr]
    assert not hits, f"sanitizer reports {hits}:\n{d.stderr[-4000:]}"


def _get(demo, path, **kw):
    s = requests.Session()
    s.trust_env = False
    url = path if path.startswith("http") else demo.base + path
    return s.get(url, auth=(demo.sid, demo.token), timeout=10, **kw)


def _call(demo, sid):
    r = _get(demo, f"/2010-04-01/Accounts/{demo.sid}/Calls/{sid}.json")
    assert r.status_code == 200, f"call {sid}: {r.status_code} {r.text[:300]}"
    return r.json()


def _bash(script, timeout=60, **env):
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                       text=True, timeout=timeout, env=_env(**env))
    assert r.returncode == 0, f"exit {r.returncode}\n--- script\n{script}\n--- stderr\n{r.stderr}"
    return r.stdout


# ---------------------------------------------------------------- banner

def test_banner_shows_the_effective_urls(demo, demo_port):
    assert demo.base == f"http://127.0.0.1:{demo_port}", demo.banner
    assert ":8080" not in demo.banner, "the banner still says 8080:\n" + demo.banner
    # Every URL the banner prints is one of the two it announced.
    for url in re.findall(r"https?://[^\s/'\"]+", demo.banner):
        assert url in (demo.base, demo.sim), f"stray URL {url} in the banner"
    assert _get(demo, "/healthz").status_code == 200
    # The simulator answers there (test_banner_lines_run_as_pasted shows it
    # is the one twigate dials: the demo call appears in it).
    assert _get(demo, demo.sim + "/health").status_code == 200
    # The credentials work.
    assert _get(demo, f"/2010-04-01/Accounts/{demo.sid}.json").status_code == 200


def _banner_steps(banner):
    """The numbered steps' pasteable lines: {1: [command, …], 2: …}."""
    steps, cur, buf = {}, None, []
    for line in banner.splitlines():
        m = re.match(r"^  (\d)\. ", line)
        if m:
            cur = int(m.group(1))
            steps[cur] = []
            continue
        if cur and line.startswith("    ") and line.strip():
            buf.append(line[4:])
            if not line.endswith("\\"):
                steps[cur].append("\n".join(buf))
                buf = []
        elif line.strip():
            cur = None      # prose after the commands ends the step
    return steps


def test_banner_lines_run_as_pasted(demo):
    steps = _banner_steps(demo.banner)
    assert sorted(steps) == [1, 2, 3] and len(steps[3]) == 2, steps
    out = _bash(steps[1][0])
    sid = out.strip().splitlines()[-1]
    assert CA_RE.fullmatch(sid), f"step 1 printed {out!r}"
    wait_for(lambda: _call(demo, sid)["status"] == "in-progress", 30,
             message="the demo call was never answered")
    pressed = _bash(steps[2][0], CALL=sid)
    assert '"success":true' in pressed.replace(" ", ""), pressed

    def transcript():
        t = requests.get(f"{demo.sim}/sim/calls/{sid}", timeout=5).json()
        return t if any(e["event"] == "dtmf.received" for e in t["events"]) else None
    wait_for(transcript, 15, message="the key press never reached the call")
    t = json.loads(_bash(steps[3][0], CALL=sid))
    assert t["callSid"] == sid and t["answered"] is True, t
    assert [e["body"]["digit"] for e in t["events"] if e["event"] == "dtmf.received"] == ["5"]
    call = json.loads(_bash(steps[3][1], CALL=sid))
    assert call["sid"] == sid and call["account_sid"] == demo.sid, call


def test_banner_follows_set_on_the_command_line(tmp_path):
    port = free_port()
    d = Demo(tmp_path, args=["--set", f"listen.port={port}",
                             "--set", "account.demo.auth_token=ffff0000ffff0000ffff0000ffff0000"])
    try:
        assert d.base == f"http://127.0.0.1:{port}", d.banner
        assert d.token == "ffff0000ffff0000ffff0000ffff0000", d.banner
        assert _get(d, f"/2010-04-01/Accounts/{d.sid}.json").status_code == 200
    finally:
        assert d.interrupt() == 0, d.stderr[-2000:]


# ---------------------------------------------------------------- README

def _readme_snippets():
    """(language, code, skipped) for every fenced block of README.md."""
    text = README.read_text(encoding="utf-8")
    out = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.M | re.S):
        before = text[:m.start()].rstrip().splitlines()
        skipped = bool(before) and before[-1].startswith(SNIPPET_SKIP)
        out.append((m.group(1), m.group(2), skipped))
    return out


def test_readme_says_how_to_pick_another_port_and_what_snippets_assume():
    text = README.read_text(encoding="utf-8")
    assert "TWIGATE_LISTEN_PORT=" in text and "listen.port" in text
    assert "assume port 8080" in text
    langs = [lang for lang, _, skipped in _readme_snippets() if not skipped]
    for want in ("sh", "python", "js"):
        assert want in langs, f"README.md has no runnable {want} snippet"
    skipped = [code for _, code, skipped in _readme_snippets() if skipped]
    assert all("make run" in code for code in skipped), skipped
    # Every block is either run here or a configuration example.
    for lang, code, skipped in _readme_snippets():
        assert skipped or lang in RUNNABLE or lang == "ini", f"block ```{lang} is never run"


def _run_snippet(kind, code, tmp_path):
    if kind == "shell":
        return _bash(code)
    if kind == "python":
        f = tmp_path / "snippet.py"
        f.write_text(code)
        argv, env = ["/usr/bin/python3", str(f)], _env()
    else:
        node = shutil.which("node")
        assert node, "node is not installed (scripts/install-deps.sh test)"
        assert (NODE_MODULES / "twilio").is_dir(), "tests/node/node_modules is missing"
        f = tmp_path / "snippet.js"
        f.write_text(code)
        argv, env = [node, str(f)], _env(NODE_PATH=str(NODE_MODULES))
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env,
                       cwd=str(tmp_path))
    assert r.returncode == 0, f"{kind} snippet exited {r.returncode}\n{code}\n{r.stderr}"
    return r.stdout


@pytest.mark.parametrize("index", range(sum(1 for l, _, s in _readme_snippets()
                                            if not s and l in RUNNABLE)))
def test_readme_snippet_runs_as_pasted(demo, tmp_path, index):
    lang, code, _ = [s for s in _readme_snippets() if not s[2] and s[0] in RUNNABLE][index]
    assert README_BASE in code, f"the snippet does not use {README_BASE}:\n{code}"
    out = _run_snippet(RUNNABLE[lang], code.replace(README_BASE, demo.base), tmp_path)
    # The first CallSid printed is the created call's: the shell snippet's
    # create answer comes first (its only CallSid is the new call's own),
    # python and node print "<sid> <status>" first.
    m = CA_RE.search(out)
    assert m, f"the {lang} snippet printed no CallSid:\n{out}"
    sid = m.group(0)
    if lang != "sh":
        first = out.splitlines()[0].split()
        assert first == [sid, "queued"], out
    for other in set(CA_RE.findall(out)):
        call = _call(demo, other)
        assert call["account_sid"] == demo.sid and call["to"] == "+14155550100", call
    # The call does what the README says: rings, is answered, speaks, hangs
    # up — no application error (a voice URL twigate cannot fetch is 11200).
    done = wait_for(lambda: _call(demo, sid)["status"] not in ("queued", "ringing", "in-progress")
                    and _call(demo, sid), 60, message=f"call {sid} never ended")
    assert done["status"] == "completed", done
    notes = _get(demo, f"/2010-04-01/Accounts/{demo.sid}/Calls/{sid}/Notifications.json").json()
    assert notes["notifications"] == [], notes["notifications"]


# ---------------------------------------------------------------- leftovers

def test_make_run_leftovers_are_ignored_by_git(demo):
    if not (shutil.which("git") and (REPO_ROOT / ".git").exists()):
        pytest.skip("not a git checkout")
    made = []
    for root, dirs, files in os.walk(demo.workdir):
        for name in files:
            made.append(os.path.relpath(os.path.join(root, name), demo.workdir))
    assert "twigate.db" in made, made
    # What a longer session adds: the WAL files and the recordings cache.
    made += ["twigate.db-wal", "twigate.db-shm", "twigate.db-journal",
             f"twigate.db.recordings/{'CA' + '0' * 32}.wav"]
    for rel in made:
        r = subprocess.run(["git", "-C", str(REPO_ROOT), "check-ignore", "-q", "--no-index", rel],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, f"`make run` leaves {rel} in the checkout, not ignored by git"


# ---------------------------------------------------------------- --print-config

def test_print_config_alone_prints_the_defaults(tmp_path):
    r = subprocess.run([binary("twigate"), "--print-config"], capture_output=True, text=True,
                       timeout=10, env=_env(), cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert re.search(r"^port = 8080$", r.stdout, re.M), r.stdout
    assert re.search(r'^url = "sim"$', r.stdout, re.M), r.stdout
    assert "[account." not in r.stdout
    assert "no account" in r.stderr
    # It is a loadable file: with an account added it starts the same way.
    conf = tmp_path / "t.conf"
    conf.write_text(r.stdout + "\n[account.x]\nsid = AC" + "1" * 32 +
                    "\nauth_token = t\nkaphila_key = k\n")
    r2 = subprocess.run([binary("twigate"), "--config", str(conf), "--print-config"],
                        capture_output=True, text=True, timeout=10, env=_env())
    assert r2.returncode == 0 and r2.stdout.startswith(r.stdout.rstrip("\n")), r2.stderr


def test_simulator_docs_say_where_the_control_api_is(demo):
    """docs/simulator.md's examples use $S; the page says where it comes from,
    in the words the daemon and the banner really print."""
    doc = re.sub(r"\s+", " ", (REPO_ROOT / "docs" / "simulator.md").read_text(encoding="utf-8"))
    port = demo.sim.rsplit(":", 1)[1]
    assert f"Simulator    {demo.sim}" in demo.banner
    assert "(built-in simulator)" in doc and "`Simulator`" in doc and "TWIGATE_SIM_PORT=" in doc
    assert "kaphila-sim listening on http://" in doc and port.isdigit()
