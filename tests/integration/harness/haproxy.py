"""Debian's HAProxy in front of N backends, for the scale-out tests (issue 21).

``HAProxy(workdir, backends)`` writes haproxy.cfg into workdir and runs
``haproxy -db -f haproxy.cfg`` in the foreground (its log, one line per
request, in workdir/haproxy.log for failure reports):

* one HTTP frontend on a free port of 127.0.0.1 (``url``);
* one backend ``twigates`` with the given balance (roundrobin by default)
  over the backends, each health-checked with ``GET /healthz`` every
  ``check_ms`` (fall 2, rise 1), so a dead instance leaves the rotation
  within about 2 x check_ms;
* every response carries ``X-Twigate-Backend: <server name>`` (s1, s2, ...
  in the order given), so a test sees who served it;
* short timeouts (connect 1 s, client and server 10 s) so that a dead
  backend shows up as an error quickly instead of a hang;
* a stats socket in workdir: ``server_states()`` answers
  {server name: "UP"/"DOWN"/...} from HAProxy itself, the observable to wait
  on instead of sleeping through health-check intervals.

The frontend's port is chosen at construction, so ``url`` can be given to
the backends (as their ``public_url``) before any of them starts.
``start()`` returns once every backend's first health check has passed
(``wait_up=True``) or as soon as the frontend accepts; ``stop()`` is SIGTERM
(HAProxy's hard stop) and asserts the exit code.  Backends are "host:port"
strings, (host, port) tuples or anything with a ``port`` attribute (a
``Twigate``: its API listener on 127.0.0.1)."""

import os
import signal
import socket
import subprocess

from .util import free_port, wait_for

HAPROXY = os.environ.get("TWIGATE_HAPROXY", "/usr/sbin/haproxy")


def unavailable_reason():
    if not os.access(HAPROXY, os.X_OK):
        return f"haproxy not installed ({HAPROXY} missing): scripts/install-deps.sh test"
    return None


def _addr(b):
    if isinstance(b, str):
        return b
    if isinstance(b, tuple):
        return f"{b[0]}:{b[1]}"
    return f"127.0.0.1:{b.port}"


class HAProxy:
    name = "haproxy"

    def __init__(self, workdir, backends, balance="roundrobin", check_path="/healthz",
                 check_ms=200, server_timeout_s=10, port=None):
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.log_path = os.path.join(self.workdir, "haproxy.log")
        self.config_path = os.path.join(self.workdir, "haproxy.cfg")
        self.stats_path = os.path.join(self.workdir, "admin.sock")
        self.servers = {f"s{i + 1}": _addr(b) for i, b in enumerate(backends)}
        self.balance = balance
        self.check_path = check_path
        self.check_ms = check_ms
        self.server_timeout_s = server_timeout_s
        # Known before start: twigates behind it need it as their public_url
        # (Kaphila's events must come through the balancer too).
        self.port = port or free_port()
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def render(self):
        lines = [
            "global",
            "    log stdout format raw local0 info",
            f"    stats socket {self.stats_path} mode 600 level admin",
            "    maxconn 4096",
            "defaults",
            "    mode http",
            "    log global",
            "    option httplog",
            # A request that finds its server dead is tried once more on
            # another: what a client sees in the instant before the health
            # check has taken the dead one out.
            "    option redispatch",
            "    retries 2",
            "    timeout connect 1s",
            "    timeout client 10s",
            f"    timeout server {self.server_timeout_s}s",
            "    timeout http-request 5s",
            "    timeout check 1s",
            "frontend api",
            f"    bind 127.0.0.1:{self.port}",
            "    default_backend twigates",
            "backend twigates",
            f"    balance {self.balance}",
            f"    option httpchk GET {self.check_path}",
            "    http-check expect status 200",
            "    http-response set-header X-Twigate-Backend %[srv_name]",
        ]
        for name, addr in self.servers.items():
            lines.append(f"    server {name} {addr} check inter {self.check_ms}ms "
                         f"fall 2 rise 1")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------ lifecycle
    def start(self, timeout=10, wait_up=True):
        with open(self.config_path, "w", encoding="utf-8") as f:
            f.write(self.render())
        check = subprocess.run([HAPROXY, "-c", "-q", "-f", self.config_path],
                               capture_output=True, text=True)
        assert check.returncode == 0, f"haproxy rejects its config: {check.stderr}"
        argv = [HAPROXY, "-db", "-f", self.config_path]
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start {' '.join(argv)} ====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, cwd=self.workdir,
                                         start_new_session=True)
        wait_for(self._accepting, timeout, interval=0.02,
                 message=f"haproxy frontend on {self.port}")
        if wait_up:
            wait_for(lambda: all(s == "UP" for s in self.server_states().values()),
                     timeout, message=f"every backend UP (states: {self.server_states()})")
        return self

    def _accepting(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"haproxy exited with {self.proc.returncode}; "
                               f"log:\n{self.log_tail()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return os.path.exists(self.stats_path)

    def stop(self, timeout=10):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.proc = None
                raise AssertionError(f"haproxy did not stop within {timeout}s")
        code, self.proc = self.proc.returncode, None
        # Hard stop ends with 0, or with the signal's status on some builds.
        assert code in (0, -signal.SIGTERM, 128 + signal.SIGTERM), (
            f"haproxy exited with {code}; log:\n{self.log_tail()}")

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        try:
            with open(self.log_path, "r", encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, n=60):
        return "\n".join(self.log_text().splitlines()[-n:])

    # --------------------------------------------------------------- stats
    def _command(self, cmd):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(self.stats_path)
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        return b"".join(chunks).decode()

    def server_states(self):
        """{server name: status} of backend twigates, as HAProxy sees it now
        ("UP", "DOWN", "UP 1/2" while a state change is in progress, ...)."""
        text = self._command("show stat")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        header = lines[0].lstrip("# ").split(",")
        col = {h: i for i, h in enumerate(header)}
        out = {}
        for ln in lines[1:]:
            f = ln.split(",")
            if f[col["pxname"]] == "twigates" and f[col["svname"]] in self.servers:
                out[f[col["svname"]]] = f[col["status"]]
        return out
