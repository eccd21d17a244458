/* pg_cluster.c — instances sharing one PostgreSQL database (store/cluster.h,
 * docs/scale-out.md §4, §5): the instances table and its leases, the
 * adoption of calls whose owner is gone, the inbox, all on the database's
 * clock (twigate_now_ms(), pg_schema.c step 6).
 *
 * Every decision two instances could race on is one statement or a row
 * lock, never a read then a write: the fence is an UPDATE … WHERE the lease
 * has run out (one winner per instance row), calls are taken with FOR
 * UPDATE SKIP LOCKED (two adopters take disjoint calls, neither waits), and
 * a dead instance's row is held FOR SHARE while its calls are taken, so a
 * restart under the same name (pg_instance_join's upsert) waits for the
 * adoption under way to commit and then loads only what is left. */
#include "pg_int.h"

#include <time.h>

#include <openssl/rand.h>

/* ---- instances and leases ---- */

store_status pg_instance_join(store *s, const char *id, const char *version, int lease_ms,
                              int wait_ms, char *err, size_t errlen)
{
    store_conn *c = store_conn_acquire(s);
    if (!c) {
        snprintf(err, errlen, "no database connection");
        return STORE_ERROR;
    }
    pg_num n;
    const char *v[] = {id, pg_i64(&n, lease_ms), version};
    store_status st;
    /* This process's name for its budget slots: a restart under the same
     * instance name is another process, whose log in memory starts empty. */
    unsigned char rnd[16];
    pg_store *ps = (pg_store *)s;
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        snprintf(err, errlen, "no random bytes for the session name");
        store_conn_release(c);
        return STORE_ERROR;
    }
    for (size_t i = 0; i < sizeof rnd; i++) snprintf(ps->session + 2 * i, 3, "%02x", rnd[i]);
    /* From now on a session of this process left idle inside a transaction
     * for a whole lease is ended by the server (idle_limit_apply, pg_conn.c);
     * this one takes it when it is next taken from the pool. */
    atomic_store(&ps->idle_txn_ms, lease_ms);
    /* A row still up with a running lease is another live process under
     * this name (or this one's previous life, killed: its lease runs out). */
    for (int waited = 0;; waited += 100) {
        PGresult *r = pg_run(c,
            "INSERT INTO instances(id, lease_until_ms, started_ms, version, state)"
            " VALUES($1, twigate_now_ms() + $2::bigint, twigate_now_ms(), $3, 'up')"
            " ON CONFLICT (id) DO UPDATE SET lease_until_ms = EXCLUDED.lease_until_ms,"
            " started_ms = EXCLUDED.started_ms, version = EXCLUDED.version, state = 'up'"
            " WHERE instances.state <> 'up' OR instances.lease_until_ms < twigate_now_ms()"
            " RETURNING id", 3, v, &st, "instance join");
        bool joined = r && PQntuples(r) == 1;
        PQclear(r);
        if (joined || st != STORE_OK) break;
        if (waited >= wait_ms) {
            st = STORE_CONFLICT;
            break;
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (st == STORE_CONFLICT)
        snprintf(err, errlen, "instance %s is up elsewhere (its lease is still running):"
                 " each instance needs its own cluster.instance_id", id);
    else if (st != STORE_OK)
        snprintf(err, errlen, "cannot register instance %s", id);
    store_conn_release(c);
    return st;
}

store_status pg_instance_renew(store_conn *c, int lease_ms)
{
    pg_num n;
    store_status st;
    const char *v[] = {c->owner->instance, pg_i64(&n, lease_ms)};
    PGresult *r = pg_run(c, "UPDATE instances SET lease_until_ms = twigate_now_ms() + $2::bigint"
                            " WHERE id = $1 AND state = 'up'", 2, v, &st, "instance renew");
    if (r && !strcmp(PQcmdTuples(r), "0")) st = STORE_CONFLICT;   /* fenced */
    PQclear(r);
    return st;
}

store_status pg_instance_leave(store_conn *c)
{
    const char *v[] = {c->owner->instance};
    return pg_do(c, "UPDATE instances SET state = 'left', lease_until_ms = twigate_now_ms()"
                    " WHERE id = $1 AND state = 'up'", 1, v, "instance leave");
}

/* ---- adoption ---- */

/* A PostgreSQL array literal of the strings in column ca of a and column
 * cb of b (either result may be NULL), then extra (when not NULL), each
 * double-quoted with \\ and " escaped. NULL on out of memory. */
static char *array_literal(const PGresult *a, int ca, const PGresult *b, int cb,
                           const char *extra)
{
    const PGresult *rs[2] = {a, b};
    int cols[2] = {ca, cb};
    size_t cap = 3 + (extra ? 2 * strlen(extra) + 3 : 0);
    for (int k = 0; k < 2; k++)
        for (int i = 0; rs[k] && i < PQntuples(rs[k]); i++)
            cap += 2 * strlen(PQgetvalue(rs[k], i, cols[k])) + 3;
    char *out = malloc(cap), *p = out;
    if (!out) return NULL;
    *p++ = '{';
    for (int k = 0; k < 3; k++) {
        int rows = k < 2 ? (rs[k] ? PQntuples(rs[k]) : 0) : (extra != NULL);
        for (int i = 0; i < rows; i++) {
            const char *s = k < 2 ? PQgetvalue(rs[k], i, cols[k]) : extra;
            if (p > out + 1) *p++ = ',';
            *p++ = '"';
            for (; *s; s++) {
                if (*s == '"' || *s == '\\') *p++ = '\\';
                *p++ = *s;
            }
            *p++ = '"';
        }
    }
    *p++ = '}';
    *p = '\0';
    return out;
}

store_status pg_adopt(store_conn *c, int max, const store_adopt_cbs *cbs, void *arg, int *n,
                      int *fenced)
{
    const char *me = c->owner->instance;
    store_status st = store_begin(c);
    PGresult *dead = NULL, *live = NULL, *owing = NULL;
    char *gone = NULL, *sids = NULL;
    if (st == STORE_CONFLICT) return STORE_ERROR;   /* inside a batch: the caller's bug */
    if (st != STORE_OK) return st;

    /* Fence: an instance whose lease ran out is dead from now on; if it is
     * only paused, its next renewal finds that out and it stops. */
    const char *v1[] = {me};
    PGresult *r = pg_run(c, "UPDATE instances SET state = 'dead' WHERE state = 'up'"
                            " AND lease_until_ms < twigate_now_ms() AND id <> $1 RETURNING id",
                         1, v1, &st, "fence instances");
    if (!r) goto fail;
    *fenced = PQntuples(r);
    for (int i = 0; i < *fenced; i++)
        log_warn("store", "instance %s missed its lease: fenced, its calls are adopted",
                 PQgetvalue(r, i, 0));
    PQclear(r);

    /* Owners that are not up, held FOR SHARE (see the top); "" is the owner
     * of calls written before there were instances. */
    dead = pg_run(c, "SELECT id FROM instances WHERE state <> 'up' AND id <> $1 FOR SHARE",
                  1, v1, &st, "dead instances");
    if (!dead) goto fail;
    pg_store *ps = (pg_store *)c->owner;
    if (PQntuples(dead) == 0 && ps->unowned_taken) {
        /* Nobody to take from: the usual pass is these two statements. */
        st = store_commit(c);
        goto out;
    }
    if (!(gone = array_literal(dead, 0, NULL, 0, ""))) goto fail;
    pg_num nmax;
    const char *v2[] = {me, gone, pg_i64(&nmax, max)};
    live = pg_run(c, "UPDATE calls SET owner = $1 WHERE id IN ("
                     " SELECT id FROM calls WHERE owner = ANY($2::text[]) AND " PG_LIVE_CONDITION
                     " ORDER BY id LIMIT $3::bigint FOR UPDATE SKIP LOCKED)"
                     " RETURNING " PG_CALL_COLS, 3, v2, &st, "adopt live calls");
    if (!live) goto fail;
    /* Ended calls of those owners that still owe something: their pending
     * deliveries, unread inbox rows and recordings still to fetch or cut
     * would be nobody's otherwise. */
    const char *v3[] = {me, gone};
    owing = pg_run(c, "UPDATE calls SET owner = $1 WHERE owner = ANY($2::text[])"
                      " AND NOT " PG_LIVE_CONDITION " AND sid IN ("
                      " SELECT call_sid FROM outbox WHERE state = 'pending'"
                      " UNION SELECT call_sid FROM call_inbox"
                      " UNION SELECT call_sid FROM recordings WHERE deleted = 0"
                      "  AND status IN ('in-progress', 'stopped', 'processing')) RETURNING sid",
                   2, v3, &st, "adopt owing calls");
    if (!owing) goto fail;
    if (!(sids = array_literal(live, 1, owing, 0, NULL))) goto fail;
    /* Their inbox rows move with them. */
    const char *v4[] = {me, sids};
    if (PQntuples(live) + PQntuples(owing) &&
        (st = pg_do(c, "UPDATE call_inbox SET owner = $1 WHERE call_sid = ANY($2::text[])",
                    2, v4, "adopt inbox")) != STORE_OK)
        goto fail;
    if ((st = store_commit(c)) != STORE_OK) goto out;
    ps->unowned_taken = PQntuples(live) < max;   /* else more wait for the next pass */
    *n = PQntuples(live) + PQntuples(owing);

    /* Committed: the calls are this instance's now. */
    pg_calls_each_row(live, cbs->call, arg);
    if (*n) {
        const char *v5[] = {sids};
        r = pg_run(c, "SELECT id, call_sid, body FROM kevents WHERE done = 0"
                      " AND call_sid = ANY($1::text[]) ORDER BY id", 1, v5, &st, "adopted kevents");
        for (int i = 0; r && i < PQntuples(r); i++)
            cbs->kevent(col_i64(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), arg);
        PQclear(r);
        r = pg_run(c, "SELECT id, call_sid, account_sid, kind, seq, url, method, params, idem,"
                      " created FROM outbox WHERE state = 'pending' AND call_sid = ANY($1::text[])"
                      " ORDER BY id", 1, v5, &st, "adopted outbox");
        pg_outbox_each_row(r, cbs->outbox, arg);
        PQclear(r);
        for (int i = 0; cbs->ended && i < PQntuples(owing); i++)
            cbs->ended(PQgetvalue(owing, i, 0), arg);
    }
    /* Dead rows that own nothing live any more are forgotten (their ended
     * calls keep the name, which is only history then). */
    if (PQntuples(dead))
        (void)pg_do(c, "DELETE FROM instances WHERE state <> 'up' AND id = ANY($1::text[])"
                       " AND NOT EXISTS (SELECT 1 FROM calls WHERE owner = instances.id AND "
                       PG_LIVE_CONDITION ")", 1, (const char *const[]){gone}, "forget instances");
    goto out;
fail:
    store_rollback(c);
out:
    PQclear(dead);
    PQclear(live);
    PQclear(owing);
    free(gone);
    free(sids);
    return st;
}

/* ---- the inbox ---- */

store_status pg_inbox_insert(store_conn *c, const char *call_sid, const char *kind,
                             const char *body, size_t len)
{
    char *b = strndup(body, len);   /* a text parameter ends at its NUL */
    if (!b) return STORE_ERROR;
    const char *v[] = {call_sid, kind, b};
    /* The owner's wake-up goes out when the batch commits (NOTIFY is
     * transactional), named by the row, so an adoption that moved the call
     * meanwhile is the one woken. */
    /* The row names the call's owner as it is now; FOR SHARE orders the
     * insert against an adoption's UPDATE of the call (the adoption then
     * moves the row with the call, or the insert sees the new owner). */
    store_status st = pg_do(c,
        "WITH i AS (INSERT INTO call_inbox(call_sid, owner, kind, body, received_ms)"
        " SELECT sid, owner, $2, $3, twigate_now_ms() FROM calls WHERE sid = $1 FOR SHARE"
        " RETURNING owner)"
        " SELECT pg_notify('twigate_inbox', owner) FROM i", 3, v, "inbox insert");
    free(b);
    return st;
}

store_status pg_inbox_each(store_conn *c, int max,
        void (*cb)(int64_t id, const char *call_sid, const char *kind, const char *body,
                   void *arg), void *arg)
{
    pg_num n;
    store_status st;
    const char *v[] = {c->owner->instance, pg_i64(&n, max)};
    /* One index range (call_inbox_owner): the others' rows are not read. */
    PGresult *r = pg_run(c, "SELECT id, call_sid, kind, body FROM call_inbox WHERE owner = $1"
                            " ORDER BY id LIMIT $2::bigint", 2, v, &st, "inbox");
    for (int i = 0; r && i < PQntuples(r); i++)
        cb(col_i64(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), arg);
    PQclear(r);
    return st;
}

store_status pg_inbox_done(store_conn *c, int64_t id)
{
    pg_num n;
    const char *v[] = {pg_i64(&n, id)};
    return pg_defer(c, "DELETE FROM call_inbox WHERE id = $1", 1, v, NULL, false, "inbox done");
}

/* ---- the shared budget ---- */

store_status pg_budget_take(store_conn *c, const char *label, int limit, int64_t hold_ms,
                            int reserve_per_live, int live, int pending_new, int64_t *wait_ms)
{
    pg_num n[5];
    store_status st;
    const char *v[] = {label, pg_i64(&n[0], limit), pg_i64(&n[1], hold_ms),
                       pg_i64(&n[2], reserve_per_live), c->owner->instance,
                       pg_i64(&n[3], live), pg_i64(&n[4], pending_new),
                       ((pg_store *)c->owner)->session};
    /* A SELECT outside any transaction: the function's writes commit with
     * it, and a session found cut is reopened and the take run again. */
    PGresult *r = pg_run(c, "SELECT twigate_budget_take($1, $2::bigint, $3::bigint, $4::bigint,"
                            " $5, $6::bigint, $7::bigint, $8)", 8, v, &st, "budget take");
    if (r && PQntuples(r) == 1) {
        *wait_ms = col_i64(r, 0, 0);
        if (*wait_ms > 0) st = STORE_CONFLICT;
    }
    PQclear(r);
    return st;
}

store_status pg_budget_live(store_conn *c, const char *label, int live)
{
    pg_num n;
    const char *v[] = {label, c->owner->instance, pg_i64(&n, live)};
    return pg_do(c, "INSERT INTO budget_usage(label, instance, live) VALUES($1, $2, $3::bigint)"
                    " ON CONFLICT (label, instance) DO UPDATE SET live = EXCLUDED.live",
                 3, v, "budget live");
}

/* ---- the inbox's wake-up ---- */

typedef struct pg_listener {
    const store_backend *be;    /* store_cluster.c's head: first */
    PGconn *pq;
    char    me[STORE_INSTANCE_LEN];
} pg_listener;

store_listener *pg_listener_open(store *s)
{
    pg_listener *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->be = s->be;
    snprintf(l->me, sizeof l->me, "%s", s->instance);
    l->pq = PQconnectdb(((pg_store *)s)->url);
    PGresult *r = l->pq && PQstatus(l->pq) == CONNECTION_OK
                      ? PQexec(l->pq, "LISTEN twigate_inbox") : NULL;
    bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok || PQsetnonblocking(l->pq, 1) != 0) {
        log_warn("store", "cannot listen for inbox notifications%s%s; the inbox is polled",
                 l->pq ? ": " : "", l->pq ? PQerrorMessage(l->pq) : "");
        PQfinish(l->pq);
        free(l);
        return NULL;
    }
    return (store_listener *)l;
}

int pg_listener_fd(const store_listener *base)
{
    return PQsocket(((const pg_listener *)base)->pq);
}

int pg_listener_drain(store_listener *base)
{
    pg_listener *l = (pg_listener *)base;
    if (!PQconsumeInput(l->pq) || PQstatus(l->pq) != CONNECTION_OK) return -1;
    int n = 0;
    PGnotify *nt;
    while ((nt = PQnotifies(l->pq))) {
        if (!strcmp(nt->extra, l->me)) n++;
        PQfreemem(nt);
    }
    return n;
}

void pg_listener_close(store_listener *base)
{
    pg_listener *l = (pg_listener *)base;
    PQfinish(l->pq);
    free(l);
}
