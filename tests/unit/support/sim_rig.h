/* sim_rig — the fixture the simulator's tests share (tests/unit/sim/): the
 * Kaphila simulator in-process (fast mode, port 0, two API keys, TMPDIR a
 * fresh directory that must stay empty) and a libmicrohttpd receiver for its
 * event POSTs, plus blocking libcurl requests to it and a few helpers built
 * on them (start a call, wait for its events, the expected recording).
 *
 * Part of the support library (Makefile: UNIT_SUPPORT). ut_sim_setup and
 * ut_sim_teardown are a cmocka group's set-up and tear-down; while the group
 * runs, ut_sim is its fixture, which owns the sim, the receiver and every
 * event body. Threads: the receiver's handler runs on libmicrohttpd's threads
 * (one per connection) and takes rx.mu; everything else is the test
 * thread's. Failures fail the test through cmocka. Include after
 * <cmocka.h>. */
#ifndef TWIGATE_TEST_SIM_RIG_H
#define TWIGATE_TEST_SIM_RIG_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sim/sim.h"
#include "support.h"

#define UT_SIM_KEY1 "ak_live_test_one"
#define UT_SIM_KEY2 "ak_live_test_two"
#define UT_SIM_WAIT_MS 3000
#define UT_RX_MAX_EVENTS 4096

/* One event the receiver got. */
typedef struct ut_rx_event {
    char    call_id[40];
    char    name[40];
    char    ua[64];
    json_t *body;       /* owned by the fixture */
    int64_t at;         /* ut_now_ms() on arrival */
} ut_rx_event;

typedef struct ut_receiver {
    struct MHD_Daemon *d;
    int                port;
    pthread_mutex_t    mu;         /* guards ev and n */
    pthread_cond_t     cv;         /* broadcast on each event */
    ut_rx_event        ev[UT_RX_MAX_EVENTS];
    size_t             n;
    int                delay_ms;   /* slows each answer, to test ordering */
} ut_receiver;

typedef struct ut_sim_fixture {
    sim        *s;
    ut_receiver rx;
    char        base[64];      /* http://127.0.0.1:<sim port> */
    char        tmpdir[128];   /* TMPDIR while the sim runs: it must stay empty */
} ut_sim_fixture;

/* The running group's fixture (set by ut_sim_setup). */
extern ut_sim_fixture *ut_sim;

int ut_sim_setup(void **state);
int ut_sim_teardown(void **state);

/* Index of the first event (from index from) of call_id named name, waiting
 * up to timeout_ms; -1 when it never came. */
int ut_rx_wait(ut_receiver *rx, const char *call_id, const char *name, size_t from,
               int timeout_ms);
/* Names of call_id's events so far, comma-joined, into out. */
void ut_rx_names(ut_receiver *rx, const char *call_id, char *out, size_t n);
/* Body of event i (still the fixture's). */
json_t *ut_rx_body(ut_receiver *rx, int i);

/* An answer to ut_http: the caller frees body. */
typedef struct ut_resp {
    long   status;
    char  *body;
    size_t len;
    char   content_range[256];
    char   content_type[256];
} ut_resp;

/* One blocking request to base+path, with "Authorization: Bearer key" when
 * key is set. body and extra_header may be NULL. */
ut_resp ut_http(const char *base, const char *method, const char *path, const char *key,
                const char *body, const char *extra_header);
/* JSON request against the fixture's sim; returns the parsed answer (the
 * caller's), its status in *status. */
json_t *ut_api(const char *method, const char *path, const char *key, const char *body,
               long *status);
/* o[k] as a string, or NULL. */
const char *ut_jstr(json_t *o, const char *k);
/* Starts a call to number with events to the receiver; returns its callId
 * (heap). sid may be NULL. */
char *ut_make_call(const char *number, bool amd, const char *sid);
/* A call that has been answered (its recording started); callId on the heap. */
char *ut_answered_call(void);
/* POST body to path with UT_SIM_KEY1; the status must be want. */
void ut_post_expect(const char *path, const char *body, long want);

/* The recording of a call of `seconds` as the docs describe it, computed
 * independently of the sim: 8 kHz 16-bit mono PCM, a 400 Hz triangle wave of
 * peak 8000 (20 samples per period). out holds UT_WAV_MAX; returns the size. */
#define UT_WAV_MAX (44 + 60 * 16000)
size_t ut_expected_wav(int seconds, unsigned char *out);
/* Entries in dir, "." and ".." aside. */
int ut_dir_entries(const char *dir);

#endif
