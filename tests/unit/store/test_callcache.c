/* test_callcache — the cache of ended calls' bodies: hits and misses, the
 * account check, invalidation by writers, the generation race, eviction at
 * the cap, the disabled cache; then the cache wired to a real store (SQLite
 * file), including a writer racing readers that must never see a body older
 * than what was committed before their lookup began. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/callcache.h"
#include "store/store.h"

/* cmocka's asserts may not run off the main thread: the race test's
 * readers check with this instead. */
#define CHECK(x) do { if (!(x)) { fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #x); \
                                  abort(); } } while (0)

#define ACCT_A "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define ACCT_B "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static void sid_n(char out[SID_SIZE], unsigned n)
{
    snprintf(out, SID_SIZE, "CA%032x", n);
}

/* Looks sid up for account; on a hit checks the body is want (if given). */
static bool get_is(callcache *cc, const char *sid, const char *acct, const char *want)
{
    char *body = NULL;
    size_t len = 0;
    callcache_ticket t;
    bool hit = callcache_get(cc, sid, acct, &body, &len, &t);
    if (hit && want) {
        assert_int_equal(len, strlen(want));
        assert_memory_equal(body, want, len);
    }
    free(body);
    return hit;
}

/* A miss followed by a put, as the fetch handler does. */
static bool fill(callcache *cc, const char *sid, const char *acct, const char *body)
{
    char *b = NULL;
    size_t len;
    callcache_ticket t;
    if (callcache_get(cc, sid, acct, &b, &len, &t)) { free(b); return false; }
    return callcache_put(cc, t, sid, acct, body, strlen(body));
}

static void test_hit_and_miss(void **state)
{
    (void)state;
    callcache *cc = callcache_create(16);
    callcache_stats st;
    char sid[SID_SIZE];
    assert_non_null(cc);
    sid_n(sid, 1);
    assert_false(get_is(cc, sid, ACCT_A, NULL));
    assert_true(fill(cc, sid, ACCT_A, "{\"sid\":1}"));
    assert_true(get_is(cc, sid, ACCT_A, "{\"sid\":1}"));
    assert_true(get_is(cc, sid, ACCT_A, "{\"sid\":1}"));
    callcache_get_stats(cc, &st);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 2);   /* the first get and fill's get */
    assert_int_equal(st.entries, 1);
    /* A SID differing only in case is another key, as in SQLite. */
    char upper[SID_SIZE];
    snprintf(upper, sizeof upper, "CA%032X", 0xabcu);
    sid_n(sid, 0xabc);
    assert_true(fill(cc, sid, ACCT_A, "lower"));
    assert_false(get_is(cc, upper, ACCT_A, NULL));
    /* Too large a body is refused, and nothing is stored. */
    char *big = calloc(1, CALLCACHE_MAX_BODY + 2);
    memset(big, 'x', CALLCACHE_MAX_BODY + 1);
    sid_n(sid, 2);
    assert_false(fill(cc, sid, ACCT_A, big));
    assert_false(get_is(cc, sid, ACCT_A, NULL));
    free(big);
    callcache_destroy(cc);
}

static void test_other_account_misses(void **state)
{
    (void)state;
    callcache *cc = callcache_create(16);
    char sid[SID_SIZE];
    sid_n(sid, 7);
    assert_true(fill(cc, sid, ACCT_A, "mine"));
    assert_false(get_is(cc, sid, ACCT_B, NULL));
    assert_true(get_is(cc, sid, ACCT_A, "mine"));
    callcache_destroy(cc);
}

static void test_write_invalidates(void **state)
{
    (void)state;
    callcache *cc = callcache_create(16);
    callcache_writes w;
    char sid[SID_SIZE], other[SID_SIZE];
    callcache_writes_init(&w);
    sid_n(sid, 3);
    sid_n(other, 4);
    assert_true(fill(cc, sid, ACCT_A, "old"));
    assert_true(fill(cc, other, ACCT_A, "other"));
    callcache_write(cc, &w, sid);
    assert_false(get_is(cc, sid, ACCT_A, NULL));
    assert_true(get_is(cc, other, ACCT_A, "other"));   /* only that SID goes */
    /* While the write's transaction is open nothing is put on its shard. */
    assert_false(fill(cc, sid, ACCT_A, "uncommitted?"));
    callcache_writes_done(cc, &w);
    assert_true(fill(cc, sid, ACCT_A, "new"));
    assert_true(get_is(cc, sid, ACCT_A, "new"));
    callcache_destroy(cc);
}

