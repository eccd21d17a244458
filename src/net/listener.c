/* listener.c — the HTTP server's listening socket and its acceptor thread
 * ("http-accept"), private to httpd.c (listener_int.h is the map).
 *
 * Why twigate accepts itself instead of letting libmicrohttpd do it: the
 * drain on SIGTERM must refuse new connections at once, and MHD's way to
 * stop listening, MHD_quiesce_daemon, races with MHD's own epoll workers in
 * 0.9.75 (Debian bookworm): both remove the listening descriptor from a
 * worker's epoll set, neither under a lock, and the loser calls MHD_PANIC,
 * which aborts the process ("Failed to remove listen FD from epoll set",
 * seen once in about ten loaded `make check` runs, on SIGTERM right after a
 * reload). Here MHD runs with no listening socket of its own and each
 * accepted connection is handed over with MHD_add_connection, so stopping
 * is ours: shutdown() wakes the blocked accept, the thread ends, close()
 * makes the kernel refuse new connections. */
#include "listener_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/timefmt.h"

/* Out of descriptors (EMFILE, ENFILE) or kernel memory: the pending
 * connection stays in the backlog and accept is retried after this pause,
 * instead of spinning on an error that only a closing connection ends. */
#define LISTENER_RETRY_MS 20

struct listener {
    int          fd;
    int          port;
    pthread_t    thread;
    bool         running;
    atomic_bool  closing;
    listener_fn  fn;
    void        *arg;
    int64_t      last_warn_ms;   /* the acceptor thread's own */
};

static const char *open_failure(int e)
{
    if (e == EADDRINUSE) return "the port is already in use (another twigate, or another program)";
    if (e == EACCES) return "permission denied";
    return e ? strerror(e) : "the HTTP server could not start";
}

listener *listener_open(const struct sockaddr *sa, socklen_t len, char *err, size_t errlen)
{
    listener *l = calloc(1, sizeof *l);
    int one = 1, zero = 0, e = 0;
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l->fd < 0) {
        snprintf(err, errlen, "cannot create a socket: %s", strerror(errno));
        free(l);
        return NULL;
    }
    /* SO_REUSEADDR, as MHD set it: a restart binds while the old process's
     * connections sit in TIME_WAIT. Never SO_REUSEPORT: with it a second
     * twigate on the port would "listen" too and the kernel would split
     * requests between two databases. */
    (void)setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* "::" takes IPv4 clients too (as v4-mapped addresses), as
     * docs/configuration.md promises for all interfaces. */
    if (sa->sa_family == AF_INET6)
        (void)setsockopt(l->fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    if (bind(l->fd, sa, len) != 0 || listen(l->fd, SOMAXCONN) != 0) e = errno;
    struct sockaddr_storage got;
    socklen_t gl = sizeof got;
    if (!e && getsockname(l->fd, (struct sockaddr *)&got, &gl) != 0) e = errno;
    if (e) {
        snprintf(err, errlen, "%s", open_failure(e));
        close(l->fd);
        free(l);
        return NULL;
    }
    l->port = got.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&got)->sin6_port)
                                        : ntohs(((struct sockaddr_in *)&got)->sin_port);
    return l;
}

int listener_port(const listener *l) { return l->port; }

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* At most one line a second while descriptors stay exhausted. */
static void warn_exhausted(listener *l, int e)
{
    int64_t now = timefmt_mono_ms();
    if (l->last_warn_ms && now - l->last_warn_ms < 1000) return;
    l->last_warn_ms = now;
    log_warn("http", "accept: %s; new connections wait in the backlog (retry every %d ms)",
             strerror(e), LISTENER_RETRY_MS);
}

static void *accept_main(void *arg)
{
    listener *l = arg;
    for (;;) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof sa;
        int fd = accept4(l->fd, (struct sockaddr *)&sa, &len, SOCK_CLOEXEC);
        if (fd >= 0) {
            l->fn(l->arg, fd, (struct sockaddr *)&sa, len);
            continue;
        }
        int e = errno;
        if (atomic_load(&l->closing)) break;   /* shutdown() woke us: EINVAL */
        if (e == EINTR || e == ECONNABORTED || e == EAGAIN || e == EPROTO) continue;
        if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
            warn_exhausted(l, e);
            pause_ms(LISTENER_RETRY_MS);
            continue;
        }
        log_error("http", "accept failed: %s; the listener stops", strerror(e));
        break;
    }
    return NULL;
}

int listener_start(listener *l, listener_fn fn, void *arg)
{
    l->fn = fn;
    l->arg = arg;
    if (pthread_create(&l->thread, NULL, accept_main, l) != 0) return -1;
    (void)pthread_setname_np(l->thread, "http-accept");
    l->running = true;
    return 0;
}

void listener_close(listener *l)
{
    if (!l || l->fd < 0) return;
    atomic_store(&l->closing, true);
    /* On Linux, shutdown() of a listening socket makes a blocked accept()
     * return (EINVAL); the kernel then answers new connections with a reset
     * (refused), and close() releases the port. */
    (void)shutdown(l->fd, SHUT_RDWR);
    if (l->running) pthread_join(l->thread, NULL);
    l->running = false;
    close(l->fd);
    l->fd = -1;
}

void listener_free(listener *l)
{
    if (!l) return;
    listener_close(l);
    free(l);
}
