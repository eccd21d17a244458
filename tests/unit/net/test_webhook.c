/* Unit tests for webhook's retry policy against a real local HTTP server:
 * the default policy (rp=ct, rc=1) retries no HTTP answer; rp=5xx and
 * rp=4xx retry their class only, rc attempts more at most and clamped to
 * Twilio's 5; a read timeout (rt) is retried under rp=rt with error 11205;
 * a refused connection is retried by the default policy (11205);
 * every attempt of one delivery carries the same idempotency token and a
 * signature, and the fragment is neither sent nor reported. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/loop.h"
#include "net/netpolicy.h"
#include "net/webhook.h"
#include "../support/support.h"

/* Requests the server keeps a record of; a test makes at most 6. */
#define MAX_SEEN 16
#define WAIT_MS  20000

/* ---- the customer's server ---- */

typedef struct server {
    struct MHD_Daemon *d;
    int                port;
    pthread_mutex_t    mu;
    pthread_cond_t     cv;
    int                status;      /* the answer; 0 = hold the request until released */
    bool               released;
    int                n;
    char               path[MAX_SEEN][128];
    char               idem[MAX_SEEN][64];
    bool               signed_[MAX_SEEN];
} server;

/* The answer, once the whole request is in: status, or hold until released. */
static enum MHD_Result answer(server *s, struct MHD_Connection *conn)
{
    pthread_mutex_lock(&s->mu);
    int status = s->status;
    while (status == 0 && !s->released)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    if (status == 0)
        return MHD_NO;   /* released at teardown: drop the connection */
    struct MHD_Response *r = MHD_create_response_from_buffer(2, (void *)"ok", MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Counted on its headers, so a held request is seen at once. */
static void record(server *s, struct MHD_Connection *conn, const char *url)
{
    const char *idem = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "I-Twilio-Idempotency-Token");
    const char *sig = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Twilio-Signature");
    pthread_mutex_lock(&s->mu);
    if (s->n < MAX_SEEN) {
        snprintf(s->path[s->n], sizeof s->path[0], "%s", url);
        snprintf(s->idem[s->n], sizeof s->idem[0], "%s", idem ? idem : "");
        s->signed_[s->n] = sig != NULL && *sig != '\0';
    }
    s->n++;
    pthread_mutex_unlock(&s->mu);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls)
{
    (void)method;
    (void)version;
    (void)upload;
    server *s = cls;
    if (*con_cls == NULL) {
        *con_cls = s;
        record(s, conn, url);
        return MHD_YES;
    }
    if (*upload_size > 0) {
        *upload_size = 0;   /* the form body: not what these tests look at */
        return MHD_YES;
    }
    return answer(s, conn);
}

/* ---- fixture: a loop, a policy that allows loopback, the server ---- */

typedef struct fixture {
    server          srv;
    loop           *l;
    netpolicy      *policy;
    ut_waiter       done;
    char            url[256];
    webhook_result  res;
    char            res_url[2048];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    pthread_mutex_init(&f->srv.mu, NULL);
    pthread_cond_init(&f->srv.cv, NULL);
    f->srv.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION,
                                0, NULL, NULL, on_request, &f->srv,
                                MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, MHD_OPTION_END);
    assert_non_null(f->srv.d);
    f->srv.port = MHD_get_daemon_info(f->srv.d, MHD_DAEMON_INFO_BIND_PORT)->port;
    f->l = loop_create("webhook", ut_on_run_msg, NULL);
    assert_non_null(f->l);
    assert_int_equal(loop_start(f->l), 0);
    f->policy = netpolicy_create("127.0.0.0/8", "", "", NULL, 0, NULL, 1);
    assert_non_null(f->policy);
    ut_waiter_init(&f->done);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    pthread_mutex_lock(&f->srv.mu);
    f->srv.released = true;
    pthread_cond_broadcast(&f->srv.cv);
    pthread_mutex_unlock(&f->srv.mu);
    loop_destroy(f->l);
    MHD_stop_daemon(f->srv.d);
    netpolicy_unref(f->policy);
    ut_waiter_fini(&f->done);
    pthread_mutex_destroy(&f->srv.mu);
    pthread_cond_destroy(&f->srv.cv);
    free(f);
    return 0;
}

static void on_result(loop *l, void *arg, const webhook_result *res)
{
    (void)l;
    fixture *f = arg;
    f->res = *res;
    memset(&f->res.body, 0, sizeof f->res.body);   /* the body is freed after us */
    snprintf(f->res_url, sizeof f->res_url, "%s", res->url);
    ut_waiter_add(&f->done, 1);
}

static void send_on_loop(loop *l, void *arg)
{
    fixture *f = arg;
    webhook_req req = {
        .url = f->url, .method = "POST", .auth_token = "tok", .max_response = 4096,
        .policy = f->policy,
    };
    assert_int_equal(webhook_send(l, &req, on_result, f), 0);
}

