/* store.c — the store's dispatcher (docs/scale-out.md §1): store.h and
 * recstore.h, each operation one indirect call into the backend that
 * store_open_url picked (store_backend.h), plus what does not depend on a
 * backend: the call cache's write protocol around call-row writes, the
 * change signal, the fault and contention counters, and the row helpers.
 *
 * Map of the store (src/store/): store_backend.h, the vtable and the common
 * part of a store and a connection; store.c, this file; sqlite/, the SQLite
 * backend (sqlite_store.c has its map); pg/, the PostgreSQL backend
 * (pg_conn.c has its map); callcache.c and calljson.c, the
 * ended-call cache and the Call resource's JSON. */
#include "store_backend.h"

#include <stdlib.h>
#include <string.h>

#include "base/form.h"
#include "base/jsonw.h"
#include "base/log.h"

/* ---- opening ---- */

store *store_open(const char *path, char *err, size_t errlen)
{
    return store_open_url(NULL, path, err, errlen);
}

store *store_open_url(const char *url, const char *path, char *err, size_t errlen)
{
    const store_backend *be = &store_sqlite_backend;
    if (url && *url) {
        if (strncmp(url, "postgresql://", 13) != 0 && strncmp(url, "postgres://", 11) != 0) {
            snprintf(err, errlen, "db.url: not a postgresql:// URL (empty = SQLite at db.path)");
            return NULL;
        }
        be = &store_pg_backend;
    }
    store *s = be->open(url, path, err, errlen);
    if (s) s->be = be;
    return s;
}

void store_close(store *s)
{
    if (s) s->be->close(s);
}

const char *store_backend_name(const store *s)
{
    return s->be->name;
}

store_conn *store_conn_acquire(store *s)
{
    store_conn *c = s->be->conn_acquire(s);
    if (c) c->be = s->be;
    return c;
}

void store_conn_release(store_conn *c)
{
    if (c) c->be->conn_release(c);
}

/* ---- counters and signals ---- */

uint64_t store_busy_count(const store *s)
{
    return atomic_load(&((store *)s)->busy);
}

void store_faults(const store *s, store_fault_stats *out)
{
    store *m = (store *)s;
    for (int i = 0; i < STORE_FAULT_KINDS; i++) out->count[i] = atomic_load(&m->faults[i]);
    out->write_failing = atomic_load(&m->write_failing);
    out->integrity_failed = atomic_load(&m->integrity_failed);
}

void store_checkpoint_stats(const store *s, store_ckpt_stats *out)
{
    s->be->checkpoint_stats(s, out);
}

void store_set_callcache(store *s, callcache *cc) { s->callcache = cc; }

void store_set_change_hook(store *s, store_change_hook *hook, void *arg)
{
    s->change_arg = arg;
    s->change_hook = hook;
}

uint64_t store_call_changes(const store *s)
{
    return atomic_load(&((store *)s)->call_changes);
}

/* After the count, so that a reader that armed its hook and then found the
 * count unchanged is sure to be called (console_stream.c relies on it). */
static void calls_changed(store_conn *c)
{
    c->calls_written = false;
    atomic_fetch_add(&c->owner->call_changes, 1);
    if (c->owner->change_hook) c->owner->change_hook(c->owner->change_arg);
}

/* The call cache's side of a write to the calls table (callcache.h has the
 * protocol and why it is correct): cc_write_begin before the statement;
 * cc_write_end after it, which releases the written shards once no
 * transaction is open any more — at once for a statement outside a
 * transaction (its own commit), else at store_commit/store_rollback. A
 * backend may also end a transaction by itself (SQLite's automatic rollback
 * after an I/O or full-disk error), which the in_txn check catches too. */
static inline void cc_write_begin(store_conn *c, const char *sid)
{
    callcache_write(c->owner->callcache, &c->cc_writes, sid);
    c->calls_written = true;
}

static inline void cc_write_end(store_conn *c)
{
    if (c->be->in_txn(c)) return;
    callcache_writes_done(c->owner->callcache, &c->cc_writes);
    if (c->calls_written) calls_changed(c);
}

/* ---- transactions ---- */

store_status store_check_writable(store_conn *c) { return c->be->check_writable(c); }
store_status store_begin(store_conn *c) { return c->be->begin(c); }