/* The reader's ticket predates a write that began and committed while it
 * read the row: what it read may be the old row, so its put is refused. */
static void test_generation_race(void **state)
{
    (void)state;
    callcache *cc = callcache_create(16);
    callcache_writes w;
    callcache_ticket t;
    char sid[SID_SIZE], *b = NULL;
    size_t len;
    callcache_writes_init(&w);
    sid_n(sid, 5);

    /* Write entirely inside the reader's window. */
    assert_false(callcache_get(cc, sid, ACCT_A, &b, &len, &t));
    callcache_write(cc, &w, sid);
    callcache_writes_done(cc, &w);
    assert_false(callcache_put(cc, t, sid, ACCT_A, "stale", 5));
    assert_false(get_is(cc, sid, ACCT_A, NULL));

    /* Reader starts while the write is open, puts after it ended. */
    callcache_write(cc, &w, sid);
    assert_false(callcache_get(cc, sid, ACCT_A, &b, &len, &t));
    assert_false(callcache_put(cc, t, sid, ACCT_A, "stale", 5));   /* in flight */
    callcache_writes_done(cc, &w);
    assert_false(callcache_put(cc, t, sid, ACCT_A, "stale", 5));   /* generation moved */
    assert_false(get_is(cc, sid, ACCT_A, NULL));

    /* Write begins in the window and is still open at the put. */
    assert_false(callcache_get(cc, sid, ACCT_A, &b, &len, &t));
    callcache_write(cc, &w, sid);
    assert_false(callcache_put(cc, t, sid, ACCT_A, "stale", 5));
    callcache_writes_done(cc, &w);

    /* A reader after the release is fine. */
    assert_true(fill(cc, sid, ACCT_A, "fresh"));
    assert_true(get_is(cc, sid, ACCT_A, "fresh"));
    callcache_destroy(cc);
}

static void test_eviction_at_cap(void **state)
{
    (void)state;
    char sid[SID_SIZE], hot[SID_SIZE];
    callcache_stats st;
    /* One entry: the second put evicts the first. */
    callcache *cc = callcache_create(1);
    sid_n(sid, 1);
    assert_true(fill(cc, sid, ACCT_A, "one"));
    sid_n(sid, 2);
    assert_true(fill(cc, sid, ACCT_A, "two"));
    callcache_get_stats(cc, &st);
    assert_int_equal(st.entries, 1);
    assert_true(get_is(cc, sid, ACCT_A, "two"));
    sid_n(sid, 1);
    assert_false(get_is(cc, sid, ACCT_A, NULL));
    callcache_destroy(cc);

    /* Many more puts than the cap, across every shard: the count stays at
     * the cap, a SID read between every put survives (least recently used
     * goes first), an early one untouched since is gone. */
    for (size_t cap = 3; cap <= 300; cap *= 10) {
        cc = callcache_create(cap);
        sid_n(hot, 0);
        assert_true(fill(cc, hot, ACCT_A, "hot"));
        for (unsigned i = 1; i <= 40 * cap; i++) {
            sid_n(sid, i);
            assert_true(fill(cc, sid, ACCT_A, "x"));
            assert_true(get_is(cc, hot, ACCT_A, "hot"));
            callcache_get_stats(cc, &st);
            assert_true(st.entries <= cap);
        }
        callcache_get_stats(cc, &st);
        assert_int_equal(st.entries, cap);
        sid_n(sid, 1);
        assert_false(get_is(cc, sid, ACCT_A, NULL));
        callcache_destroy(cc);
    }
}

