/* Unit tests for loop's timers: order and accuracy, cancel and re-arm from a
 * callback, 10,000 of them with half cancelled, not starved by a flood of
 * messages or by slow timers (nor starving messages), the lateness observer,
 * and destroy dropping pending ones. Timing bounds allow UT_ON_TIME_MS
 * (support.h): UT_TOLERANCE_MS plus the scheduling delay a probe thread saw
 * over the same test, so a loaded machine cannot fail them and a quiet one
 * keeps them tight. */
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

#define N_ORDER_TIMERS 6

typedef struct tstate {
    ut_waiter   w;
    int64_t  start;
    int      fired[32];
    int64_t  fired_at[32];
    int      n_fired;
    loop_timer *timers[32];
    int      ids[32];
} tstate;

static const int order_delays[N_ORDER_TIMERS] = {120, 10, 60, 0, 200, 35};

static void rec_fire(loop *l, void *arg)
{
    (void)l;
    int *id = arg;
    tstate *ts = (tstate *)((char *)(id - *id) - offsetof(tstate, ids));
    ts->fired_at[ts->n_fired] = ut_now_ms() - ts->start;
    ts->fired[ts->n_fired++] = *id;
    ut_waiter_add(&ts->w, 1);
}

static void arm_order(loop *l, void *arg)
{
    tstate *ts = arg;
    ts->start = ut_now_ms();
    for (int i = 0; i < N_ORDER_TIMERS; i++) {
        ts->ids[i] = i;
        ts->timers[i] = loop_timer_add(l, order_delays[i], rec_fire, &ts->ids[i]);
        assert_non_null(ts->timers[i]);
    }
}

static void test_timers_order_and_accuracy(void **state)
{
    (void)state;
    ut_sched_reset();
    tstate ts = {0};
    ut_waiter_init(&ts.w);
    loop *l = loop_create("timers", ut_on_run_msg, NULL);
    assert_int_equal(loop_start(l), 0);
    ut_run_on_loop(l, arm_order, &ts);
    assert_true(ut_waiter_wait(&ts.w, N_ORDER_TIMERS, 3000));
    static const int expect[N_ORDER_TIMERS] = {3, 1, 5, 2, 0, 4};
    for (int i = 0; i < N_ORDER_TIMERS; i++) {
        assert_int_equal(ts.fired[i], expect[i]);
        int64_t want = order_delays[ts.fired[i]];
        assert_true(ts.fired_at[i] >= want);
        assert_true(ts.fired_at[i] <= want + UT_ON_TIME_MS);
    }
    loop_stop(l);
    loop_destroy(l);
    ut_waiter_fini(&ts.w);
}

/* A flood of slow messages (300 of 1 ms) must not hold a due timer back
 * until the queue is empty: one iteration's messages are time-sliced, and
 * timers run between slices (a Pause ends within 50 ms however busy the
 * engine is). */
#define N_SLOW 300

typedef struct slice_state {
    ut_waiter  w;
    int64_t start, fired_at, slow_done_at;
    int     slow_seen;
} slice_state;

static void slice_fire(loop *l, void *arg)
{
    (void)l;
    slice_state *st = arg;
    st->fired_at = ut_now_ms() - st->start;
    ut_waiter_add(&st->w, 1);
}

static void slice_arm(loop *l, void *arg)
{
    slice_state *st = arg;
    st->start = ut_now_ms();
    assert_non_null(loop_timer_add(l, 10, slice_fire, st));
}

static void slice_slow(loop *l, void *arg)
{
    (void)l;
    slice_state *st = arg;
    struct timespec ms = {0, 1000 * 1000};
    nanosleep(&ms, NULL);
    if (++st->slow_seen == N_SLOW) {
        st->slow_done_at = ut_now_ms() - st->start;
        ut_waiter_add(&st->w, 1);
    }
}

