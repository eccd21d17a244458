/* storeceil — the storage ceiling of a create: how many calls/s SQLite alone
 * stores on this machine when it writes what twigate's creates write, with
 * twigate's settings. bench/run.sh divides twigate's sustained create rate by
 * it (docs/performance.md, "Same-run ceilings").
 *
 *   storeceil DB TEMPLATE_SID CALLS BATCH
 *
 * DB is a database twigate created (its schema, at its version) holding one
 * call that went all the way (TEMPLATE_SID, through the simulator). Every
 * row that call left — its `calls` row and the rows of every other table
 * whose call_sid is it (call_events, outbox, notifications, …) — is copied
 * CALLS times under new SIDs and tokens that sort by age, as twigate's do
 * (src/base/sid.c), so indexes grow at their right edge as they do there.
 *
 * The work is pipelined as twigate's group commit sees it at saturation:
 * each transaction inserts BATCH new calls (status queued) and moves the
 * BATCH calls of each of the three transactions before one status further
 * (ringing, in-progress, then the template's final status, with its rows of
 * the other tables),
 * so a transaction holds BATCH creates' worth of every write, as a loop
 * iteration of the engine does with BATCH creates in flight.
 *
 * Settings are twigate's (src/store/store_schema.c): journal_mode=WAL,
 * synchronous=NORMAL, temp_store=MEMORY, cache_size=-8192,
 * wal_autocheckpoint=0, and a second thread running a PASSIVE checkpoint
 * each 1,024 WAL frames (src/store/store.c's store-ckpt), so no commit
 * waits for a checkpoint here either.
 *
 * Output, one line: calls= batch= seconds= rate= cpu_us_per_call=.
 * Not part of twigate; threads: main (writes), ckpt (checkpoints). */
#define _GNU_SOURCE
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define CKPT_FRAMES 1024
#define MAX_TABLES 16
#define MAX_COLS 64

static const char *db_path;
static atomic_bool ckpt_kick, ckpt_stop;
static atomic_int ckpt_mark;
static long long kbase;   /* past every earlier run's counters: max(id) × 8 */

static void die(sqlite3 *db, const char *what)
{
    fprintf(stderr, "storeceil: %s: %s\n", what, db ? sqlite3_errmsg(db) : "");
    exit(1);
}

static void exec(sqlite3 *db, const char *sql)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) die(db, sql);
}

static sqlite3 *open_db(void)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) die(db, db_path);
    sqlite3_busy_timeout(db, 5000);
    exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=OFF;"
             " PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint=0; PRAGMA cache_size=-8192;");
    return db;
}

static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)arg; (void)db; (void)name;
    int mark = atomic_load(&ckpt_mark);
    if (frames < mark) mark = 0;
    if (frames - mark >= CKPT_FRAMES) atomic_store(&ckpt_kick, true);
    return SQLITE_OK;
}

/* Polls every millisecond rather than waiting on a condition: its own cost
 * is a few µs a second, and the writer's commit path stays one atomic store. */
static void *checkpointer(void *arg)
{
    (void)arg;
    sqlite3 *db = open_db();
    pthread_setname_np(pthread_self(), "ckpt");
    struct timespec ms = {0, 1000000};
    while (!atomic_load(&ckpt_stop)) {
        if (!atomic_exchange(&ckpt_kick, false)) { nanosleep(&ms, NULL); continue; }
        int log_frames = -1;
        (void)sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames, NULL);
        if (log_frames >= 0) atomic_store(&ckpt_mark, log_frames);
    }
    sqlite3_close(db);
    return NULL;
}

/* One table's template rows: an INSERT of every column but id, and the
 * values to bind (text or integer, as stored). */
typedef struct {
    char name[64];
    sqlite3_stmt *ins;
    int ncols, nrows;
    char *col[MAX_COLS];
    sqlite3_value **val;   /* nrows × ncols, sqlite3_value_dup'ed */
} table;