static void test_cap_zero_disables(void **state)
{
    (void)state;
    callcache *cc = callcache_create(0);
    callcache_writes w;
    callcache_stats st;
    char sid[SID_SIZE], *b = (char *)1;
    size_t len;
    callcache_ticket t = 1;
    assert_null(cc);
    sid_n(sid, 1);
    assert_false(callcache_put(cc, 0, sid, ACCT_A, "x", 1));
    assert_false(callcache_get(cc, sid, ACCT_A, &b, &len, &t));
    assert_null(b);
    callcache_writes_init(&w);
    callcache_write(cc, &w, sid);
    callcache_writes_done(cc, &w);
    callcache_get_stats(cc, &st);
    assert_int_equal(st.hits + st.misses + st.entries, 0);
    callcache_destroy(NULL);
}

/* ---- wired to a real store ---- */

typedef struct fixture {
    char      dir[64], path[96];
    store    *s;
    callcache *cc;
} fixture;

static int setup_store(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char err[256];
    snprintf(f->dir, sizeof f->dir, "/tmp/test_callcache.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/t.db", f->dir);
    f->s = store_open(f->path, err, sizeof err);
    assert_non_null(f->s);
    f->cc = callcache_create(64);
    store_set_callcache(f->s, f->cc);
    *state = f;
    return 0;
}