/* One delivery to /hook<fragment> while the server answers status. */
static void deliver(fixture *f, int status, const char *fragment)
{
    pthread_mutex_lock(&f->srv.mu);
    f->srv.status = status;
    pthread_mutex_unlock(&f->srv.mu);
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%d/hook%s", f->srv.port, fragment);
    ut_run_on_loop(f->l, send_on_loop, f);
    assert_true(ut_waiter_wait(&f->done, 1, WAIT_MS));
}

static int seen(fixture *f)
{
    pthread_mutex_lock(&f->srv.mu);
    int n = f->srv.n;
    pthread_mutex_unlock(&f->srv.mu);
    return n;
}

/* ---- tests ---- */

static void test_success_signed_once(void **state)
{
    fixture *f = *state;
    deliver(f, 200, "");
    assert_int_equal(f->res.error_code, 0);
    assert_int_equal(f->res.http_status, 200);
    assert_int_equal(f->res.attempts, 1);
    assert_int_equal(seen(f), 1);
    assert_true(f->srv.signed_[0]);
    assert_string_not_equal(f->srv.idem[0], "");
}

static void test_default_policy_does_not_retry_http_errors(void **state)
{
    fixture *f = *state;
    deliver(f, 500, "");
    assert_int_equal(f->res.error_code, 11200);
    assert_int_equal(f->res.http_status, 500);
    assert_int_equal(f->res.attempts, 1);
    assert_int_equal(seen(f), 1);
}

static void test_rp_5xx_retries_rc_times_same_token(void **state)
{
    fixture *f = *state;
    deliver(f, 503, "#rc=2&rp=5xx");
    assert_int_equal(f->res.error_code, 11200);
    assert_int_equal(f->res.attempts, 3);
    assert_int_equal(seen(f), 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(f->srv.path[i], "/hook");   /* the fragment is never sent */
        assert_string_equal(f->srv.idem[i], f->srv.idem[0]);
        assert_true(f->srv.signed_[i]);
    }
    assert_string_equal(f->srv.idem[0], f->res.idem);
    assert_null(strchr(f->res_url, '#'));
}

static void test_rp_4xx_retries_4xx_not_5xx(void **state)
{
    fixture *f = *state;
    deliver(f, 404, "#rc=1&rp=4xx");
    assert_int_equal(f->res.attempts, 2);
    assert_int_equal(seen(f), 2);
    assert_int_equal(f->res.http_status, 404);
}

static void test_rp_4xx_leaves_5xx_alone(void **state)
{
    fixture *f = *state;
    deliver(f, 500, "#rc=3&rp=4xx");
    assert_int_equal(f->res.attempts, 1);
    assert_int_equal(seen(f), 1);
}

static void test_rc_clamped_to_five(void **state)
{
    fixture *f = *state;
    deliver(f, 500, "#rc=99&rp=5xx");
    assert_int_equal(f->res.attempts, 6);
    assert_int_equal(seen(f), 6);
}

static void test_read_timeout_retried_under_rp_rt(void **state)
{
    fixture *f = *state;
    deliver(f, 0, "#rt=1000&rc=1&rp=rt");
    assert_int_equal(f->res.error_code, 11205);
    assert_int_equal(f->res.http_status, 0);
    assert_int_equal(f->res.attempts, 2);
    assert_int_equal(seen(f), 2);
}

static void test_read_timeout_not_retried_by_default(void **state)
{
    fixture *f = *state;
    deliver(f, 0, "#rt=1000");
    assert_int_equal(f->res.error_code, 11205);
    assert_int_equal(f->res.attempts, 1);
    assert_int_equal(seen(f), 1);
}

/* A loopback port nobody listens on: bound and closed again, so a connect
 * there is refused at once (no timing involved). */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void test_connect_failure_retried_by_default(void **state)
{
    fixture *f = *state;
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%d/hook", closed_port());
    ut_run_on_loop(f->l, send_on_loop, f);
    assert_true(ut_waiter_wait(&f->done, 1, WAIT_MS));
    assert_int_equal(f->res.error_code, 11205);
    assert_int_equal(f->res.attempts, 2);   /* rp=ct, rc=1 */
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%d/hook#rc=0", closed_port());
    ut_run_on_loop(f->l, send_on_loop, f);
    assert_true(ut_waiter_wait(&f->done, 2, WAIT_MS));
    assert_int_equal(f->res.error_code, 11205);
    assert_int_equal(f->res.attempts, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_success_signed_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_policy_does_not_retry_http_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rp_5xx_retries_rc_times_same_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rp_4xx_retries_4xx_not_5xx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rp_4xx_leaves_5xx_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rc_clamped_to_five, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_timeout_retried_under_rp_rt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_timeout_not_retried_by_default, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_failure_retried_by_default, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
