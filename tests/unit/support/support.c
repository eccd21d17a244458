/* support — see support.h. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "support.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int64_t ut_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the scheduling probe ---- */

static pthread_once_t  sched_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t sched_mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t         sched_max_late;

static void *sched_probe(void *arg)
{
    (void)arg;
    for (;;) {
        struct timespec d = {0, 2 * 1000000L};
        int64_t t0 = ut_now_ms();
        nanosleep(&d, NULL);
        int64_t late = ut_now_ms() - t0 - 2;
        pthread_mutex_lock(&sched_mu);
        if (late > sched_max_late) sched_max_late = late;
        pthread_mutex_unlock(&sched_mu);
    }
    return NULL;
}

static void sched_start(void)
{
    pthread_t th;
    if (pthread_create(&th, NULL, sched_probe, NULL) == 0) pthread_detach(th);
}

void ut_sched_reset(void)
{
    pthread_once(&sched_once, sched_start);
    pthread_mutex_lock(&sched_mu);
    sched_max_late = 0;
    pthread_mutex_unlock(&sched_mu);
}

int64_t ut_sched_slack_ms(void)
{
    pthread_once(&sched_once, sched_start);
    pthread_mutex_lock(&sched_mu);
    int64_t v = sched_max_late;
    pthread_mutex_unlock(&sched_mu);
    return v;
}

int ut_tmpfile_fd(const char *tag)
{
    char path[256];
    snprintf(path, sizeof path, "/tmp/%s-XXXXXX", tag);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    return fd;
}

void ut_tmpdir(char *out, size_t outlen, const char *tag)
{
    int n = snprintf(out, outlen, "/tmp/%s-XXXXXX", tag);
    assert_true(n > 0 && (size_t)n < outlen);
    assert_non_null(mkdtemp(out));
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT)
        fprintf(stderr, "could not remove %s\n", path);
    return 0;
}

void ut_rmtree(const char *dir)
{
    /* FTW_DEPTH: children before their directory; FTW_PHYS: never follow links. */
    nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

void ut_waiter_init(ut_waiter *w)
{
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->count = 0;
}

void ut_waiter_fini(ut_waiter *w)
{
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

void ut_waiter_add(ut_waiter *w, int n)
{
    pthread_mutex_lock(&w->mu);
    w->count += n;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

bool ut_waiter_wait(ut_waiter *w, int target, int timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    while (w->count < target) {
        if (pthread_cond_timedwait(&w->cv, &w->mu, &dl) != 0)
            break;
    }
    bool ok = w->count >= target;
    pthread_mutex_unlock(&w->mu);
    return ok;
}

typedef struct run_msg {
    void (*fn)(loop *l, void *arg);
    void *arg;
} run_msg;

void ut_on_run_msg(loop *l, void *msg)
{
    run_msg *c = msg;
    c->fn(l, c->arg);
    free(c);
}

void ut_run_on_loop(loop *l, void (*fn)(loop *, void *), void *arg)
{
    run_msg *c = malloc(sizeof *c);
    assert_non_null(c);
    c->fn = fn;
    c->arg = arg;
    assert_true(loop_post(l, c));
}

void ut_le16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

void ut_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