static int load_table(sqlite3 *db, table *t, const char *name, const char *key, const char *sid)
{
    char sql[512];
    sqlite3_stmt *st;
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(sql, sizeof sql, "SELECT * FROM \"%s\" WHERE %s = ?", name, key);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) die(db, sql);
    sqlite3_bind_text(st, 1, sid, -1, SQLITE_STATIC);
    int n = sqlite3_column_count(st), cap = 0;
    t->ncols = 0;
    for (int i = 0; i < n && t->ncols < MAX_COLS; i++)
        if (strcmp(sqlite3_column_name(st, i), "id")) t->col[t->ncols++] = strdup(sqlite3_column_name(st, i));
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (t->nrows == cap) {
            cap = cap ? cap * 2 : 8;
            t->val = realloc(t->val, sizeof *t->val * (size_t)cap * (size_t)t->ncols);
        }
        for (int i = 0, j = 0; i < n; i++)
            if (strcmp(sqlite3_column_name(st, i), "id"))
                t->val[t->nrows * t->ncols + j++] = sqlite3_value_dup(sqlite3_column_value(st, i));
        t->nrows++;
    }
    sqlite3_finalize(st);
    size_t off = (size_t)snprintf(sql, sizeof sql, "INSERT INTO \"%s\"(", name);
    for (int i = 0; i < t->ncols; i++) off += (size_t)snprintf(sql + off, sizeof sql - off, "%s%s", i ? "," : "", t->col[i]);
    off += (size_t)snprintf(sql + off, sizeof sql - off, ") VALUES(");
    for (int i = 0; i < t->ncols; i++) off += (size_t)snprintf(sql + off, sizeof sql - off, "%s?", i ? "," : "");
    snprintf(sql + off, sizeof sql - off, ")");
    if (t->nrows && sqlite3_prepare_v2(db, sql, -1, &t->ins, NULL) != SQLITE_OK) die(db, sql);
    return t->nrows;
}

/* Call k's unique strings: the template's prefix (CA, NO, …) and, as
 * twigate's, the creation time in ms first, then a counter. */
static void uniq(char *out, size_t size, const char *tmpl, long long t0, long k)
{
    size_t len = strlen(tmpl);
    char buf[96];
    snprintf(buf, sizeof buf, "%.2s%012llx%020llx%s", tmpl, t0 + k / 1000, (unsigned long long)(kbase + k),
             "00000000000000000000000000000000000000000000");
    if (len >= size) len = size - 1;
    if (len > sizeof buf - 1) len = sizeof buf - 1;
    memcpy(out, buf, len);
    out[len] = '\0';
}

