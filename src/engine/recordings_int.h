/* recordings_int — what the recordings files share; not part of the API.
 *
 * Files: recordings.c (engine thread: where recordings come from, Kaphila
 * events, callbacks, downloads, window cutting, the REST work that changes
 * state), recordings_rest.c (HTTP threads: handlers, reads, media from the
 * cache), recordings_store.c (rows, SQL, cache paths, JSON; any thread with
 * its own store connection), recordings_media.c (pure WAV/Range helpers),
 * recordings_mp3.c (the rec-mp3 encoder thread).
 *
 * Every change to a recordings row happens on the engine thread, so rows
 * never race with each other; HTTP threads only read. */
#ifndef TWIGATE_RECORDINGS_INT_H
#define TWIGATE_RECORDINGS_INT_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "conf/app.h"
#include "conf/config.h"
#include "engine/engine.h"
#include "engine/recordings.h"
#include "base/sid.h"
#include "store/store.h"

/* recordingStatusCallbackEvent bits, as the table stores them (and as
 * twiml.h's TREC_EV_* and engine_int.h's rsc_events number them). */
enum { REC_EV_IN_PROGRESS = 1, REC_EV_COMPLETED = 2, REC_EV_ABSENT = 4 };

/* Recordings per call. A TwiML loop around <Record> makes one per turn;
 * past this many the loop is a runaway, and every row costs a cut file. */
#define REC_MAX_PER_CALL 1000
/* Windows shorter than this are empty recordings: <Record>'s own rule
 * (exec.c sends no action for them), and Twilio's "too short" (16101). */
#define REC_MIN_WINDOW_MS 500
/* Twilio's "recording too short / unavailable" codes (error_code, ErrorCode). */
#define REC_ERR_TOO_SHORT 16101
/* Kaphila has no file for the call (download 404): twigate's own choice of
 * code, Twilio has none for it (docs/recordings.md). */
#define REC_ERR_NO_FILE 20404
#define REC_KID_LEN 128
#define REC_FILENAME_LEN 256
#define REC_RANGE_LEN 128

typedef struct rec_row {
    int64_t id;                       /* rowid: list order, newest = largest */
    char    sid[SID_SIZE];
    char    account_sid[SID_SIZE];
    char    call_sid[SID_SIZE];
    char    source[24];               /* OutboundAPI | RecordVerb | StartCallRecordingAPI */
    char    status[16];               /* in-progress stopped processing completed absent */
    int     channels;
    char    track[12];
    int64_t date_created, date_updated, start_time;   /* ms since the epoch */
    int     duration;                 /* seconds, -1 = null */
    int64_t offset_ms;                /* window start on the call_answered_ms() clock */
    int64_t window_ms;                /* window length; -1 = open (or the whole bridge) */
    char    kaphila_call_id[STORE_KID_LEN];
    char    kaphila_recording_id[REC_KID_LEN];
    char    filename[REC_FILENAME_LEN];   /* Kaphila's file name, "" until known */
    int     error_code;               /* 0 = null */
    char   *callback_url;             /* owned; NULL = no recording status callback */
    char    callback_method[8];
    int     callback_events;          /* REC_EV_* bits */
    bool    deleted;
} rec_row;

void rec_row_fini(rec_row *r);      /* frees callback_url; accepts NULL */
bool rec_is_window(const rec_row *r);   /* not the whole bridge (OutboundAPI) */

/* ---- SQL (recordings_store.c); c is the calling thread's connection ---- */
typedef struct rec_filter {
    const char *account_sid;
    const char *call_sid;             /* NULL/"" = any */
    int64_t     created_from, created_to;   /* [from, to) ms; 0 = unbounded */
    bool        include_deleted;
} rec_filter;

__attribute__((warn_unused_result))
store_status rec_db_insert(store_conn *c, rec_row *r);            /* sets r->id */
/* By SID within an account (account_sid NULL = any account: engine only).
 * Deleted rows are returned too; callers decide. */
__attribute__((warn_unused_result))
store_status rec_db_get(store_conn *c, const char *account_sid, const char *sid, rec_row *out);
__attribute__((warn_unused_result))
store_status rec_db_get_id(store_conn *c, int64_t id, rec_row *out);
/* Writes the columns the engine changes: status, date_updated, duration,
 * window_ms, Kaphila ids, filename, channels, error_code. */