static void test_timer_not_starved_by_messages(void **state)
{
    (void)state;
    ut_sched_reset();
    slice_state st = {0};
    ut_waiter_init(&st.w);
    loop *l = loop_create("slices", ut_on_run_msg, NULL);
    ut_run_on_loop(l, slice_arm, &st);
    for (int i = 0; i < N_SLOW; i++)
        ut_run_on_loop(l, slice_slow, &st);
    assert_int_equal(loop_start(l), 0);
    assert_true(ut_waiter_wait(&st.w, 2, 5000));
    /* the messages alone take >= 300 ms; the timer is due at 10 ms */
    assert_true(st.slow_done_at >= N_SLOW);
    assert_true(st.fired_at >= 10);
    /* the property itself: the timer ran while messages were still queued */
    assert_true(st.fired_at < st.slow_done_at);
    assert_true(st.fired_at <= 10 + 30 + UT_ON_TIME_MS);
    loop_stop(l);
    loop_destroy(l);
    ut_waiter_fini(&st.w);
}

/* ...and a crowd of slow timers due at once (100 of 1 ms at 10 ms) does not
 * hold back a message posted meanwhile: timers are time-sliced too. */
#define N_SLOW_TIMERS 100

static void slow_timer(loop *l, void *arg)
{
    (void)l;
    slice_state *st = arg;
    struct timespec ms = {0, 1000 * 1000};
    nanosleep(&ms, NULL);
    if (++st->slow_seen == N_SLOW_TIMERS) {
        st->slow_done_at = ut_now_ms() - st->start;
        ut_waiter_add(&st->w, 1);
    }
}

static void arm_slow_timers(loop *l, void *arg)
{
    slice_state *st = arg;
    st->start = ut_now_ms();
    for (int i = 0; i < N_SLOW_TIMERS; i++)
        assert_non_null(loop_timer_add(l, 10, slow_timer, st));
}

/* The timer observer sees each timer's lateness as it fires: ~0 on an idle
 * loop, and the time a blocking callback held the loop back otherwise. */
typedef struct late_state {
    ut_waiter  w;
    int64_t late[2];
    int     n_late, n_fired;
} late_state;

static void late_observe(loop *l, int64_t late_ms, void *arg)
{
    (void)l;
    late_state *st = arg;
    if (st->n_late < 2) st->late[st->n_late] = late_ms;
    st->n_late++;
}

static void late_fire(loop *l, void *arg)
{
    (void)l;
    late_state *st = arg;
    st->n_fired++;
    ut_waiter_add(&st->w, 1);
}

static void late_arm_idle(loop *l, void *arg)
{
    assert_non_null(loop_timer_add(l, 20, late_fire, arg));
}

static void late_arm_blocked(loop *l, void *arg)
{
    assert_non_null(loop_timer_add(l, 10, late_fire, arg));
    struct timespec t = {0, 120 * 1000 * 1000};   /* the loop is stuck for 120 ms */
    nanosleep(&t, NULL);
}

static void test_timer_observer_reports_lateness(void **state)
{
    (void)state;
    ut_sched_reset();
    late_state st = {0};
    ut_waiter_init(&st.w);
    loop *l = loop_create("late", ut_on_run_msg, NULL);
    loop_set_timer_observer(l, late_observe, &st);
    assert_int_equal(loop_start(l), 0);
    ut_run_on_loop(l, late_arm_idle, &st);
    assert_true(ut_waiter_wait(&st.w, 1, 3000));
    ut_run_on_loop(l, late_arm_blocked, &st);
    assert_true(ut_waiter_wait(&st.w, 2, 3000));
    loop_stop(l);
    assert_int_equal(st.n_late, 2);
    assert_int_equal(st.n_fired, 2);
    assert_in_range(st.late[0], 0, UT_ON_TIME_MS);
    assert_in_range(st.late[1], 110 - 1, 110 + UT_ON_TIME_MS);
    loop_destroy(l);
    ut_waiter_fini(&st.w);
}