store_status store_commit(store_conn *c)
{
    store_status r = c->be->commit(c);
    if (r == STORE_OK) atomic_store(&c->owner->write_failing, false);   /* writes work again */
    cc_write_end(c);   /* not after a COMMIT that left the transaction open (busy) */
    return r;
}

void store_rollback(store_conn *c)
{
    c->be->rollback(c);
    cc_write_end(c);
}

store_status store_write_probe(store_conn *c) { return c->be->write_probe(c); }

/* ---- calls ---- */

void store_call_fini(store_call *c)
{
    if (!c) return;
    json_decref(c->params);
    c->params = NULL;
}

bool store_status_live(const char *status)
{
    return !strcmp(status, "queued") || !strcmp(status, "ringing") ||
           !strcmp(status, "in-progress");
}

store_status store_call_insert(store_conn *c, store_call *call)
{
    cc_write_begin(c, call->sid);
    store_status r = c->be->call_insert(c, call);
    cc_write_end(c);
    return r;
}

store_status store_call_update(store_conn *c, const store_call *call)
{
    cc_write_begin(c, call->sid);
    store_status r = c->be->call_update(c, call);
    cc_write_end(c);
    return r;
}

store_status store_call_delete(store_conn *c, const char *account_sid, const char *sid)
{
    cc_write_begin(c, sid);
    store_status r = c->be->call_delete(c, account_sid, sid);
    cc_write_end(c);
    return r;
}

store_status store_call_get(store_conn *c, const char *account_sid, const char *sid,
                            store_call *out)
{
    return c->be->call_get(c, account_sid, sid, out);
}

store_status store_call_get_by_sid(store_conn *c, const char *sid, store_call *out)
{
    return c->be->call_get_by_sid(c, sid, out);
}

store_status store_call_get_by_token(store_conn *c, const char *token, store_call *out)
{
    return c->be->call_get_by_token(c, token, out);
}

store_status store_call_list(store_conn *c, const store_call_filter *f, int64_t before_id,
                             int64_t offset, int limit, store_call *out, int *n_out)
{
    return c->be->call_list(c, f, before_id, offset, limit, out, n_out);
}

store_status store_call_id(store_conn *c, const char *account_sid, const char *sid, int64_t *id)
{
    return c->be->call_id(c, account_sid, sid, id);
}

store_status store_call_each_live(store_conn *c, void (*cb)(store_call *call, void *arg),
                                  void *arg)
{
    return c->be->call_each_live(c, cb, arg);
}

store_status store_call_ckpt_put(store_conn *c, const char *call_sid, int64_t seq,
                                 const char *doc, const char *state, int64_t now_ms)
{
    return c->be->ckpt_put(c, call_sid, seq, doc, state, now_ms);
}

store_status store_call_ckpt_get(store_conn *c, const char *call_sid, char **doc, char **state)
{
    return c->be->ckpt_get(c, call_sid, doc, state);
}

store_status store_call_ckpt_delete(store_conn *c, const char *call_sid)
{
    return c->be->ckpt_delete(c, call_sid);
}

char *store_call_params_text(const store_call *call)
{
    return call->params ? jsonw_dumps(call->params) : strdup("{}");
}

/* ---- logs: kevents, outbox, call events, notifications ---- */

json_t *store_event_params_object(const char *enc)
{
    json_t *o = json_object();
    form f;
    form_init(&f);
    if (o && form_parse(&f, enc, strlen(enc)) == FORM_OK)
        for (size_t i = 0; i < f.n; i++)
            json_object_set_new(o, f.pairs[i].key, json_string(f.pairs[i].value));
    form_fini(&f);
    return o;
}

store_status store_kevent_insert(store_conn *c, const char *call_sid, const char *body,
                                 size_t len, bool done, int64_t *id)
{
    return c->be->kevent_insert(c, call_sid, body, len, done, id);
}

store_status store_kevent_done(store_conn *c, int64_t id)
{
    return c->be->kevent_done(c, id);
}

store_status store_kevent_each_pending(store_conn *c,
        void (*cb)(int64_t id, const char *call_sid, const char *body, void *arg), void *arg)
{
    return c->be->kevent_each_pending(c, cb, arg);
}