__attribute__((warn_unused_result))
store_status rec_db_update(store_conn *c, const rec_row *r);
__attribute__((warn_unused_result))
store_status rec_db_set_deleted(store_conn *c, const char *sid, int64_t now);
/* Keyset page, newest first (see store_call_list); rows lack callback_url. */
__attribute__((warn_unused_result))
store_status rec_db_list(store_conn *c, const rec_filter *f, int64_t before_id, int64_t offset,
                         int limit, rec_row *out, int *n_out);
/* Every row of a call, oldest first (at most REC_MAX_PER_CALL), into a new
 * array the caller frees with rec_rows_free. *out is NULL when there are none. */
__attribute__((warn_unused_result))
store_status rec_db_for_call(store_conn *c, const char *call_sid, rec_row **out, int *n_out);
void rec_rows_free(rec_row *rows, int n);
/* Calls that have recordings waiting for their media (recovery). */
__attribute__((warn_unused_result))
store_status rec_db_pending_calls(store_conn *c, char (*out)[SID_SIZE], int max, int *n_out);

/* ---- cache paths (recordings_store.c) ---- */
/* false when the path does not fit (a db.path near PATH_MAX). */
bool rec_cache_dir(const config *cfg, char out[PATH_MAX]);
bool rec_bridge_path(const config *cfg, const char *call_sid, char out[PATH_MAX]);
/* The file a recording's media is served from: the bridge for OutboundAPI,
 * the cut window otherwise. */
bool rec_media_path(const config *cfg, const rec_row *r, char out[PATH_MAX]);

/* ---- JSON (recordings_store.c) ---- */
/* §6.2 (account_level: subresource_uris, media_url, status "deleted") or
 * §6.1 (track). public_url has no trailing slash. New reference. */
json_t *rec_json(const rec_row *r, const char *public_url, bool account_level);
/* public_url + /2010-04-01/Accounts/{AC}/Recordings/{RE} (media_url and
 * RecordingUrl: no extension). */
void rec_media_url(const char *public_url, const rec_row *r, char *out, size_t n);

/* ---- media replies: engine_reply_file (the transport's; any thread) ---- */
#define REC_WAV_TYPE "audio/x-wav"
#define REC_MP3_TYPE "audio/mpeg"
/* Where a recording's MP3 is cached: <RecordingSid>.mp3 in the cache dir. */
bool rec_mp3_path(const config *cfg, const rec_row *r, char out[PATH_MAX]);

/* ---- MP3 (recordings_mp3.c) ---- */
/* Queues the suspended request r for the MP3 of the WAV at wav, cached at
 * mp3 (encoded first unless there). On true rec-mp3 replies; on false
 * (REC_MP3_MAX_QUEUE requests waiting, stopping, out of memory) the caller
 * still must. Any thread. */
__attribute__((warn_unused_result))
bool rec_mp3_submit(rec_mp3 *w, engine_reply r, const char *account_sid, const char *wav,
                    const char *mp3, const char *range);

/* ---- REST → engine (recordings.c) ---- */
typedef enum { REC_JOB_MEDIA, REC_JOB_CREATE, REC_JOB_UPDATE, REC_JOB_DELETE } rec_job_kind;

typedef struct rec_job {
    rec_job_kind kind;
    engine_reply r;                    /* suspended; the engine replies */
    char         account_sid[SID_SIZE];
    char         call_sid[SID_SIZE];   /* "" = account-level route */
    char         sid[SID_SIZE];        /* "" = Twilio.CURRENT */
    char         range[REC_RANGE_LEN]; /* media: the Range header, "" = none */
    rec_mp3     *mp3;                  /* media: non-NULL = .mp3 asked, encoded by this */
    json_t      *params;               /* create/update: validated parameters (owned) */
} rec_job;

/* Suspends job->r and hands the job to the engine thread, which replies
 * and frees it. On false (engine queue full or stopping) nothing happened:
 * the caller still owns job, replies and frees it (rec_job_free). */
__attribute__((warn_unused_result))
bool rec_job_submit(engine *e, rec_job *job);
void rec_job_free(rec_job *job);

#endif