static void test_message_not_starved_by_timers(void **state)
{
    (void)state;
    ut_sched_reset();
    slice_state st = {0};
    ut_waiter_init(&st.w);
    loop *l = loop_create("slices", ut_on_run_msg, NULL);
    assert_int_equal(loop_start(l), 0);
    ut_run_on_loop(l, arm_slow_timers, &st);
    struct timespec d = {0, 20 * 1000 * 1000};
    nanosleep(&d, NULL);            /* the timers are firing now */
    int64_t posted = ut_now_ms();
    ut_run_on_loop(l, slice_fire, &st);
    assert_true(ut_waiter_wait(&st.w, 2, 5000));
    assert_true(st.slow_done_at >= 10 + N_SLOW_TIMERS);
    /* fired_at counts from the arming; the message waited at most a slice
     * plus one timer */
    assert_true(st.fired_at + st.start - posted <= 10 + UT_ON_TIME_MS);
    assert_true(st.fired_at < st.slow_done_at);
    loop_stop(l);
    loop_destroy(l);
    ut_waiter_fini(&st.w);
}

/* Timer 0 (20 ms) cancels timer 2 (60 ms) from inside its callback and adds a
 * new timer 3 (+30 ms); timer 1 (40 ms) is cancelled from a message. */
static void cancel_from_cb(loop *l, void *arg)
{
    int *id = arg;
    tstate *ts = (tstate *)((char *)(id - *id) - offsetof(tstate, ids));
    rec_fire(l, arg);
    loop_timer_cancel(l, ts->timers[2]);
    loop_timer_cancel(l, NULL);   /* no-op */
    ts->ids[3] = 3;
    ts->timers[3] = loop_timer_add(l, 30, rec_fire, &ts->ids[3]);
    assert_non_null(ts->timers[3]);
}

static void arm_cancel(loop *l, void *arg)
{
    tstate *ts = arg;
    ts->start = ut_now_ms();
    for (int i = 0; i < 3; i++)
        ts->ids[i] = i;
    ts->timers[0] = loop_timer_add(l, 20, cancel_from_cb, &ts->ids[0]);
    ts->timers[1] = loop_timer_add(l, 40, rec_fire, &ts->ids[1]);
    ts->timers[2] = loop_timer_add(l, 60, rec_fire, &ts->ids[2]);
}

static void cancel_one(loop *l, void *arg)
{
    tstate *ts = arg;
    loop_timer_cancel(l, ts->timers[1]);
}

static void test_timer_cancel_and_add_from_callback(void **state)
{
    (void)state;
    ut_sched_reset();
    tstate ts = {0};
    ut_waiter_init(&ts.w);
    loop *l = loop_create("cancel", ut_on_run_msg, NULL);
    assert_int_equal(loop_start(l), 0);
    ut_run_on_loop(l, arm_cancel, &ts);
    ut_run_on_loop(l, cancel_one, &ts);
    assert_true(ut_waiter_wait(&ts.w, 2, 2000));
    usleep(150 * 1000);   /* long past timer 2's deadline */
    loop_stop(l);
    assert_int_equal(ts.n_fired, 2);
    assert_int_equal(ts.fired[0], 0);
    assert_int_equal(ts.fired[1], 3);
    assert_true(ts.fired_at[1] >= 50 && ts.fired_at[1] <= 50 + UT_ON_TIME_MS);
    loop_destroy(l);
    ut_waiter_fini(&ts.w);
}

/* A timer that cancels itself while firing must not corrupt anything. */
static void self_cancel(loop *l, void *arg)
{
    loop_timer **self = arg;
    loop_timer_cancel(l, *self);
    *self = NULL;
}

/* ---- 10,000 timers: random delays, half cancelled ---- */

#define MANY_TIMERS 10000

