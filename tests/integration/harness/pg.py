"""A throw-away PostgreSQL 15 server for the scale-out tests (issue 21).

``PostgresServer`` runs Debian's own binaries (/usr/lib/postgresql/15/bin, or
$TWIGATE_PG_BIN) on a cluster made by initdb in a fresh temporary directory:

* **Who runs it.**  postgres refuses to run as root, and CI runs as root.  As
  root the server runs as the system user ``twigate-test``, created with
  ``useradd --system`` the first time (no home, no shell, no password); when
  useradd is not possible it falls back to ``nobody``.  A dedicated system
  user is preferred over ``nobody`` because its uid is a low one that every
  user namespace maps (65534 often is not, and chown to it then fails), and
  because nothing else runs as it.  Not as root, the server runs as the
  current user and nothing is switched.
* **Where.**  The data directory and the socket directory sit in
  ``/tmp/twigate-pg-XXXXXX`` (owned by that user; pytest's own temporary
  directories are mode 0700 under root and so unreachable for it) and are
  removed by ``stop()``.  The server's log goes to ``workdir`` (a pytest
  temporary directory, kept for failure reports like the daemons' logs).
* **How.**  TCP on 127.0.0.1 and a free port, fsync and synchronous commit
  off (a test cluster need not survive a power cut), scram passwords over
  TCP, trust on the Unix socket for the superuser the harness uses to set up.
  Readiness is pg_isready in a bounded wait; ``stop()`` is a fast shutdown
  (SIGINT) that must exit 0.
* **What for twigate.**  A login role ``twigate`` with a random password, a
  database ``twigate``, and ``url`` = postgresql://twigate:pw@127.0.0.1:port/twigate.
  ``fresh_database()`` clones the database ``twigate_template`` (CREATE
  DATABASE ... TEMPLATE, a file copy: milliseconds) so each test can start
  from an empty, or later a migrated, schema.

Clients: psycopg2 (Debian's python3-psycopg2) for the harness, ``psql()`` for
a check through libpq's own URL parsing (what twigate will link)."""

import atexit
import fcntl
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile

from .util import free_port, wait_for

PG_BIN = os.environ.get("TWIGATE_PG_BIN", "/usr/lib/postgresql/15/bin")
PG_USER_NAME = "twigate-test"
SUPERUSER = "postgres"
ROLE = "twigate"
TEMPLATE_DB = "twigate_template"
MAIN_DB = "twigate"


def unavailable_reason():
    """None when a server can be started here, else why not (a skip reason)."""
    for tool in ("initdb", "postgres", "pg_isready", "psql"):
        if not os.access(os.path.join(PG_BIN, tool), os.X_OK):
            return (f"PostgreSQL 15 not installed ({PG_BIN}/{tool} missing): "
                    f"scripts/install-deps.sh test")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "python3-psycopg2 not installed: scripts/install-deps.sh test"
    return None