static int teardown_store(void **state)
{
    fixture *f = *state;
    char p[128];
    store_close(f->s);
    callcache_destroy(f->cc);
    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", f->path, sfx[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static void make_call(store_call *c, unsigned n, const char *status)
{
    memset(c, 0, sizeof *c);
    sid_n(c->sid, n);
    snprintf(c->account_sid, sizeof c->account_sid, ACCT_A);
    snprintf(c->to, sizeof c->to, "+14155550100");
    snprintf(c->from, sizeof c->from, "+14155550199");
    snprintf(c->status, sizeof c->status, "%s", status);
    snprintf(c->direction, sizeof c->direction, "outbound-api");
    snprintf(c->token, sizeof c->token, "tok%u", n);
    c->date_created = c->date_updated = 1720000000000;
    c->duration = 0;
}

/* What the fetch handler does, with "duration=<n>" as the body. Runs on
 * the race test's threads too. */
static bool fetch(store *s, callcache *cc, const char *sid, int *duration, bool *hit)
{
    char *b = NULL, body[32];
    size_t len;
    callcache_ticket t;
    store_call row;
    store_conn *c;
    store_status st;
    if (callcache_get(cc, sid, ACCT_A, &b, &len, &t)) {
        CHECK(len < sizeof body);
        memcpy(body, b, len);
        body[len] = '\0';
        free(b);
        *duration = atoi(body + strlen("duration="));
        *hit = true;
        return true;
    }
    *hit = false;
    c = store_conn_acquire(s);
    CHECK(c != NULL);
    st = store_call_get(c, ACCT_A, sid, &row);
    store_conn_release(c);
    if (st != STORE_OK) return false;
    *duration = row.duration;
    snprintf(body, sizeof body, "duration=%d", row.duration);
    (void)callcache_put(cc, t, sid, ACCT_A, body, strlen(body));
    store_call_fini(&row);
    return true;
}

static void test_store_writes_invalidate(void **state)
{
    fixture *f = *state;
    store_conn *c = store_conn_acquire(f->s);
    store_call call;
    int d;
    bool hit;
    make_call(&call, 1, "completed");
    call.duration = 10;
    assert_int_equal(store_call_insert(c, &call), STORE_OK);   /* outside a transaction */
    assert_true(fetch(f->s, f->cc, call.sid, &d, &hit));
    assert_false(hit);
    assert_true(fetch(f->s, f->cc, call.sid, &d, &hit));
    assert_true(hit);
    assert_int_equal(d, 10);

    /* An update inside a transaction: gone at once, nothing cached until
     * the commit, then the new row. */
    assert_int_equal(store_begin(c), STORE_OK);
    call.duration = 11;
    assert_int_equal(store_call_update(c, &call), STORE_OK);
    assert_true(fetch(f->s, f->cc, call.sid, &d, &hit));
    assert_false(hit);
    assert_int_equal(d, 10);                       /* the committed row */
    assert_true(fetch(f->s, f->cc, call.sid, &d, &hit));
    assert_false(hit);                             /* and it was not cached */
    assert_int_equal(store_commit(c), STORE_OK);
    assert_true(fetch(f->s, f->cc, call.sid, &d, &hit));
    assert_false(hit);
    assert_int_equal(d, 11);
    assert_true(fetch(f->s, f->cc, call.sid, &d, &hit));
    assert_true(hit);
    assert_int_equal(d, 11);

    /* Rolled back: the shard is released and the old row comes back. */
    assert_int_equal(store_begin(c), STORE_OK);
    call.duration = 12;
    assert_int_equal(store_call_update(c, &call), STORE_OK);
    store_rollback(c);
    assert_true(fetch(f->s, f->cc, call.sid, &d, &hit));
    assert_false(hit);
    assert_int_equal(d, 11);
    assert_true(fetch(f->s, f->cc, call.sid, &d, &hit));
    assert_true(hit);

    /* Deleted outside a transaction: not found, not served from the cache. */
    assert_int_equal(store_call_delete(c, ACCT_A, call.sid), STORE_OK);
    assert_false(fetch(f->s, f->cc, call.sid, &d, &hit));
    store_conn_release(c);
}

/* A writer commits duration = 1, 2, 3 … and publishes each value after its
 * commit; readers note the published value before each fetch, and whatever
 * they get — hit or miss — may never be older than it. A cache without the
 * ticket check (or without the release after commit) fails this quickly. */
#define RACE_WRITES 1500

typedef struct race {
    fixture    *f;
    char        sid[SID_SIZE];
    atomic_int  committed;
    atomic_bool stop;
    atomic_long hits, checks;
} race;

static void *race_reader(void *arg)
{
    race *r = arg;
    while (!atomic_load(&r->stop)) {
        int before = atomic_load(&r->committed), d = -1;
        bool hit;
        CHECK(fetch(r->f->s, r->f->cc, r->sid, &d, &hit));
        if (d < before) {
            fprintf(stderr, "stale body: duration %d after %d was committed (%s)\n", d, before,
                    hit ? "hit" : "miss");
            abort();
        }
        atomic_fetch_add(&r->checks, 1);
        if (hit) atomic_fetch_add(&r->hits, 1);
    }
    return NULL;
}

static void test_store_race_never_stale(void **state)
{
    race r = {.f = *state};
    store_conn *c = store_conn_acquire(r.f->s);
    store_call call;
    pthread_t th[2];
    make_call(&call, 2, "completed");
    snprintf(r.sid, sizeof r.sid, "%s", call.sid);
    assert_int_equal(store_call_insert(c, &call), STORE_OK);
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, race_reader, &r), 0);
    for (int i = 1; i <= RACE_WRITES; i++) {
        call.duration = i;
        /* Alternate a batch (the engine's way) and a lone statement. */
        if (i % 2) {
            assert_int_equal(store_begin(c), STORE_OK);
            assert_int_equal(store_call_update(c, &call), STORE_OK);
            usleep(50);                     /* a batch stays open a while */
            assert_int_equal(store_commit(c), STORE_OK);
        } else {
            assert_int_equal(store_call_update(c, &call), STORE_OK);
        }
        atomic_store(&r.committed, i);
        if (i % 8 == 0) usleep(200);        /* let readers fill the cache */
    }
    atomic_store(&r.stop, true);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    store_conn_release(c);
    /* The test means something only if the cache was really used. */
    assert_true(atomic_load(&r.checks) > 100);
    assert_true(atomic_load(&r.hits) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_and_miss),
        cmocka_unit_test(test_other_account_misses),
        cmocka_unit_test(test_write_invalidates),
        cmocka_unit_test(test_generation_race),
        cmocka_unit_test(test_eviction_at_cap),
        cmocka_unit_test(test_cap_zero_disables),
        cmocka_unit_test_setup_teardown(test_store_writes_invalidate, setup_store, teardown_store),
        cmocka_unit_test_setup_teardown(test_store_race_never_stale, setup_store, teardown_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
