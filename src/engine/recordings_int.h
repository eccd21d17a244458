/* recordings_int — what the recordings files share; not part of the API.
 *
 * Files: recordings.c (engine thread: where recordings come from, Kaphila
 * events, callbacks, downloads, window cutting, the REST work that changes
 * state), recordings_rest.c (HTTP threads: handlers, reads, media from the
 * cache), recordings_store.c (cache paths, JSON; rows and SQL are
 * store/recstore.h; any thread with
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
#include "store/recstore.h"   /* the rows: rec_row, rec_db_* */

/* Windows shorter than this are empty recordings: <Record>'s own rule
 * (exec.c sends no action for them), and Twilio's "too short" (16101). */
#define REC_MIN_WINDOW_MS 500
/* Twilio's "recording too short / unavailable" codes (error_code, ErrorCode). */
#define REC_ERR_TOO_SHORT 16101
/* Kaphila has no file for the call (download 404): twigate's own choice of
 * code, Twilio has none for it (docs/recordings.md). */
#define REC_ERR_NO_FILE 20404
#define REC_RANGE_LEN 128


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
