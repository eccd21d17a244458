/* echo_server — a local HTTP server for the loop's transfer tests
 * (tests/unit/net/test_loop_http.c, test_loop_keepalive.c): libmicrohttpd on
 * 127.0.0.1, an ephemeral port, answering every request 200 "echo:<path>",
 * except /missing (404) and /close (200, then it closes the connection).
 *
 * Part of the support library (Makefile: UNIT_SUPPORT). Threads: the server
 * answers on its own internal polling thread; start and MHD_stop_daemon are
 * the test thread's. The test owns the daemon and stops it. Include after
 * <cmocka.h>. */
#ifndef TWIGATE_TEST_ECHO_SERVER_H
#define TWIGATE_TEST_ECHO_SERVER_H

#include <stddef.h>

typedef struct ut_echo_server {
    struct MHD_Daemon *d;      /* stop with MHD_stop_daemon */
    int                port;
} ut_echo_server;

/* Starts s; connections stay open while idle. Fails the test if it cannot. */
void ut_echo_start(ut_echo_server *s);
/* idle_s: seconds after which the server closes an idle connection (0: never). */
void ut_echo_start_idle(ut_echo_server *s, unsigned idle_s);

/* A CURLOPT_WRITEFUNCTION that drops the body. */
size_t ut_discard_cb(char *p, size_t sz, size_t n, void *ud);

#endif
