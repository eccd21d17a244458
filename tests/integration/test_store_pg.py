"""The store's conformance suite on PostgreSQL (issue 21 step 2;
docs/scale-out.md §1): the cmocka binaries that `make unit` runs on SQLite
(tests/unit/store/test_store_conformance*.c, through store.h and recstore.h
only) run again with TWIGATE_TEST_DB_URL naming a fresh database on a real
PostgreSQL 15, and must pass the same way. A second run on the same database
proves the suite's rows do not collide with an earlier run's and that the
migrations find the schema current. Skipped, with the reason, where
PostgreSQL is missing."""

import os
import subprocess

import pytest

BUILD = os.environ.get("TWIGATE_BUILD", "build")
SUITES = ("store/test_store_conformance", "store/test_store_conformance_logs",
          "store/test_store_cluster")


def _run(binary, url):
    path = os.path.join(BUILD, "tests", binary)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is not built: make unit")
    env = dict(os.environ, TWIGATE_TEST_DB_URL=url)
    return subprocess.run([path], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("binary", SUITES)
def test_conformance_suite_passes_on_postgresql(binary, pg_url):
    for attempt in (1, 2):
        out = _run(binary, pg_url)
        assert out.returncode == 0, (attempt, out.stdout[-4000:], out.stderr[-4000:])
        text = out.stdout + out.stderr           # cmocka's summary is on stderr
        assert "[  PASSED  ]" in text and "FAILED" not in text, text[-4000:]
        assert "[       OK ]" in out.stdout


def test_schema_version_matches_sqlites(postgres, pg_url):
    """PostgreSQL's schema is at SQLite's version (8), with every table of it."""
    out = _run(SUITES[0], pg_url)
    assert out.returncode == 0, out.stdout[-4000:]
    version = postgres.psql("SELECT version, min_compatible FROM schema_version", url=pg_url)
    assert version.strip() == "8|1", version
    tables = postgres.psql("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables"
                           " WHERE schemaname = 'public'", url=pg_url)
    assert tables.strip() == ("account_keys,budget_keys,budget_slots,budget_usage,"
                              "call_checkpoints,call_events,call_inbox,calls,instances,kevents,"
                              "notifications,outbox,recordings,schema_version"), tables


# Read only by instances sharing PostgreSQL: adoption by owner, and the
# reconciler asking whether a call it does not hold is another instance's.
PG_ONLY_INDEXES = {"calls_owner", "calls_kaphila"}


def test_both_backends_hold_the_same_schema(postgres, pg_url, tmp_path):
    """The two migration lists cannot drift (docs/scale-out.md §2): after
    `twigate --migrate` on each, the same tables with the same columns in the
    same order, types mapped (INTEGER = bigint, TEXT = text), the same
    nullability, and the same secondary indexes by name — but PG_ONLY_INDEXES,
    which only instances sharing the database read (SQLite's migration 8
    drops them)."""
    import sqlite3
    from harness.daemon import binary
    db = tmp_path / "schema.db"
    for s in (f"db.path={db}", f"db.url={pg_url}"):
        out = subprocess.run([binary("twigate"), "--migrate", "--set", s],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr

    lite = {}
    con = sqlite3.connect(db)
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for t in tables:
        cols = con.execute(f"PRAGMA table_info({t})").fetchall()
        lite[t] = [(c[1], {"INTEGER": "bigint", "TEXT": "text"}[c[2]],
                    bool(c[3]) or bool(c[5])) for c in cols]
    lite_idx = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'"
                                          " AND name NOT LIKE 'sqlite_autoindex%'")}
    con.close()

    rows = postgres.psql("SELECT table_name, column_name, data_type, is_nullable"
                         " FROM information_schema.columns WHERE table_schema = 'public'"
                         " ORDER BY table_name, ordinal_position", url=pg_url)
    pg_cols = {}
    for line in rows.strip().splitlines():
        t, c, typ, nullable = line.split("|")
        pg_cols.setdefault(t, []).append((c, typ, nullable == "NO"))
    assert pg_cols.pop("schema_version") == [("version", "bigint", True),
                                             ("min_compatible", "bigint", True)]
    assert pg_cols == lite
    pg_idx = set(postgres.psql("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
                               " AND indexname NOT LIKE '%_pkey' AND indexname NOT LIKE '%_key'",
                               url=pg_url).split())
    assert pg_idx == lite_idx | PG_ONLY_INDEXES
