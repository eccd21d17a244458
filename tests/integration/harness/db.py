"""Rows of a twigate's database, whichever backend it was started on.

Some tests look under the REST API: a call's event token, the outbox rows a
kill left behind, a checkpoint, a raw event planted for replay.  ``rows()``
and ``execute()`` run one statement on the database of a ``Twigate``: its
PostgreSQL database (psycopg2, twigate's own role, the URL it was given as
``db.url``) when it was started on one, else its SQLite file (``db_path``).

* **One dialect for the callers.**  Statements use SQLite's ``?`` markers;
  on PostgreSQL they become psycopg2's ``%s`` (and a literal ``%``, as in a
  LIKE pattern, is doubled).  The SQL itself must mean the same on both:
  the schemas name the same tables and columns (docs/scale-out.md §2), and
  integers are integers on both; what differs (``json_extract``, triggers,
  ``PRAGMA``) is left to the test, which asks ``is_pg()``.
* **One connection per call**, autocommit, closed before returning: nothing
  is held across a twigate restart or kill, and each read sees every commit
  made before it (twigate answers only after its commit).  SQLite's
  connection waits up to 10 s for twigate's write lock.

``sqlite_only(reason)`` marks a test that is about SQLite itself (its file,
its checkpointer): skipped, with the reason, in a TWIGATE_TEST_DB=postgresql
run (conftest.py)."""

import os
import sqlite3

import pytest


def is_pg(tg):
    """True when tg runs on PostgreSQL (db.url set)."""
    return bool(tg.settings.get("db.url"))


def _pg_sql(sql):
    return sql.replace("%", "%%").replace("?", "%s")


def _run(tg, sql, args, result):
    """Runs one statement on tg's database (autocommit, its own connection)
    and returns result(cursor)."""
    if is_pg(tg):
        import psycopg2
        con = psycopg2.connect(tg.settings["db.url"])
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute(_pg_sql(sql), tuple(args))
                return result(cur)
        finally:
            con.close()
    con = sqlite3.connect(tg.db_path, timeout=10, isolation_level=None)
    try:
        return result(con.execute(sql, tuple(args)))
    finally:
        con.close()


def rows(tg, sql, args=()):
    """Every row of one query, as a list of tuples."""
    return _run(tg, sql, args, lambda cur: cur.fetchall())


def one(tg, sql, args=()):
    """The first row of one query, None when it returns none."""
    got = rows(tg, sql, args)
    return got[0] if got else None


def execute(tg, sql, args=()):
    """Runs one statement (autocommit); returns the rows it changed."""
    return _run(tg, sql, args, lambda cur: cur.rowcount)


def pg_run():
    """True in a TWIGATE_TEST_DB=postgresql run."""
    return os.environ.get("TWIGATE_TEST_DB") == "postgresql"


def sqlite_only(reason):
    """A mark skipping a test about SQLite itself in a PostgreSQL run."""
    return pytest.mark.skipif(pg_run(), reason=f"SQLite only: {reason}")
