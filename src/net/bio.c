/* bio.c — the background I/O thread (include/net/bio.h). */
#include "net/bio.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

typedef struct bio_job {
    bio_fn          run, cancel;
    void           *arg;
    struct bio_job *next;
} bio_job;

struct bio {
    pthread_t       thread;
    pthread_mutex_t mu;
    pthread_cond_t  bell;         /* rung on submit and on stop */
    bio_job        *head, *tail;
    size_t          queued;       /* in the list */
    size_t          running;      /* 0 or 1 */
    bool            stopping;
    bool            joined;
    char            name[16];
};

static _Thread_local bool on_bio;

bool bio_on_thread(void) { return on_bio; }

static void *bio_main(void *arg)
{
    bio *b = arg;
    on_bio = true;
    pthread_setname_np(pthread_self(), b->name);
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->head && !b->stopping) pthread_cond_wait(&b->bell, &b->mu);
        if (b->stopping) break;   /* bio_stop cancels what is left */
        bio_job *j = b->head;
        b->head = j->next;
        if (!b->head) b->tail = NULL;
        b->queued--;
        b->running = 1;
        pthread_mutex_unlock(&b->mu);
        j->run(j->arg);
        free(j);
        pthread_mutex_lock(&b->mu);
        b->running = 0;
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

bio *bio_create(const char *thread_name, char *err, size_t errlen)
{
    bio *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(b->name, sizeof b->name, "%s", thread_name);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->bell, NULL);
    int rc = pthread_create(&b->thread, NULL, bio_main, b);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start thread %s: %s", b->name, strerror(rc));
        pthread_cond_destroy(&b->bell);
        pthread_mutex_destroy(&b->mu);
        free(b);
        return NULL;
    }
    return b;
}

bool bio_submit(bio *b, bio_fn run, bio_fn cancel, void *arg)
{
    bio_job *j;
    bool ok;
    if (!b || !(j = malloc(sizeof *j))) return false;
    *j = (bio_job){.run = run, .cancel = cancel, .arg = arg};
    pthread_mutex_lock(&b->mu);
    ok = !b->stopping && b->queued < BIO_MAX_JOBS;
    if (ok) {
        if (b->tail) b->tail->next = j;
        else b->head = j;
        b->tail = j;
        b->queued++;
        pthread_cond_signal(&b->bell);
    }
    pthread_mutex_unlock(&b->mu);
    if (!ok) free(j);
    return ok;
}

void bio_stop(bio *b)
{
    bio_job *left;
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    if (b->joined) {
        pthread_mutex_unlock(&b->mu);
        return;
    }
    b->stopping = true;
    pthread_cond_signal(&b->bell);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    pthread_mutex_lock(&b->mu);
    b->joined = true;
    left = b->head;
    b->head = b->tail = NULL;
    b->queued = 0;
    pthread_mutex_unlock(&b->mu);
    if (left) log_info("bio", "%s stopping: cancelling queued jobs", b->name);
    while (left) {
        bio_job *j = left;
        left = j->next;
        if (j->cancel) j->cancel(j->arg);
        free(j);
    }
}

void bio_destroy(bio *b)
{
    if (!b) return;
    bio_stop(b);
    pthread_cond_destroy(&b->bell);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

size_t bio_pending(bio *b)
{
    size_t n;
    pthread_mutex_lock(&b->mu);
    n = b->queued + b->running;
    pthread_mutex_unlock(&b->mu);
    return n;
}

bool bio_stopping(bio *b)
{
    bool s;
    pthread_mutex_lock(&b->mu);
    s = b->stopping;
    pthread_mutex_unlock(&b->mu);
    return s;
}