void store_outbox_fini(store_outbox *o)
{
    if (!o) return;
    free(o->url);
    free(o->method);
    free(o->params);
    o->url = o->method = o->params = NULL;
}

store_status store_outbox_insert(store_conn *c, store_outbox *o)
{
    return c->be->outbox_insert(c, o);
}

store_status store_outbox_finish(store_conn *c, int64_t id, const char *state, int attempts)
{
    return c->be->outbox_finish(c, id, state, attempts);
}

store_status store_outbox_each_pending(store_conn *c, void (*cb)(store_outbox *o, void *arg),
                                       void *arg)
{
    return c->be->outbox_each_pending(c, cb, arg);
}

store_status store_outbox_stats(store_conn *c, int64_t *pending, int64_t *oldest_ms)
{
    return c->be->outbox_stats(c, pending, oldest_ms);
}

store_status store_event_insert(store_conn *c, const char *account_sid, const char *call_sid,
                                int64_t ts, json_t *request, const char *params, json_t *response)
{
    return c->be->event_insert(c, account_sid, call_sid, ts, request, params, response);
}

store_status store_event_list(store_conn *c, const char *account_sid, const char *call_sid,
                              int64_t after_id, int64_t offset, int limit, json_t *out_arr,
                              int64_t *last_id)
{
    return c->be->event_list(c, account_sid, call_sid, after_id, offset, limit, out_arr, last_id);
}

store_status store_notification_insert(store_conn *c, const store_notification *n)
{
    return c->be->notification_insert(c, n);
}

store_status store_notification_list(store_conn *c, const char *account_sid,
                                     const char *call_sid, int64_t before_id, int64_t offset,
                                     int limit, json_t *out_arr, int64_t *last_id)
{
    return c->be->notification_list(c, account_sid, call_sid, before_id, offset, limit,
                                    out_arr, last_id);
}

store_status store_notification_get(store_conn *c, const char *account_sid, const char *sid,
                                    json_t **out)
{
    return c->be->notification_get(c, account_sid, sid, out);
}

/* ---- account keys ---- */

store_status store_account_key_bind(store_conn *c, const char *sid, const char *key,
                                    int64_t now, bool *same)
{
    return c->be->account_key_bind(c, sid, key, now, same);
}

store_status store_account_key_each(store_conn *c, int max,
        bool (*cb)(const char *sid, const char *key, int64_t created, void *arg), void *arg)
{
    return c->be->account_key_each(c, max, cb, arg);
}

/* ---- recordings (recstore.h) ---- */

void rec_row_fini(rec_row *r)
{
    if (!r) return;
    free(r->callback_url);
    r->callback_url = NULL;
}

bool rec_is_window(const rec_row *r)
{
    return strcmp(r->source, "OutboundAPI") != 0;
}

void rec_rows_free(rec_row *rows, int n)
{
    for (int i = 0; rows && i < n; i++) rec_row_fini(&rows[i]);
    free(rows);
}

store_status rec_db_insert(store_conn *c, rec_row *r) { return c->be->rec_insert(c, r); }

store_status rec_db_get(store_conn *c, const char *account_sid, const char *sid, rec_row *out)
{
    return c->be->rec_get(c, account_sid, sid, out);
}

store_status rec_db_get_id(store_conn *c, int64_t id, rec_row *out)
{
    return c->be->rec_get_id(c, id, out);
}

store_status rec_db_update(store_conn *c, const rec_row *r) { return c->be->rec_update(c, r); }

store_status rec_db_set_deleted(store_conn *c, const char *sid, int64_t now)
{
    return c->be->rec_set_deleted(c, sid, now);
}

store_status rec_db_list(store_conn *c, const rec_filter *f, int64_t before_id, int64_t offset,
                         int limit, rec_row *out, int *n_out)
{
    return c->be->rec_list(c, f, before_id, offset, limit, out, n_out);
}

store_status rec_db_for_call(store_conn *c, const char *call_sid, rec_row **out, int *n_out)
{
    return c->be->rec_for_call(c, call_sid, out, n_out);
}

store_status rec_db_pending_calls(store_conn *c, char (*out)[SID_SIZE], int max, int *n_out)
{
    return c->be->rec_pending_calls(c, out, max, n_out);
}
