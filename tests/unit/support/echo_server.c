/* echo_server — see echo_server.h. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "echo_server.h"

#include <microhttpd.h>
#include <stdio.h>
#include <string.h>

static enum MHD_Result serve(void *cls, struct MHD_Connection *c, const char *url,
                             const char *method, const char *version,
                             const char *upload, size_t *upload_size, void **con_cls)
{
    (void)cls; (void)method; (void)version; (void)upload;
    if (*con_cls == NULL) {   /* first call: headers only */
        *con_cls = (void *)1;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0;
        return MHD_YES;
    }
    char body[256];
    int n = snprintf(body, sizeof body, "echo:%s", url);
    struct MHD_Response *r = MHD_create_response_from_buffer((size_t)n, body,
                                                             MHD_RESPMEM_MUST_COPY);
    unsigned code = strcmp(url, "/missing") == 0 ? 404 : 200;
    if (strcmp(url, "/close") == 0)   /* MHD then closes after the answer */
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

void ut_echo_start_idle(ut_echo_server *s, unsigned idle_s)
{
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL,
                            serve, NULL,
                            MHD_OPTION_SOCK_ADDR, NULL,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)2000,
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
                            MHD_OPTION_CONNECTION_TIMEOUT, idle_s,
                            MHD_OPTION_END);
    assert_non_null(s->d);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di->port;
}

void ut_echo_start(ut_echo_server *s)
{
    ut_echo_start_idle(s, 0);
}

size_t ut_discard_cb(char *p, size_t sz, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return sz * n;
}
