/* support — what the unit tests share instead of copying it: a monotonic
 * clock, temporary files and directories, a waiter (the test thread blocks
 * until a loop thread reports done), a runner that executes a function on a
 * loop's thread, little-endian writers for WAV fixtures, and the slack
 * timing assertions allow.
 *
 * Linked into every unit-test binary (Makefile: UNIT_SUPPORT). Threads: the
 * waiter is safe from any thread; the rest is the calling test's. Failures
 * of set-up (no temp dir, no memory) fail the test through cmocka, so
 * callers need no error paths. Include after <cmocka.h>. */
#ifndef TWIGATE_TEST_SUPPORT_H
#define TWIGATE_TEST_SUPPORT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/loop.h"

/* Scheduling slack a timing assertion allows on a loaded CI box. ASan and
 * UBSan slow every callback several times over, and the machine is shared:
 * the bound that proves "on time" is wider there, not looser in what it
 * proves (a starved timer is late by hundreds of ms). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_UNDEFINED__)
#define UT_TOLERANCE_MS 100
#else
#define UT_TOLERANCE_MS 20
#endif

/* CLOCK_MONOTONIC in milliseconds. */
int64_t ut_now_ms(void);

/* How late the machine itself runs a thread right now: a probe thread that
 * sleeps 2 ms at a time and keeps the largest oversleep seen since the last
 * reset. A timer may be late by that much through no fault of the loop (on a
 * box loaded to 8 runnable threads per core a thread can wait 50 ms for a
 * CPU), so a timing bound is UT_TOLERANCE_MS + this, measured over the same
 * seconds: on a quiet machine it is ~0 and the bound is as tight as ever. The
 * probe starts on first use and runs until the process exits. Any thread. */
void    ut_sched_reset(void);
int64_t ut_sched_slack_ms(void);
/* The bound a timing assertion allows: tolerance plus the measured slack. */
#define UT_ON_TIME_MS (UT_TOLERANCE_MS + ut_sched_slack_ms())

/* An open, already unlinked temporary file (tag names it while it exists). */
int ut_tmpfile_fd(const char *tag);
/* Creates a fresh directory /tmp/<tag>-XXXXXX into out (size outlen). */
void ut_tmpdir(char *out, size_t outlen, const char *tag);
/* Removes dir and everything under it; quiet if it is already gone. */
void ut_rmtree(const char *dir);

/* A counter the test thread waits on while loop threads add to it. */
typedef struct ut_waiter {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             count;
} ut_waiter;

void ut_waiter_init(ut_waiter *w);
void ut_waiter_fini(ut_waiter *w);
void ut_waiter_add(ut_waiter *w, int n);
/* true when count reached target within timeout_ms */
bool ut_waiter_wait(ut_waiter *w, int target, int timeout_ms);

/* A loop whose messages are ut_run_on_loop's: the on_msg to give loop_create. */
void ut_on_run_msg(loop *l, void *msg);
/* Runs fn(l, arg) on l's thread (l must have been created with ut_on_run_msg). */
void ut_run_on_loop(loop *l, void (*fn)(loop *, void *), void *arg);

/* Little-endian stores, for hand-built WAV headers. */
void ut_le16(unsigned char *p, unsigned v);
void ut_le32(unsigned char *p, uint32_t v);

#endif