def _run_as():
    """(uid, gid) the server runs as, or None for 'as we are'."""
    if os.geteuid() != 0:
        return None
    # make check's xdist workers start their servers at once: one useradd at
    # a time, so a worker never sees the user half made and falls to nobody.
    with open(os.path.join(tempfile.gettempdir(), "twigate-pg-useradd.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _find_or_add_user()


def _find_or_add_user():
    for attempt in (PG_USER_NAME, "nobody"):
        try:
            pw = pwd.getpwnam(attempt)
            return pw.pw_uid, pw.pw_gid
        except KeyError:
            pass
        if attempt == PG_USER_NAME:
            # --user-group: its own group, so the data directory is shared
            # with nobody; failure (no useradd, read-only /etc) falls through.
            subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                            "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                            PG_USER_NAME], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
            try:
                pw = pwd.getpwnam(PG_USER_NAME)
                return pw.pw_uid, pw.pw_gid
            except KeyError:
                continue
    raise RuntimeError("no unprivileged user to run postgres as")


class PostgresServer:
    name = "postgres"

    def __init__(self, workdir):
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.log_path = os.path.join(self.workdir, "postgres.log")
        self.port = None
        self.password = secrets.token_hex(16)
        self.root = None
        self.proc = None
        self._owner = None
        self._n = 0

    # ------------------------------------------------------------ lifecycle
    def _popen_kw(self):
        kw = {"env": {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": self.root,
                      "PGTZ": "UTC"},
              "cwd": self.root, "stdin": subprocess.DEVNULL}
        if self._owner is not None:
            kw.update(user=self._owner[0], group=self._owner[1], extra_groups=[])
        return kw

    def start(self, timeout=30):
        self._owner = _run_as()
        self.root = tempfile.mkdtemp(prefix="twigate-pg-")
        if self._owner is not None:
            os.chown(self.root, *self._owner)
        self.data = os.path.join(self.root, "data")
        self.sockdir = os.path.join(self.root, "sock")
        pwfile = os.path.join(self.root, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        os.makedirs(self.sockdir)
        for p in (pwfile, self.sockdir):
            if self._owner is not None:
                os.chown(p, *self._owner)
        atexit.register(self.kill)
        with open(self.log_path, "ab") as log:
            # -N: no fsync of the new cluster; the scram default also covers
            # the superuser over TCP, the socket stays trust for set-up.
            init = subprocess.run(
                [os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", SUPERUSER,
                 "--pwfile", pwfile, "--auth-local=trust", "--auth-host=scram-sha-256",
                 "-E", "UTF8", "--locale=C", "-N"],
                stdout=log, stderr=log, **self._popen_kw())
        os.unlink(pwfile)
        if init.returncode != 0:
            raise AssertionError(f"initdb failed ({init.returncode}); log:\n{self.log_tail()}")
        self.port = free_port()
        argv = [os.path.join(PG_BIN, "postgres"), "-D", self.data,
                "-c", "listen_addresses=127.0.0.1", "-c", f"port={self.port}",
                "-c", f"unix_socket_directories={self.sockdir}",
                "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=200",
                "-c", "logging_collector=off", "-c", "log_min_messages=warning"]
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start {' '.join(argv)} ====\n".encode())
            log.flush()
            # Own session: a ^C at the terminal reaches pytest, whose
            # teardown then stops the server in order.
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log,
                                         start_new_session=True, **self._popen_kw())
        wait_for(self._ready, timeout, interval=0.05,
                 message=f"postgres not accepting connections on {self.port}")
        self._setup()
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {self.proc.returncode} during "
                               f"start-up; log:\n{self.log_tail()}")
        r = subprocess.run([os.path.join(PG_BIN, "pg_isready"), "-q", "-h", "127.0.0.1",
                            "-p", str(self.port), "-d", "postgres", "-t", "1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return r.returncode == 0

    def _setup(self):
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD %s", (self.password,))
                cur.execute(f"CREATE DATABASE {TEMPLATE_DB} OWNER {ROLE}")
                cur.execute(f"CREATE DATABASE {MAIN_DB} OWNER {ROLE} TEMPLATE {TEMPLATE_DB}")
        finally:
            conn.close()

    def stop(self, timeout=20):
        """Fast shutdown (SIGINT: running transactions are rolled back), which
        must exit 0; then the data directory is removed (the log stays)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"postgres did not stop within {timeout}s; "
                                     f"log:\n{self.log_tail()}")
            self.proc = None
            assert code == 0, f"postgres exited with {code}; log:\n{self.log_tail()}"
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def kill(self):
        """Immediate shutdown (SIGQUIT, then SIGKILL) and removal of the data
        directory; no assertion (teardown after a failed start, atexit)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)      # immediate shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

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

    # -------------------------------------------------------------- access
    @property
    def url(self):
        return self.url_for(MAIN_DB)

    def url_for(self, dbname):
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def admin(self, dbname="postgres"):
        """A superuser psycopg2 connection over the Unix socket, autocommit."""
        import psycopg2
        conn = psycopg2.connect(host=self.sockdir, port=self.port, user=SUPERUSER,
                                dbname=dbname)
        conn.autocommit = True
        return conn

    def connect(self, db=MAIN_DB, autocommit=True):
        """A psycopg2 connection as twigate's role, through the TCP URL; db is
        a database name or a URL (from fresh_database())."""
        import psycopg2
        conn = psycopg2.connect(db if "://" in db else self.url_for(db))
        conn.autocommit = autocommit
        return conn

    def psql(self, sql, url=None, timeout=10):
        """Runs sql through Debian's psql with a URL (libpq parses it, as it
        will for twigate); returns stdout, unaligned and tuples only."""
        r = subprocess.run([os.path.join(PG_BIN, "psql"), "-X", "-A", "-t", "-v",
                            "ON_ERROR_STOP=1", "-c", sql, url or self.url],
                           capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, f"psql failed ({r.returncode}): {r.stderr}"
        return r.stdout

    def fresh_database(self, prefix="t"):
        """A new empty database cloned from twigate_template, owned by
        twigate; returns its URL.  Left in place: the cluster is discarded
        whole at the end of the session."""
        self._n += 1
        name = f"{prefix}_{self._n}_{secrets.token_hex(3)}"
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                # FILE_COPY: with fsync off a plain copy of the template's few
                # files beats PostgreSQL 15's default WAL_LOG block by block.
                cur.execute(f"CREATE DATABASE {name} OWNER {ROLE} "
                            f"TEMPLATE {TEMPLATE_DB} STRATEGY FILE_COPY")
        finally:
            conn.close()
        return self.url_for(name)
