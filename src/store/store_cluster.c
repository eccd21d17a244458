/* store_cluster.c — store/cluster.h's dispatch: each operation goes to the
 * backend's entry; a backend without one (SQLite: one process owns the
 * file) answers STORE_OK with nothing done or found. The instance's name is
 * kept in the common part of the store (store_backend.h), where every
 * backend reads it. */
#include "store_backend.h"

#include <string.h>

bool store_shared(const store *s)
{
    return s->be->instance_join != NULL;
}

const char *store_instance(const store *s)
{
    return s->instance;
}

store_status store_instance_join(store *s, const char *id, const char *version, int lease_ms,
                                 int wait_ms, char *err, size_t errlen)
{
    if (!s->be->instance_join) return STORE_OK;
    if (!id || !*id || strlen(id) >= sizeof s->instance) {
        snprintf(err, errlen, "instance name empty or longer than %d bytes",
                 STORE_INSTANCE_LEN - 1);
        return STORE_ERROR;
    }
    store_status st = s->be->instance_join(s, id, version, lease_ms, wait_ms, err, errlen);
    if (st == STORE_OK) snprintf(s->instance, sizeof s->instance, "%s", id);
    return st;
}

store_status store_instance_renew(store_conn *c, int lease_ms)
{
    return c->be->instance_renew && c->owner->instance[0] ? c->be->instance_renew(c, lease_ms)
                                                          : STORE_OK;
}

store_status store_instance_leave(store_conn *c)
{
    return c->be->instance_leave && c->owner->instance[0] ? c->be->instance_leave(c) : STORE_OK;
}

store_status store_adopt(store_conn *c, int max, const store_adopt_cbs *cbs, void *arg,
                         int *n, int *fenced)
{
    *n = *fenced = 0;
    if (!c->be->adopt || !c->owner->instance[0]) return STORE_OK;
    return c->be->adopt(c, max, cbs, arg, n, fenced);
}

store_status store_inbox_insert(store_conn *c, const char *call_sid, const char *kind,
                                const char *body, size_t len)
{
    return c->be->inbox_insert ? c->be->inbox_insert(c, call_sid, kind, body, len) : STORE_OK;
}

store_status store_inbox_each(store_conn *c, int max,
        void (*cb)(int64_t id, const char *call_sid, const char *kind, const char *body,
                   void *arg), void *arg)
{
    return c->be->inbox_each && c->owner->instance[0] ? c->be->inbox_each(c, max, cb, arg)
                                                      : STORE_OK;
}

store_status store_inbox_done(store_conn *c, int64_t id)
{
    return c->be->inbox_done ? c->be->inbox_done(c, id) : STORE_OK;
}

store_status store_budget_take(store_conn *c, const char *label, int limit, int64_t hold_ms,
                               int reserve_per_live, int live, int pending_new, int64_t *wait_ms)
{
    *wait_ms = 0;
    if (!c->be->budget_take || !c->owner->instance[0]) return STORE_OK;
    return c->be->budget_take(c, label, limit, hold_ms, reserve_per_live, live, pending_new, wait_ms);
}

store_status store_budget_live(store_conn *c, const char *label, int live)
{
    return c->be->budget_live && c->owner->instance[0] ? c->be->budget_live(c, label, live)
                                                       : STORE_OK;
}

/* A listener remembers its backend, so that the calls below need no store. */
struct store_listener_head { const store_backend *be; };

store_listener *store_listener_open(store *s)
{
    if (!s->be->listener_open || !s->instance[0]) return NULL;
    return s->be->listener_open(s);
}

int store_listener_fd(const store_listener *l)
{
    return ((const struct store_listener_head *)l)->be->listener_fd(l);
}

int store_listener_drain(store_listener *l)
{
    return ((struct store_listener_head *)l)->be->listener_drain(l);
}

void store_listener_close(store_listener *l)
{
    if (l) ((struct store_listener_head *)l)->be->listener_close(l);
}

store_status store_call_live_kaphila(store_conn *c, const char *kaphila_id)
{
    return c->be->call_live_kaphila(c, kaphila_id);
}
