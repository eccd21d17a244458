/* recordings_core_int.h — what the engine-thread files of recordings share
 * (recordings.c, recordings_fetch.c, recordings_cut.c, recordings_jobs.c):
 * their caps, the loaded view of a call's recordings, and the functions one
 * file calls in another. Engine thread only, except where a function says
 * otherwise. recordings_int.h is the interface to the rest of the engine and
 * to recordings_rest.c.
 *
 * Files:
 *   recordings.c        1. helpers (statuses, callbacks, load/save);
 *                       2. where recordings come from;
 *   recordings_fetch.c  3. the bridge file from Kaphila into the cache;
 *   recordings_cut.c    4. finalising: cutting windows, settling rows;
 *   recordings_jobs.c   5. the REST work handed over as rec_jobs. */
#ifndef TWIGATE_RECORDINGS_CORE_INT_H
#define TWIGATE_RECORDINGS_CORE_INT_H

#include "engine_int.h"
#include "recordings_int.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/calljson.h"
#include "base/errors.h"
#include "base/log.h"
#include "base/timefmt.h"
#include "net/bio.h"

/* The largest bridge file accepted from Kaphila: a 4-hour call (twigate's
 * TimeLimit default) is 230 MB at 8 kHz 16-bit mono and under 1 GB even at
 * 16 kHz stereo; anything past 2 GiB is not a call recording, and RIFF's
 * 32-bit sizes could not describe it anyway. */
#define REC_MAX_BRIDGE_BYTES (2LL << 30)
/* A "<bridge>.part" untouched for this long belongs to a transfer that died
 * with a previous process (a live one writes at least every
 * kaphila.timeout_ms, or curl aborts it). */
#define REC_PART_STALE_MS 60000
/* Background download attempts (the first included) when Kaphila fails
 * transiently (5xx, timeout), and the pause before each retry: enough to
 * ride out a restart of Kaphila, few enough not to hammer a broken one. A
 * media request retries on demand after that. */
#define REC_DOWNLOAD_ATTEMPTS 4
/* Recordings touched by one start-up recovery pass. */
#define REC_RECOVER_MAX 10000
/* pread/write fallback buffer when copy_file_range cannot be used. */
#define REC_COPY_BUF 65536
/* Code of a bridge file that is not a WAV we can read. */
#define REC_ERR_BAD_FILE 20500


typedef struct call_recs {
    store_call call;
    rec_row   *rows;
    int        n;
} call_recs;


typedef enum { FETCH_STARTED, FETCH_BUSY, FETCH_NO_SOURCE, FETCH_ERROR } fetch_result;
typedef enum { FIN_SETTLE, FIN_RECUT } fin_kind;

static inline bool rec_status_is(const rec_row *r, const char *s)
{
    return strcmp(r->status, s) == 0;
}

/* ---- shared between the files (defined in the file named) ---- */
/* recordings.c */
int64_t rec_bridge_end_ms(const store_call *cl, const rec_row *rows, int n);
void rec_bridge_event(engine *e, const char *call_sid, const char *filename,
                      const char *krec, int dur_s, bool ended);
bool rec_bridge_final(const store_call *cl, const rec_row *rows, int n);
bool rec_load(engine *e, const char *call_sid, call_recs *cr);
void rec_make_absent(rec_row *r, int code, int64_t now);
bool rec_mkdir_cache(engine *e);
bool rec_pending(const rec_row *r, bool final);
void rec_save(engine *e, rec_row *rows, int n, const bool *dirty, bool announce,
              const char *const *why);
void rec_send_callback(engine *e, const rec_row *r);
void rec_set_callback(rec_row *r, json_t *params);
void rec_set_status(rec_row *r, const char *s, int64_t now);
void rec_unload(call_recs *cr);
/* recordings_fetch.c */
void rec_all_absent(engine *e, const char *call_sid, int code, const char *why);
void rec_kick(engine *e, const char *call_sid, int attempt);
fetch_result rec_start_fetch(engine *e, const call_recs *cr, rec_job *j, int attempt);
bool rec_write_all(int fd, const void *p, size_t n);
/* recordings_cut.c */
bool rec_finalize(engine *e, const char *call_sid, fin_kind kind, const rec_row *recut,
                  rec_job *j);
void rec_gc_bridge(engine *e, const char *call_sid);
/* recordings_jobs.c */
void rec_job_reply_error(rec_job *j, int code, int status, const char *msg);
void rec_ensure(engine *e, rec_job *j, bool may_fetch);
bool rec_serve(engine *e, rec_job *j, const rec_row *r, const char *path);
bool rec_job_row(engine *e, rec_job *j, rec_row *out);

#endif
