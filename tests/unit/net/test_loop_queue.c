/* Unit tests for loop's message queue: order across two producer threads,
 * the queue cap, and that stop still delivers what was queued. Timers are
 * test_loop_timers.c's, HTTP transfers test_loop_http.c's and
 * test_loop_keepalive.c's. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "net/loop.h"
#include "../support/support.h"

#define PER_PRODUCER 20000

typedef struct order_state {
    pthread_mutex_t post_mu;   /* makes (assign global seq, post) atomic */
    long            next_seq;
    long            last_seen;
    long            received;
    long            last_by_producer[2];
    bool            out_of_order;
    bool            wrong_thread;
    ut_waiter       done;
    loop           *l;
} order_state;

typedef struct order_msg {
    long seq;
    int  producer;
    long pseq;
} order_msg;

static void on_order_msg(loop *l, void *m)
{
    order_state *st = loop_ctx(l);
    order_msg *om = m;
    char name[16] = "";
    pthread_getname_np(pthread_self(), name, sizeof name);
    if (strcmp(name, "test-loop") != 0)
        st->wrong_thread = true;
    if (om->seq <= st->last_seen || om->pseq <= st->last_by_producer[om->producer])
        st->out_of_order = true;
    st->last_seen = om->seq;
    st->last_by_producer[om->producer] = om->pseq;
    free(om);
    if (++st->received == 2 * PER_PRODUCER)
        ut_waiter_add(&st->done, 1);
}

typedef struct producer_arg {
    order_state *st;
    int          id;
} producer_arg;

static void *producer(void *a)
{
    producer_arg *pa = a;
    for (long i = 0; i < PER_PRODUCER; i++) {
        order_msg *om = malloc(sizeof *om);
        om->producer = pa->id;
        om->pseq = i;
        pthread_mutex_lock(&pa->st->post_mu);
        om->seq = pa->st->next_seq++;
        while (!loop_post(pa->st->l, om)) {   /* full: back off and retry */
            pthread_mutex_unlock(&pa->st->post_mu);
            usleep(100);
            pthread_mutex_lock(&pa->st->post_mu);
        }
        pthread_mutex_unlock(&pa->st->post_mu);
    }
    return NULL;
}

static void test_message_order_two_producers(void **state)
{
    (void)state;
    order_state st = {.last_seen = -1, .last_by_producer = {-1, -1}};
    pthread_mutex_init(&st.post_mu, NULL);
    ut_waiter_init(&st.done);
    st.l = loop_create("test-loop", on_order_msg, &st);
    assert_non_null(st.l);
    assert_int_equal(loop_start(st.l), 0);

    pthread_t t[2];
    producer_arg pa[2] = {{&st, 0}, {&st, 1}};
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, producer, &pa[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);

    assert_true(ut_waiter_wait(&st.done, 1, 10000));
    assert_int_equal(st.received, 2 * PER_PRODUCER);
    assert_false(st.out_of_order);
    assert_false(st.wrong_thread);
    loop_stop(st.l);
    loop_destroy(st.l);
    ut_waiter_fini(&st.done);
    pthread_mutex_destroy(&st.post_mu);
}

static void count_msg(loop *l, void *m)
{
    long *n = loop_ctx(l);
    (*n)++;
    free(m);
}

static void test_queue_cap_and_stop_drains(void **state)
{
    (void)state;
    long delivered = 0;
    loop *l = loop_create("cap", count_msg, &delivered);
    assert_non_null(l);
    /* Not started: nothing drains, so the cap is hit exactly. */
    for (long i = 0; i < LOOP_MAX_QUEUE; i++)
        assert_true(loop_post(l, malloc(1)));
    void *extra = malloc(1);
    assert_false(loop_post(l, extra));
    free(extra);
    /* stop on a never-started loop still delivers what was queued */
    loop_stop(l);
    assert_int_equal(delivered, LOOP_MAX_QUEUE);
    extra = malloc(1);
    assert_false(loop_post(l, extra));   /* stopping: refused, caller keeps it */
    free(extra);
    loop_destroy(l);
}

static void slow_count_msg(loop *l, void *m)
{
    long *n = loop_ctx(l);
    (*n)++;
    free(m);
    usleep(20);
}

static void test_stop_delivers_queued_messages(void **state)
{
    (void)state;
    long delivered = 0;
    loop *l = loop_create("drain", slow_count_msg, &delivered);
    assert_non_null(l);
    assert_int_equal(loop_start(l), 0);
    for (int i = 0; i < 5000; i++)
        assert_true(loop_post(l, malloc(1)));
    loop_stop(l);
    assert_int_equal(delivered, 5000);
    loop_stop(l);   /* idempotent */
    loop_destroy(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_order_two_producers),
        cmocka_unit_test(test_queue_cap_and_stop_drains),
        cmocka_unit_test(test_stop_delivers_queued_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
