"""Operations, installing and running by hand (issue 7, docs/operations.md:
make install, Docker, systemd): make install's layout and modes, the man page
rendering without warnings, the command line (--help naming every key of the
sample configuration, --print-config masking every secret, a bad
configuration refused in one clear line that never echoes a secret), and the
container/systemd packaging checks of scripts/check-docker.sh."""

import os
import re
import shutil
import subprocess

import pytest

from harness import build_dir, make_accounts, render_config
from harness.oas import REPO_ROOT
from harness.ops import binary, child_env


# ====================================================================
# make install, the man page, the command line
# ====================================================================

def _make_install(destdir, prefix=None):
    args = ["make", "-s", "-C", str(REPO_ROOT), "-o", "all", "install",
            f"BUILD={build_dir()}", f"DESTDIR={destdir}"]
    if prefix:
        args.append(f"PREFIX={prefix}")
    # -o all: install what the test run is using, never rebuild it here.
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"make install failed:\n{r.stdout}\n{r.stderr}"


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
@pytest.mark.parametrize("prefix,base", [("/usr", "usr"), (None, "usr/local")])
def test_make_install_layout(tmp_path, prefix, base):
    dest = tmp_path / "root"
    _make_install(dest, prefix)
    want = {f"{base}/sbin/twigate": 0o755, f"{base}/bin/kaphila-sim": 0o755,
            "etc/twigate/twigate.conf.sample": 0o644,
            f"{base}/share/man/man8/twigate.8": 0o644}
    for rel, mode in want.items():
        p = dest / rel
        assert p.is_file(), f"make install did not install /{rel}"
        assert p.stat().st_mode & 0o777 == mode, (rel, oct(p.stat().st_mode))
    assert (dest / "etc/twigate/twigate.conf.sample").read_bytes() == \
        (REPO_ROOT / "conf/twigate.conf").read_bytes()
    assert (dest / f"{base}/share/man/man8/twigate.8").read_bytes() == \
        (REPO_ROOT / "docs/twigate.8").read_bytes()
    installed = dest / f"{base}/sbin/twigate"
    r = subprocess.run([str(installed), "--version"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith("twigate "), r
    r = subprocess.run([str(installed), "--config", str(dest / "etc/twigate/twigate.conf.sample"),
                        "--print-config"], capture_output=True, text=True, timeout=10,
                       env=child_env())
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(dest / f"{base}/bin/kaphila-sim"), "--help"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r


def test_man_page_renders_without_warnings(tmp_path):
    page = str(REPO_ROOT / "docs/twigate.8")
    renderers = []
    if shutil.which("groff"):
        renderers.append(["groff", "-man", "-Tutf8", "-ww", "-z", page])
    if shutil.which("man"):
        renderers.append(["man", "--warnings", "-l", page])
    if not renderers:
        pytest.skip("neither groff nor man is installed: the man page was not rendered")
    for argv in renderers:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat",
                                    LC_ALL="C.UTF-8"))
        assert r.returncode == 0 and r.stderr.strip() == "", f"{argv[0]}: {r.stderr}"
    # Wide lines and no hyphenation, so words are not split for the search.
    text = subprocess.run(["groff", "-man", "-Tutf8", "-rHY=0", "-rLL=250n", page]
                          if shutil.which("groff") else ["man", "-l", page],
                          capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, MANPAGER="cat", MANWIDTH="250",
                                   LC_ALL="C.UTF-8")).stdout
    text = re.sub(r".\x08", "", text).replace("\u2010", "-").replace("\u2212", "-")
    text = re.sub(r"\s+", " ", text)
    for word in ("--config", "--set", "--print-config", "--help", "--version", "SIGTERM",
                 "SIGHUP", "shutdown.grace_ms", "/etc/twigate/twigate.conf"):
        assert word in text, f"the man page does not mention {word}"


def _run(args, env=None, timeout=15):
    return subprocess.run([binary("twigate")] + args, capture_output=True, text=True,
                          timeout=timeout, env=child_env(**(env or {})))


def test_cli_help_and_version():
    r = _run(["--version"])
    assert r.returncode == 0 and re.fullmatch(r"twigate \d+\.\d+\.\d+\n", r.stdout), r
    r = _run(["--help"])
    assert r.returncode == 0 and r.stderr == "", r
    assert r.stdout.startswith("usage: twigate"), r.stdout[:200]
    keys = re.findall(r"^  ([a-z_<>.-]+)  (?:string|int|bool|secret|time)", r.stdout, re.M)
    for key in ("public_url", "listen.port", "db.path", "kaphila.url", "log.level", "log.json",
                "metrics.token", "shutdown.grace_ms", "account.<name>.auth_token"):
        assert key in keys, f"--help does not list {key}"
    # Every key of the sample configuration is documented by --help.
    sample = _run(["--config", str(REPO_ROOT / "conf/twigate.conf"), "--print-config"])
    assert sample.returncode == 0, sample.stderr
    section = ""
    for line in sample.stdout.splitlines():
        m = re.fullmatch(r"\[([a-z0-9_.-]+)\]", line)
        if m:
            section = m.group(1)
            continue
        m = re.fullmatch(r"([a-z0-9_]+) = .*", line)
        if m:
            key = f"{section}.{m.group(1)}" if section else m.group(1)
            key = re.sub(r"^account\.[^.]+\.", "account.<name>.", key)
            assert key in keys, f"{key} is in the configuration but not in --help"


