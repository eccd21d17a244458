/* test_bio — the background I/O thread: order, thread, backpressure and a
 * clean stop that cancels what never ran. No sleeps decide an outcome: the
 * test waits on conditions the jobs signal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <cmocka.h>

#include "net/bio.h"

typedef struct rec {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             order[16];
    int             n_ran, n_cancelled;
    bool            on_bio[16];
    bool            started, release;   /* the blocking job */
} rec;

typedef struct job { rec *r; int id; bool block; } job;

static void run(void *arg)
{
    job *j = arg;
    rec *r = j->r;
    pthread_mutex_lock(&r->mu);
    if (j->block) {
        r->started = true;
        pthread_cond_broadcast(&r->cv);
        while (!r->release) pthread_cond_wait(&r->cv, &r->mu);
    }
    r->on_bio[r->n_ran] = bio_on_thread();
    r->order[r->n_ran++] = j->id;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void cancel(void *arg)
{
    job *j = arg;
    pthread_mutex_lock(&j->r->mu);
    j->r->n_cancelled++;
    pthread_mutex_unlock(&j->r->mu);
}

static void rec_init(rec *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

static void test_runs_in_order_on_its_thread(void **state)
{
    (void)state;
    char err[128];
    rec r;
    job jobs[5];
    rec_init(&r);
    bio *b = bio_create("bio-test", err, sizeof err);
    assert_non_null(b);
    assert_false(bio_on_thread());
    for (int i = 0; i < 5; i++) {
        jobs[i] = (job){.r = &r, .id = i};
        assert_true(bio_submit(b, run, cancel, &jobs[i]));
    }
    pthread_mutex_lock(&r.mu);
    while (r.n_ran < 5) pthread_cond_wait(&r.cv, &r.mu);
    pthread_mutex_unlock(&r.mu);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(r.order[i], i);
        assert_true(r.on_bio[i]);
    }
    bio_destroy(b);
    assert_int_equal(r.n_cancelled, 0);
}

static void *stopper(void *arg)
{
    bio_stop(arg);
    return NULL;
}

/* Stop while a job runs: it finishes, the queued ones are cancelled (each
 * exactly once, none run), and a submit once the stop has begun is refused. */
static void test_stop_finishes_the_running_job_and_cancels_the_rest(void **state)
{
    (void)state;
    char err[128];
    rec r;
    job a, q[3], late;
    pthread_t t;
    rec_init(&r);
    bio *b = bio_create("bio-test", err, sizeof err);
    assert_non_null(b);
    a = (job){.r = &r, .id = 100, .block = true};
    assert_true(bio_submit(b, run, cancel, &a));
    pthread_mutex_lock(&r.mu);
    while (!r.started) pthread_cond_wait(&r.cv, &r.mu);
    pthread_mutex_unlock(&r.mu);
    for (int i = 0; i < 3; i++) {
        q[i] = (job){.r = &r, .id = i};
        assert_true(bio_submit(b, run, cancel, &q[i]));
    }
    assert_int_equal(bio_pending(b), 4);
    assert_int_equal(pthread_create(&t, NULL, stopper, b), 0);
    while (!bio_stopping(b)) sched_yield();
    late = (job){.r = &r, .id = 200};
    assert_false(bio_submit(b, run, cancel, &late));   /* refused: the caller keeps it */
    pthread_mutex_lock(&r.mu);
    r.release = true;
    pthread_cond_broadcast(&r.cv);
    pthread_mutex_unlock(&r.mu);
    pthread_join(t, NULL);
    assert_int_equal(r.n_ran, 1);
    assert_int_equal(r.order[0], 100);
    assert_int_equal(r.n_cancelled, 3);
    assert_false(bio_submit(b, run, cancel, &late));
    bio_stop(b);   /* idempotent */
    bio_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs_in_order_on_its_thread),
        cmocka_unit_test(test_stop_finishes_the_running_job_and_cancels_the_rest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
