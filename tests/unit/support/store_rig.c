/* store_rig — see store_rig.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "store_rig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "support.h"

static unsigned g_run;     /* this run's tag, in every SID */
static unsigned g_next;    /* per SID */

unsigned ut_store_run(void)
{
    if (!g_run) g_run = ((unsigned)time(NULL) ^ ((unsigned)getpid() << 16)) | 1u;
    return g_run;
}

const char *ut_store_url(void)
{
    const char *u = getenv("TWIGATE_TEST_DB_URL");
    return u && *u ? u : NULL;
}

store *ut_store_open(ut_store *f)
{
    char err[256] = "";
    store *s = store_open_url(ut_store_url(), f->path, err, sizeof err);
    if (!s) fail_msg("store_open_url: %s", err);
    return s;
}

int ut_store_setup(void **state)
{
    ut_store *f = calloc(1, sizeof *f);
    assert_non_null(f);
    if (!ut_store_url()) {
        ut_tmpdir(f->dir, sizeof f->dir, "test_store_conf");
        snprintf(f->path, sizeof f->path, "%s/t.db", f->dir);
    }
    f->s = ut_store_open(f);
    f->c = store_conn_acquire(f->s);
    assert_non_null(f->c);
    *state = f;
    return 0;
}

int ut_store_teardown(void **state)
{
    ut_store *f = *state;
    store_conn_release(f->c);
    store_close(f->s);
    if (f->dir[0]) ut_rmtree(f->dir);
    free(f);
    return 0;
}

void ut_store_sid(char *out, const char *prefix)
{
    snprintf(out, SID_SIZE, "%.2s%08x%024x", prefix, ut_store_run(), ++g_next);
}

void ut_store_make_call(store_call *c, const char *acct, const char *status, int64_t t)
{
    memset(c, 0, sizeof *c);
    ut_store_sid(c->sid, "CA");
    snprintf(c->account_sid, sizeof c->account_sid, "%s", acct);
    snprintf(c->to, sizeof c->to, "+1415555%04u", g_next % 10000);
    snprintf(c->from, sizeof c->from, "+14155550199");
    snprintf(c->status, sizeof c->status, "%s", status);
    snprintf(c->direction, sizeof c->direction, "outbound-api");
    snprintf(c->token, sizeof c->token, "tok%s", c->sid + 2);
    c->date_created = c->date_updated = t;
    c->duration = -1;
    c->params = json_pack("{s:s}", "Url", "http://example.test/twiml");
}

void ut_store_insert_call(store_conn *c, store_call *call)
{
    assert_int_equal(store_call_insert(c, call), STORE_OK);
    assert_true(call->id > 0);
}