typedef struct many_state {
    ut_waiter   w;
    int64_t     start;
    loop_timer *t[MANY_TIMERS];
    int         delay[MANY_TIMERS];
    int         idx[MANY_TIMERS];
    int64_t     due_lo[MANY_TIMERS];   /* the loop's due lies in [lo, hi] */
    int64_t     due_hi[MANY_TIMERS];
    int64_t     last_lo;
    int         fired;
    int         fired_cancelled;
    bool        order_broken;
    bool        early;
    loop_timer *selfc;
} many_state;

static void many_fire(loop *l, void *arg)
{
    (void)l;
    int *ip = arg;
    many_state *ms = (many_state *)((char *)(ip - *ip) - offsetof(many_state, idx));
    int i = *ip;
    /* b may fire after a only if b's deadline can't be before a's */
    if (ms->due_hi[i] < ms->last_lo)
        ms->order_broken = true;
    if (ut_now_ms() < ms->due_lo[i])
        ms->early = true;
    if (i % 2 == 1)
        ms->fired_cancelled++;
    ms->last_lo = ms->due_lo[i];
    ms->t[i] = NULL;
    if (++ms->fired == MANY_TIMERS / 2)
        ut_waiter_add(&ms->w, 1);
}

static void arm_many(loop *l, void *arg)
{
    many_state *ms = arg;
    ms->start = ut_now_ms();
    srand(12345);
    for (int i = 0; i < MANY_TIMERS; i++) {
        ms->idx[i] = i;
        ms->delay[i] = rand() % 300;
        ms->due_lo[i] = ut_now_ms() + ms->delay[i];
        ms->t[i] = loop_timer_add(l, ms->delay[i], many_fire, &ms->idx[i]);
        ms->due_hi[i] = ut_now_ms() + ms->delay[i];
        assert_non_null(ms->t[i]);
    }
    for (int i = 1; i < MANY_TIMERS; i += 2) {
        loop_timer_cancel(l, ms->t[i]);
        ms->t[i] = NULL;
    }
    ms->selfc = loop_timer_add(l, 5, self_cancel, &ms->selfc);
}

static void test_many_timers(void **state)
{
    (void)state;
    ut_sched_reset();
    many_state *ms = calloc(1, sizeof *ms);
    ut_waiter_init(&ms->w);
    loop *l = loop_create("many", ut_on_run_msg, NULL);
    assert_int_equal(loop_start(l), 0);
    ut_run_on_loop(l, arm_many, ms);
    assert_true(ut_waiter_wait(&ms->w, 1, 5000));
    loop_stop(l);
    assert_int_equal(ms->fired, MANY_TIMERS / 2);
    assert_int_equal(ms->fired_cancelled, 0);
    assert_false(ms->order_broken);
    assert_false(ms->early);
    assert_null(ms->selfc);
    loop_destroy(l);
    ut_waiter_fini(&ms->w);
    free(ms);
}

/* Pending timers are dropped by destroy without firing. */
static void never(loop *l, void *arg)
{
    (void)l;
    *(bool *)arg = true;
}

static void arm_never(loop *l, void *arg)
{
    for (int i = 0; i < 100; i++)
        assert_non_null(loop_timer_add(l, 60000 + i, never, arg));
}

static void test_destroy_drops_timers(void **state)
{
    (void)state;
    ut_sched_reset();
    bool fired = false;
    loop *l = loop_create("drop", ut_on_run_msg, NULL);
    assert_int_equal(loop_start(l), 0);
    ut_run_on_loop(l, arm_never, &fired);
    loop_stop(l);
    loop_destroy(l);
    assert_false(fired);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_order_and_accuracy),
        cmocka_unit_test(test_timer_cancel_and_add_from_callback),
        cmocka_unit_test(test_timer_not_starved_by_messages),
        cmocka_unit_test(test_message_not_starved_by_timers),
        cmocka_unit_test(test_timer_observer_reports_lateness),
        cmocka_unit_test(test_many_timers),
        cmocka_unit_test(test_destroy_drops_timers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