static void insert_rows(sqlite3 *db, table *t, long long t0, long k, const char *status)
{
    char u[MAX_COLS][96];
    for (int r = 0; r < t->nrows; r++) {
        sqlite3_reset(t->ins);
        for (int i = 0; i < t->ncols; i++) {
            sqlite3_value *v = t->val[r * t->ncols + i];
            const char *c = t->col[i];
            bool unique = !strcmp(c, "sid") || !strcmp(c, "call_sid") || !strcmp(c, "token") ||
                          !strcmp(c, "kaphila_id") || !strcmp(c, "idem");
            if (unique && sqlite3_value_type(v) == SQLITE_TEXT && sqlite3_value_bytes(v) > 0) {
                uniq(u[i], sizeof u[i], (const char *)sqlite3_value_text(v), t0, k * 8 + r);
                if (!strcmp(c, "call_sid")) uniq(u[i], sizeof u[i], (const char *)sqlite3_value_text(v), t0, k * 8);
                sqlite3_bind_text(t->ins, i + 1, u[i], -1, SQLITE_STATIC);
            } else if (status && !strcmp(c, "status")) {
                sqlite3_bind_text(t->ins, i + 1, status, -1, SQLITE_STATIC);
            } else {
                sqlite3_bind_value(t->ins, i + 1, v);
            }
        }
        if (sqlite3_step(t->ins) != SQLITE_DONE) die(db, t->name);
    }
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: storeceil DB TEMPLATE_SID CALLS BATCH\n");
        return 2;
    }
    db_path = argv[1];
    const char *sid = argv[2];
    long calls = atol(argv[3]), batch = atol(argv[4]);
    if (calls < 1 || batch < 1) return 2;
    sqlite3 *db = open_db();
    sqlite3_wal_hook(db, wal_hook, NULL);

    /* The template: its calls row, and its rows in every table keyed by call_sid. */
    static table tabs[MAX_TABLES];
    int nt = 0;
    load_table(db, &tabs[nt++], "calls", "sid", sid);
    if (tabs[0].nrows != 1) { fprintf(stderr, "storeceil: no call %s\n", sid); return 1; }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) p"
                               " WHERE m.type = 'table' AND p.name = 'call_sid'", -1, &st, NULL) != SQLITE_OK)
        die(db, "tables");
    while (sqlite3_step(st) == SQLITE_ROW && nt < MAX_TABLES) {
        char name[64];
        snprintf(name, sizeof name, "%s", (const char *)sqlite3_column_text(st, 0));
        if (load_table(db, &tabs[nt], name, "call_sid", sid) > 0) nt++;
    }
    sqlite3_finalize(st);
    sqlite3_stmt *upd;
    if (sqlite3_prepare_v2(db, "UPDATE calls SET status = ?, date_updated = date_updated + 1 WHERE id = ?",
                           -1, &upd, NULL) != SQLITE_OK)
        die(db, "update");
    /* The template's final status (completed for a <Hangup/> call). */
    char final[32] = "completed";
    for (int i = 0; i < tabs[0].ncols; i++)
        if (!strcmp(tabs[0].col[i], "status"))
            snprintf(final, sizeof final, "%s", (const char *)sqlite3_value_text(tabs[0].val[i]));

    pthread_t ck;
    pthread_create(&ck, NULL, checkpointer, NULL);
    struct timespec a, b;
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    clock_gettime(CLOCK_MONOTONIC, &a);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long long t0 = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    if (sqlite3_prepare_v2(db, "SELECT coalesce(max(id), 0) FROM calls", -1, &st, NULL) != SQLITE_OK) die(db, "max");
    if (sqlite3_step(st) == SQLITE_ROW) kbase = sqlite3_column_int64(st, 0) * 8;
    sqlite3_finalize(st);
    long steps = (calls + batch - 1) / batch;
    sqlite3_int64 *ids = calloc((size_t)(steps + 4) * (size_t)batch, sizeof *ids);
    const char *const stage[] = {"ringing", "in-progress", final};
    /* Step j: insert batch j (queued); batch j-1 → ringing, j-2 → in-progress;
     * j-3 → its final status, and its rows of the other tables. */
    for (long j = 0; j < steps + 3; j++) {
        exec(db, "BEGIN");
        for (long i = 0; j < steps && i < batch && j * batch + i < calls; i++) {
            insert_rows(db, &tabs[0], t0, j * batch + i, "queued");
            ids[j * batch + i] = sqlite3_last_insert_rowid(db);
        }
        for (int s = 0; s < 3; s++) {
            long jj = j - 1 - s;
            for (long i = 0; jj >= 0 && jj < steps && i < batch && jj * batch + i < calls; i++) {
                sqlite3_reset(upd);
                sqlite3_bind_text(upd, 1, stage[s], -1, SQLITE_STATIC);
                sqlite3_bind_int64(upd, 2, ids[jj * batch + i]);
                if (sqlite3_step(upd) != SQLITE_DONE) die(db, "update");
            }
        }
        long jj = j - 3;
        for (long i = 0; jj >= 0 && i < batch && jj * batch + i < calls; i++) {
            for (int t = 1; t < nt; t++) insert_rows(db, &tabs[t], t0, jj * batch + i, NULL);
        }
        exec(db, "COMMIT");
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    getrusage(RUSAGE_SELF, &r1);
    atomic_store(&ckpt_stop, true);
    pthread_join(ck, NULL);
    double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    double cpu = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) +
                 (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
    printf("calls=%ld batch=%ld tables=%d seconds=%.3f rate=%.0f cpu_us_per_call=%.1f\n", calls, batch, nt, secs,
           (double)calls / secs, cpu * 1e6 / (double)calls);
    free(ids);
    sqlite3_close(db);
    return 0;
}
