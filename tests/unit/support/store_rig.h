/* store_rig — what the store conformance tests share
 * (tests/unit/store/test_store_conformance*.c): the database they run on,
 * taken from the environment so the same binaries check every backend —
 * TWIGATE_TEST_DB_URL (a postgresql:// URL) or, unset, SQLite in a fresh
 * temporary file — and SIDs unique per run, so that a database reused
 * between runs answers the same.
 *
 * Part of the support library (Makefile: UNIT_SUPPORT). Threads: the calling
 * test's only. Failures fail the test through cmocka. Include after
 * <cmocka.h>. */
#ifndef TWIGATE_TEST_STORE_RIG_H
#define TWIGATE_TEST_STORE_RIG_H

#include <stdint.h>

#include "store/recstore.h"
#include "store/store.h"

typedef struct ut_store {
    char        dir[96], path[128];   /* SQLite only: the temporary file */
    store      *s;
    store_conn *c;                    /* the test's own connection */
} ut_store;

/* TWIGATE_TEST_DB_URL, or NULL for SQLite. */
const char *ut_store_url(void);
/* Another store on the fixture's database (the test fails if it cannot open). */
store *ut_store_open(ut_store *f);
/* cmocka setup/teardown: *state is a ut_store with s and c open. */
int ut_store_setup(void **state);
int ut_store_teardown(void **state);
/* A fresh SID with prefix ("CA", "AC", "RE", "NO") into out[SID_SIZE]. */
void ut_store_sid(char *out, const char *prefix);
/* A new call of acct (fresh SID and token), params {"Url": …}; t = date_created. */
void ut_store_make_call(store_call *c, const char *acct, const char *status, int64_t t);
/* store_call_insert, asserting it succeeds and sets an id. */
void ut_store_insert_call(store_conn *c, store_call *call);
/* This run's tag (in every SID), for other unique names. */
unsigned ut_store_run(void);

#endif
