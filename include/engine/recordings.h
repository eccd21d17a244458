/* recordings — Twilio's Recording resources (contract §6, §8.6) on top of
 * Kaphila's bridge recording.
 *
 * Kaphila records the whole bridge of every answered call and offers state,
 * stop and download — no start. twigate maps every Twilio recording onto
 * that one file: the Record=true recording (source OutboundAPI) *is* the
 * bridge file; a <Record> (RecordVerb) or a REST-started recording
 * (StartCallRecordingAPI) is a window [offset, offset + length) of it, cut
 * into its own WAV once the bridge file is final. docs/recordings.md has the
 * model and every difference from Twilio.
 *
 * Threads:
 *   - the REST handlers (http/recordings_rest.h) run on HTTP threads (ctx is the app *); they
 *     read the store themselves and hand every change to the engine thread
 *     (engine_submit), which replies to the suspended request;
 *   - rec_call_answered, rec_kaphila_event and call_record_window
 *     (engine_int.h) and rec_recover run on the engine thread only;
 *   - rec-mp3 (recordings_mp3.c) encodes MP3 media and answers its requests;
 *   - the rec_wav_* / rec_range_* helpers are pure: any thread.
 *
 * Media lives in a cache directory next to the database (db.path +
 * ".recordings/"): <CallSid>.wav for the bridge as Kaphila delivered it,
 * <RecordingSid>.wav for a window, <RecordingSid>.mp3 once encoded. Files are written to "<name>.part" and
 * renamed, so a reader never sees half a file. */
#ifndef TWIGATE_RECORDINGS_H
#define TWIGATE_RECORDINGS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "base/sid.h"
#include "conf/app.h"
#include "conf/config.h"
#include "engine/engine.h"
#include "store/recstore.h"   /* the rows: rec_row, rec_db_* */

/* The REST handlers are in http/recordings_rest.h (HTTP threads). */

/* ---- engine thread ---- */
/* Start-up (the engine's recovery): finishes what a stop interrupted —
 * recordings whose bridge file is final but which were never completed (a
 * download cut short, failing) are fetched again, so their callbacks still
 * go out. */
void rec_recover(engine *e);
/* The same for one call (an ended call another instance owned, adopted:
 * engine_cluster.c). Engine thread. */
void rec_recover_call(engine *e, const char *call_sid);

/* ---- the MP3 encoder thread (recordings_mp3.c) ---- */
/* "rec-mp3" encodes a recording's WAV to MP3 the first time .mp3 is asked
 * for and answers those requests (main.c creates it before the engine).
 * stop: no new work, the encode under way is cancelled, queued requests
 * are answered 503, the thread is joined — call it after the engine has
 * stopped and before the HTTP server stops; destroy (after http_stop)
 * frees it. Both accept NULL. */
typedef struct rec_mp3 rec_mp3;
rec_mp3 *rec_mp3_create(void);
void     rec_mp3_stop(rec_mp3 *w);
void     rec_mp3_destroy(rec_mp3 *w);

/* ---- pure helpers (any thread) ---- */

/* Bytes of a WAV file read to find its fmt and data chunks: a plain PCM
 * header is 44 bytes; metadata chunks (LIST, fact) before the samples are
 * small. A file whose data chunk starts later is not one we cut. */
#define REC_WAV_HEADER_MAX 65536
/* Largest header rec_wav_header writes: RIFF + fmt (at most 40 bytes of
 * WAVE_FORMAT_EXTENSIBLE body) + data headers. */
#define REC_WAV_OUT_HEADER_MAX 72

/* Where a WAV file keeps its samples. */
typedef struct rec_wav {
    unsigned format;        /* wFormatTag: 1 = PCM, 0xFFFE = extensible … */
    unsigned channels;
    uint32_t sample_rate;
    unsigned block_align;   /* bytes per frame (all channels) */
    unsigned bits;
    size_t   fmt_off;       /* the fmt chunk's body within the header bytes */
    size_t   fmt_len;
    uint64_t data_off;      /* first sample byte in the file */
    uint64_t data_len;      /* sample bytes present: the data chunk, clipped to the file */
} rec_wav;

/* Parses the first n bytes of a file of file_size bytes. Returns 0, or -1
 * when it is not a RIFF/WAVE file with a usable fmt chunk followed by a
 * data chunk within those n bytes. A data chunk whose size field is wrong
 * (0 or 0xFFFFFFFF from a writer that never finished it, or larger than the
 * file) is taken to run to the end of the file, whole frames only. */
int rec_wav_parse(const unsigned char *p, size_t n, uint64_t file_size, rec_wav *out);

/* Milliseconds of audio in len sample bytes. */
int64_t rec_wav_ms(const rec_wav *w, uint64_t len);

/* The sample bytes [*off, *off + *len) (absolute file offsets) holding
 * [start_ms, start_ms + len_ms) of the audio, on frame boundaries and
 * clipped to the samples present; *len is 0 when the window lies past the
 * end. len_ms < 0 means "to the end". */
void rec_wav_window(const rec_wav *w, int64_t start_ms, int64_t len_ms, uint64_t *off,
                    uint64_t *len);

/* Writes into out (at least REC_WAV_OUT_HEADER_MAX bytes) the header of a
 * WAV file with the fmt chunk body fmt[0..fmt_len) and data_len sample
 * bytes (plus a pad byte the caller appends when data_len is odd). Returns
 * the header length, or 0 when fmt_len is not 16..40 or the sizes overflow
 * RIFF's 32-bit fields. */
size_t rec_wav_header(const unsigned char *fmt, size_t fmt_len, uint64_t data_len,
                      unsigned char *out);

/* Twilio's duration in whole seconds for ms of audio: rounded to the
 * nearest second (as <Record>'s RecordingDuration is), 0 for nothing. */
int rec_duration_s(int64_t ms);

/* A Range request header against a body of size bytes (RFC 9110 §14: one
 * "bytes=a-b", "bytes=a-" or "bytes=-n" range). */
typedef enum {
    REC_RANGE_NONE = 0,          /* absent, malformed, other unit, several ranges: send it all */
    REC_RANGE_OK = 1,            /* *off, *len set: answer 206 */
    REC_RANGE_UNSATISFIABLE = -1 /* answer 416 */
} rec_range;
rec_range rec_range_parse(const char *header, uint64_t size, uint64_t *off, uint64_t *len);

/* ==== shared by the REST side (http/recordings_rest.c) and the engine's
 * recordings files: paths, JSON, media replies, the hand-off to the engine ==== */

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