def test_cli_print_config_masks_every_secret(tmp_path):
    a = make_accounts()["a"]
    secrets_ = {"auth": a.auth_token, "kkey": a.kaphila_key, "apis": a.api_key_secret,
                "mtok": "mt_" + os.urandom(8).hex(), "adm": "adm_" + os.urandom(8).hex()}
    conf = tmp_path / "t.conf"
    conf.write_text(render_config({
        "account.x.sid": a.sid, "account.x.auth_token": secrets_["auth"],
        "account.x.kaphila_key": secrets_["kkey"], "account.x.api_key_sid": a.api_key_sid,
        "account.x.api_key_secret": secrets_["apis"], "metrics.token": secrets_["mtok"]}))
    r = _run(["--config", str(conf), "--print-config"],
             env={"TWIGATE_SIM_ADMIN_TOKEN": secrets_["adm"]})
    assert r.returncode == 0, r.stderr
    for name, value in secrets_.items():
        assert value not in r.stdout + r.stderr, f"--print-config shows the {name} secret"
    for key in ("auth_token", "kaphila_key", "api_key_secret", "token", "admin_token"):
        assert re.search(rf"^{key} = \"\*+\"$", r.stdout, re.M), f"{key} not masked"
    assert a.sid in r.stdout and a.api_key_sid in r.stdout, "SIDs are not secrets"
    # The output is itself a loadable configuration that prints the same.
    again = tmp_path / "again.conf"
    again.write_text(r.stdout)
    r2 = _run(["--config", str(again), "--print-config"])
    assert r2.returncode == 0 and r2.stdout == r.stdout, r2.stderr


@pytest.mark.parametrize("text,env,args,must", [
    ("[listen]\nport = 70000\n", {}, [], ["t.conf:2", "listen.port", "70000"]),
    ("[listen]\nprot = 1\n", {}, [], ["t.conf:2", "listen.prot", "listen.port"]),
    ("[log]\njson = maybe\n", {}, [], ["t.conf:2", "log.json"]),
    ("[bogus]\nx = 1\n", {}, [], ["t.conf:1", "bogus"]),
    ("", {"TWIGATE_LISTEN_PORT": "abc"}, [], ["TWIGATE_LISTEN_PORT", "listen.port"]),
    ("", {"TWIGATE_LISTEN_PROT": "1"}, [], ["TWIGATE_LISTEN_PROT"]),
    ("", {}, ["--set", "listen.threads=0"], ["listen.threads"]),
    ("", {}, ["--set", "nonsense"], ["nonsense"]),
    ("[account.x]\nsid = ACxyz\nauth_token = t\nkaphila_key = k\n", {}, [],
     ["account.x.sid", "ACxyz"]),
])
def test_cli_bad_configuration_is_one_clear_line(tmp_path, text, env, args, must):
    a = make_accounts()["a"]
    conf = tmp_path / "t.conf"
    base = "" if "account." in text else (
        f"[account.ok]\nsid = {a.sid}\nauth_token = {a.auth_token}\nkaphila_key = k\n")
    # The broken part first, so line numbers in `must` hold.
    conf.write_text(text + base)
    r = _run(["--config", str(conf)] + args, env=env)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stdout == "", r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1, f"expected one line, got {lines}"
    for word in must:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert a.auth_token not in r.stderr


def test_cli_errors_never_echo_a_secret(tmp_path):
    sid = "AC" + os.urandom(16).hex()
    secret = "sec" + os.urandom(12).hex()
    for bad_line in (f'auth_token = "{secret}', f'auth_token = "{secret}" junk',
                     f"auth_token = {secret}\x01"):
        conf = tmp_path / "s.conf"
        conf.write_text(f"[account.x]\nsid = {sid}\n{bad_line}\nkaphila_key = k\n")
        r = _run(["--config", str(conf)])
        assert r.returncode == 2, r
        assert "s.conf:3" in r.stderr, r.stderr
        assert secret not in r.stderr, r.stderr
    r = _run(["--config", str(REPO_ROOT / "conf/twigate.conf")],
             env={"TWIGATE_METRICS_TOKEN": f"{secret}\x01"})
    assert r.returncode == 2 and "TWIGATE_METRICS_TOKEN" in r.stderr and secret not in r.stderr


# ====================================================================
# Container and systemd packaging (no Docker engine here)
# ====================================================================

def test_check_docker_script():
    script = REPO_ROOT / "scripts/check-docker.sh"
    r = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, TWIGATE_BUILD=build_dir()))
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"check-docker.sh failed:\n{out}"
    assert "FAIL" not in out, out
    for section in ("== Dockerfile", "== apt packages", "== libraries", "== make install",
                    "== entrypoint", "== systemd unit", "== not checked on this machine"):
        assert section in out, f"{section} missing:\n{out}"
    assert "docker build" in out.split("== not checked on this machine")[1]
    assert re.search(r"^ok +it execs twigate", out, re.M), out
