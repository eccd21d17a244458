/* recordings.c — the engine-thread half of recordings.
 *
 * Map of this file:
 *   1. small helpers: the call's clock, statuses, the recording status
 *      callback (contract §8.6) and notifications;
 *   2. where recordings come from: Record=true (rec_call_answered), <Record>
 *      (call_record_window), and Kaphila's events (rec_kaphila_event), which
 *      close windows when the bridge recording ends;
 *   3. the bridge file: downloading it from Kaphila into the cache (one
 *      transfer per call, guarded by an exclusive "<file>.part"), retries;
 *   4. finalising: once the bridge file is here, every recording waiting for
 *      it is cut (windows) or checked (the whole bridge) and becomes
 *      completed or absent, with its callback;
 *   5. the REST work that changes state (media on demand, start, stop,
 *      delete), handed over by recordings_rest.c as rec_jobs.
 *
 * The life of a recording:
 *   OutboundAPI  in-progress → [stopped] → processing → completed | absent
 *   StartCallRecordingAPI  in-progress → [stopped] → processing → completed | absent
 *   RecordVerb   processing (created when the window closes) → completed | absent
 * "processing" means the window is known but Kaphila's file is not final yet
 * (the bridge is recorded until the call ends or the Record=true recording
 * is stopped); "completed" means the media is in the cache, so the
 * completed callback is only sent when a download would succeed. */
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
static const int64_t retry_delay_ms[REC_DOWNLOAD_ATTEMPTS - 1] = {1000, 10000, 60000};
/* Recordings touched by one start-up recovery pass. */
#define REC_RECOVER_MAX 10000
/* pread/write fallback buffer when copy_file_range cannot be used. */
#define REC_COPY_BUF 65536
/* Code of a bridge file that is not a WAV we can read. */
#define REC_ERR_BAD_FILE 20500

/* ================================================================ 1 */

static bool status_is(const rec_row *r, const char *s) { return strcmp(r->status, s) == 0; }

static void set_status(rec_row *r, const char *s, int64_t now)
{
    snprintf(r->status, sizeof r->status, "%s", s);
    r->date_updated = now;
}

static int events_bits(json_t *arr)
{
    int bits = 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const char *v = json_string_value(json_array_get(arr, i));
        if (!v) continue;
        if (!strcmp(v, "in-progress")) bits |= REC_EV_IN_PROGRESS;
        else if (!strcmp(v, "completed")) bits |= REC_EV_COMPLETED;
        else if (!strcmp(v, "absent")) bits |= REC_EV_ABSENT;
    }
    return bits ? bits : REC_EV_COMPLETED;   /* Twilio's default */
}

static void set_callback(rec_row *r, json_t *params)
{
    const char *url = json_string_value(json_object_get(params, "recording_status_callback"));
    const char *method = json_string_value(json_object_get(params, "recording_status_callback_method"));
    r->callback_url = url && *url ? strdup(url) : NULL;
    snprintf(r->callback_method, sizeof r->callback_method, "%s", method ? method : "POST");
    r->callback_events = events_bits(json_object_get(params, "recording_status_callback_event"));
}

/* The recording status callback (contract §8.6) — not the voice parameter
 * set. Sent through the engine's outbox: signed, ordered after the call's
 * earlier callbacks, retried. Outside any transaction. */
static void send_callback(engine *e, const rec_row *r)
{
    int bit = status_is(r, "in-progress") ? REC_EV_IN_PROGRESS
              : status_is(r, "completed") ? REC_EV_COMPLETED
              : status_is(r, "absent") ? REC_EV_ABSENT : 0;
    char url[768], ch[16], dur[16], code[16], start[TIMEFMT_RFC2822_LEN];
    form f;
    bool ok;
    if (!bit || !r->callback_url || !(r->callback_events & bit) || r->deleted) return;
    form_init(&f);
    rec_media_url(engine_public_url(e), r, url, sizeof url);
    snprintf(ch, sizeof ch, "%d", r->channels);
    timefmt_rfc2822(r->start_time, start);
    ok = form_add(&f, "AccountSid", r->account_sid) == FORM_OK &&
         form_add(&f, "CallSid", r->call_sid) == FORM_OK &&
         form_add(&f, "RecordingSid", r->sid) == FORM_OK &&
         form_add(&f, "RecordingUrl", url) == FORM_OK &&
         form_add(&f, "RecordingStatus", r->status) == FORM_OK &&
         form_add(&f, "RecordingChannels", ch) == FORM_OK &&
         form_add(&f, "RecordingStartTime", start) == FORM_OK &&
         form_add(&f, "RecordingSource", r->source) == FORM_OK;
    /* Twilio sends the track for API-started recordings, not for <Record>. */
    if (ok && strcmp(r->source, "RecordVerb") != 0)
        ok = form_add(&f, "RecordingTrack", r->track) == FORM_OK;
    if (ok && bit == REC_EV_COMPLETED) {
        snprintf(dur, sizeof dur, "%d", r->duration > 0 ? r->duration : 0);
        ok = form_add(&f, "RecordingDuration", dur) == FORM_OK &&
             form_add(&f, "ErrorCode", "0") == FORM_OK;
    } else if (ok && bit == REC_EV_ABSENT) {
        snprintf(code, sizeof code, "%d", r->error_code);
        ok = form_add(&f, "ErrorCode", code) == FORM_OK;
    }
    if (ok)
        engine_enqueue_callback(e, r->account_sid, r->call_sid, "recording", r->callback_url,
                                r->callback_method[0] ? r->callback_method : "POST", &f);
    else
        log_error("recordings", "out of memory building a recording status callback");
    form_fini(&f);
}

static void notify_absent(engine *e, const rec_row *r, const char *why)
{
    char url[768], msg[512];
    const twerr_def *d = twerr_lookup(r->error_code);
    rec_media_url(engine_public_url(e), r, url, sizeof url);
    snprintf(msg, sizeof msg, "Recording %s is absent: %s", r->sid, why);
    engine_notify(e, r->account_sid, r->call_sid, r->error_code,
                  d && !strcmp(d->log_level, "WARNING") ? 1 : 0, msg, url);
}

/* Marks r absent (in memory; the caller persists it). */
static void make_absent(rec_row *r, int code, int64_t now)
{
    set_status(r, "absent", now);
    r->error_code = code;
}

static bool mkdir_cache(engine *e)
{
    char dir[PATH_MAX];
    if (!rec_cache_dir(engine_config(e), dir)) return false;
    if (mkdir(dir, 0700) == 0 || errno == EEXIST) return true;
    log_error("recordings", "cannot create the cache directory %s: %s", dir, strerror(errno));
    return false;
}

/* A row still waiting for the bridge file. */
static bool pending(const rec_row *r, bool final)
{
    if (r->deleted) return false;
    return status_is(r, "processing") || status_is(r, "stopped") ||
           (final && status_is(r, "in-progress"));
}

/* Kaphila's file for the call is complete: the call ended, or the Record=true
 * recording (which is Kaphila's bridge recording) was stopped. */
static bool bridge_final(const store_call *cl, const rec_row *rows, int n)
{
    if (!store_status_live(cl->status)) return true;
    for (int i = 0; i < n; i++)
        if (!rec_is_window(&rows[i]) && !status_is(&rows[i], "in-progress")) return true;
    return false;
}

/* Where the bridge recording ended, on the call_answered_ms() clock. */
static int64_t bridge_end_ms(const store_call *cl, const rec_row *rows, int n)
{
    if (!cl->answered_at) return 0;
    if (!store_status_live(cl->status) && cl->end_time >= cl->answered_at)
        return cl->end_time - cl->answered_at;
    for (int i = 0; i < n; i++)
        if (!rec_is_window(&rows[i]) && !status_is(&rows[i], "in-progress") &&
            rows[i].window_ms >= 0)
            return rows[i].window_ms;
    return timefmt_now_ms() - cl->answered_at;
}

typedef struct call_recs {
    store_call call;
    rec_row   *rows;
    int        n;
} call_recs;

/* The call's recordings, then the call. false when the call has none —
 * most calls record nothing, and for them this one indexed lookup is all
 * the work there is (the call row is not even read) — or on an error. */
static bool load(engine *e, const char *call_sid, call_recs *cr)
{
    memset(cr, 0, sizeof *cr);
    if (rec_db_for_call(engine_db(e), call_sid, &cr->rows, &cr->n) != STORE_OK || !cr->n)
        return false;
    if (store_call_get_by_sid(engine_db(e), call_sid, &cr->call) != STORE_OK) {
        rec_rows_free(cr->rows, cr->n);
        cr->rows = NULL;
        cr->n = 0;
        return false;
    }
    return true;
}

static void unload(call_recs *cr)
{
    store_call_fini(&cr->call);
    rec_rows_free(cr->rows, cr->n);
    cr->rows = NULL;
    cr->n = 0;
}

/* Writes the rows flagged in `dirty` in one transaction. With announce
 * (every flagged row has just become completed or absent), then sends
 * their callbacks: the outbox rows join the engine's write batch
 * (engine_enqueue_callback), so they must come after this transaction. why[i], when set, is a notification for a row that became absent
 * because of Kaphila's file; a window too short to hold audio is the
 * caller's own doing (an empty <Record>) and is not worth a debugger entry. */
static void save(engine *e, rec_row *rows, int n, const bool *dirty, bool announce,
                 const char *const *why)
{
    store_conn *db = engine_db(e);
    bool txn = store_begin(db) == STORE_OK, ok = true;
    for (int i = 0; i < n && ok; i++)
        if (dirty[i] && rec_db_update(db, &rows[i]) != STORE_OK) ok = false;
    if (txn && ok && store_commit(db) != STORE_OK) ok = false;
    if (!ok) {
        if (txn) store_rollback(db);
        log_error("recordings", "recording state not saved; no callbacks sent");
        return;
    }
    for (int i = 0; announce && i < n; i++) {
        if (!dirty[i]) continue;
        if (status_is(&rows[i], "absent") && why && why[i]) notify_absent(e, &rows[i], why[i]);
        if (status_is(&rows[i], "completed") || status_is(&rows[i], "absent"))
            send_callback(e, &rows[i]);
    }
}

/* ================================================================ 2 */

static void kick(engine *e, const char *call_sid, int attempt);

void rec_call_answered(call *c)
{
    engine *e = call_engine(c);
    rec_row r = {0};
    int64_t now = timefmt_now_ms();
    if (!json_is_true(call_row_param(c, "record"))) return;
    if (!sid_new("RE", r.sid)) {
        call_notify(c, 20500, 0, "Record=true: no randomness for a Recording SID", NULL, NULL);
        return;
    }
    snprintf(r.account_sid, sizeof r.account_sid, "%s", call_row_account_sid(c));
    snprintf(r.call_sid, sizeof r.call_sid, "%s", call_row_sid(c));
    snprintf(r.source, sizeof r.source, "OutboundAPI");
    snprintf(r.status, sizeof r.status, "in-progress");
    /* Kaphila's bridge recording is mono with both parties mixed, whatever
     * RecordingChannels and RecordingTrack asked for (docs/recordings.md). */
    r.channels = 1;
    snprintf(r.track, sizeof r.track, "both");
    r.start_time = call_row_answered_at(c) ? call_row_answered_at(c) : now;
    r.date_created = r.start_time;
    r.date_updated = now;
    r.duration = -1;
    r.window_ms = -1;
    snprintf(r.kaphila_call_id, sizeof r.kaphila_call_id, "%s", call_row_kaphila_id(c));
    set_callback(&r, call_row_params(c));
    if (rec_db_insert(engine_db(e), &r) != STORE_OK) {
        call_notify(c, 20500, 0, "Record=true: the recording could not be stored", NULL, NULL);
        rec_row_fini(&r);
        return;
    }
    call_log(c, "recording/start", json_pack("{s:s,s:s}", "recordingSid", r.sid, "source",
                                            "OutboundAPI"));
    send_callback(e, &r);
    rec_row_fini(&r);
}

bool rec_status_params(call *c, form *f, int duration_s)
{
    engine *e = call_engine(c);
    rec_row *rows = NULL;
    int n = 0, found = -1;
    char url[768], dur[16];
    bool ok = true;
    if (!json_is_true(call_row_param(c, "record"))) return true;
    if (rec_db_for_call(engine_db(e), call_row_sid(c), &rows, &n) != STORE_OK) {
        log_warn("recordings", "completed callback without the recording: store read failed");
        return true;
    }
    for (int i = 0; i < n && found < 0; i++)
        if (!strcmp(rows[i].source, "OutboundAPI") && !rows[i].deleted &&
            !status_is(&rows[i], "absent"))
            found = i;
    if (found >= 0) {
        const rec_row *r = &rows[found];
        rec_media_url(engine_public_url(e), r, url, sizeof url);
        snprintf(dur, sizeof dur, "%d", r->duration >= 0 ? r->duration
                                        : duration_s > 0 ? duration_s : 0);
        ok = form_add(f, "RecordingUrl", url) == FORM_OK &&
             form_add(f, "RecordingSid", r->sid) == FORM_OK &&
             form_add(f, "RecordingDuration", dur) == FORM_OK;
    }
    rec_rows_free(rows, n);
    return ok;
}

void call_record_window(call *c, const char *re_sid, int64_t start_ms, int64_t end_ms,
                        const char *rsc_url, const char *rsc_method, int rsc_events)
{
    engine *e = call_engine(c);
    rec_row r = {0}, *rows = NULL;
    int n = 0;
    int64_t now = timefmt_now_ms();
    if (!sid_valid(re_sid, "RE")) {
        log_error("recordings", "<Record> window with an invalid Recording SID");
        return;
    }
    if (rec_db_for_call(engine_db(e), call_row_sid(c), &rows, &n) != STORE_OK) {
        call_notify(c, 20500, 0, "<Record>: the recording could not be stored", NULL, NULL);
        return;
    }
    if (n >= REC_MAX_PER_CALL) {
        char msg[160];
        snprintf(msg, sizeof msg, "<Record>: this call already has %d recordings; no more are"
                 " kept (a TwiML loop?)", REC_MAX_PER_CALL);
        call_notify(c, 20500, 1, msg, NULL, NULL);
        goto out;
    }
    snprintf(r.sid, sizeof r.sid, "%s", re_sid);
    snprintf(r.account_sid, sizeof r.account_sid, "%s", call_row_account_sid(c));
    snprintf(r.call_sid, sizeof r.call_sid, "%s", call_row_sid(c));
    snprintf(r.source, sizeof r.source, "RecordVerb");
    r.channels = 1;
    snprintf(r.track, sizeof r.track, "both");
    r.offset_ms = start_ms > 0 ? start_ms : 0;
    r.window_ms = end_ms > r.offset_ms ? end_ms - r.offset_ms : 0;
    r.start_time = (call_row_answered_at(c) ? call_row_answered_at(c) : now) + r.offset_ms;
    r.date_created = r.start_time;
    r.date_updated = now;
    r.duration = rec_duration_s(r.window_ms);
    snprintf(r.kaphila_call_id, sizeof r.kaphila_call_id, "%s", call_row_kaphila_id(c));
    r.callback_url = rsc_url && *rsc_url ? strdup(rsc_url) : NULL;
    snprintf(r.callback_method, sizeof r.callback_method, "%s", rsc_method ? rsc_method : "POST");
    r.callback_events = rsc_events ? rsc_events : REC_EV_COMPLETED;
    /* Under half a second is an empty recording (exec.c sends no action for
     * it); Twilio calls that absent, too short. */
    if (r.window_ms < REC_MIN_WINDOW_MS) make_absent(&r, REC_ERR_TOO_SHORT, now);
    else set_status(&r, "processing", now);
    if (rec_db_insert(engine_db(e), &r) != STORE_OK) {
        call_notify(c, 20500, 0, "<Record>: the recording could not be stored", NULL, NULL);
        goto out;
    }
    call_log(c, "recording/window", json_pack("{s:s,s:I,s:I,s:s}", "recordingSid", r.sid,
             "offsetMs", (json_int_t)r.offset_ms, "lengthMs", (json_int_t)r.window_ms,
             "status", r.status));
    /* The executor reports the window when it closes, so "in-progress" (if
     * asked for) goes out then, just before the final status. */
    if (r.callback_events & REC_EV_IN_PROGRESS) {
        rec_row ip = r;
        set_status(&ip, "in-progress", now);
        send_callback(e, &ip);
    }
    if (status_is(&r, "absent")) {
        send_callback(e, &r);
    } else if (bridge_final(&c->row, rows, n)) {
        kick(e, call_row_sid(c), 0);   /* the bridge was already stopped: finish now */
    }
out:
    rec_row_fini(&r);
    rec_rows_free(rows, n);
}

/* Something Kaphila said about the call's bridge recording, applied to the
 * call's rows (loaded). Its names for the file (filename, recordingId) are
 * kept on every row of the call. With ended (the call ended, or POST
 * /recordings/:callId/stop), windows still open end where the bridge ended
 * and the Record=true recording waits for the file (processing), with
 * Kaphila's duration dur_s (< 0: not given). */
static void bridge_update(engine *e, call_recs *cr, const char *filename, const char *krec,
                          int dur_s, bool ended)
{
    bool *dirty = calloc((size_t)cr->n, sizeof *dirty);
    int64_t now = timefmt_now_ms(), end;
    if (!dirty) return;
    end = bridge_end_ms(&cr->call, cr->rows, cr->n);
    for (int i = 0; i < cr->n; i++) {
        rec_row *r = &cr->rows[i];
        if (filename && *filename && strcmp(r->filename, filename)) {
            snprintf(r->filename, sizeof r->filename, "%s", filename);
            dirty[i] = true;
        }
        if (krec && *krec && strcmp(r->kaphila_recording_id, krec)) {
            snprintf(r->kaphila_recording_id, sizeof r->kaphila_recording_id, "%s", krec);
            dirty[i] = true;
        }
        if (!ended || r->deleted) continue;
        if (!rec_is_window(r)) {
            if (status_is(r, "in-progress") || status_is(r, "stopped")) {
                set_status(r, "processing", now);
                dirty[i] = true;
            }
            if (status_is(r, "processing") && (dur_s >= 0 || r->duration < 0)) {
                r->duration = dur_s >= 0 ? dur_s : rec_duration_s(end);
                dirty[i] = true;
            }
        } else if (status_is(r, "in-progress")) {
            r->window_ms = end > r->offset_ms ? end - r->offset_ms : 0;
            r->duration = rec_duration_s(r->window_ms);
            set_status(r, "processing", now);
            dirty[i] = true;
        } else if (status_is(r, "stopped")) {
            set_status(r, "processing", now);
            dirty[i] = true;
        }
    }
    save(e, cr->rows, cr->n, dirty, false, NULL);
    free(dirty);
}

static void bridge_event(engine *e, const char *call_sid, const char *filename,
                         const char *krec, int dur_s, bool ended)
{
    call_recs cr;
    if (!load(e, call_sid, &cr)) return;
    bridge_update(e, &cr, filename, krec, dur_s, ended);
    unload(&cr);
}

static const char *safe_name(const char *s)
{
    if (!s || !*s || strlen(s) >= REC_FILENAME_LEN) return NULL;
    for (const char *p = s; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return NULL;
    return s;
}

void rec_kaphila_event(engine *e, const char *account_sid, const char *call_sid,
                       const char *name, json_t *ev)
{
    const char *krec = safe_name(json_string_value(json_object_get(ev, "recordingId")));
    json_t *rec = NULL, *d = NULL;
    bool ended = true, final = false;
    call_recs cr;
    log_context(NULL, account_sid, call_sid);
    if (!strcmp(name, "recording.started")) {
        ended = false;
    } else if (!strcmp(name, "call.ended")) {
        rec = json_object_get(ev, "recording");
        krec = safe_name(json_string_value(json_object_get(rec, "recordingId")));
        d = json_object_get(ev, "callDuration");
        if (!d) d = json_object_get(ev, "duration");
        /* The file is final when Kaphila says the recording is no longer
         * active; otherwise recording.completed will say so. */
        final = json_is_object(rec) && !json_is_true(json_object_get(rec, "active"));
    } else if (!strcmp(name, "recording.completed")) {
        d = json_object_get(ev, "duration");
        final = true;
    } else if (strcmp(name, "recording.stopped") != 0) {
        log_debug("recordings", "%s ignored", name);
        return;
    }
    /* Kaphila records every answered call and says so; a call without a
     * Recording resource has nothing to update (one lookup, then done). */
    if (!load(e, call_sid, &cr)) return;
    bridge_update(e, &cr, safe_name(json_string_value(json_object_get(rec, "filename"))), krec,
                  json_is_integer(d) ? (int)json_integer_value(d) : -1, ended);
    unload(&cr);
    if (final) kick(e, call_sid, 0);
}

/* ================================================================ 3 */

typedef enum { FETCH_STARTED, FETCH_BUSY, FETCH_NO_SOURCE, FETCH_ERROR } fetch_result;

typedef struct dl {
    engine            *e;
    CURL              *easy;
    char               call_sid[SID_SIZE];
    char               account_sid[SID_SIZE];
    int                fd;
    char               part[PATH_MAX + 8];
    char               path[PATH_MAX];
    uint64_t           written;
    bool               write_failed;
    struct curl_slist *headers;
    int                attempt;
    rec_job           *job;          /* a media request waiting for this file, or NULL */
} dl;

typedef enum { FIN_SETTLE, FIN_RECUT } fin_kind;
static bool finalize(engine *e, const char *call_sid, fin_kind kind, const rec_row *recut,
                     rec_job *j);
static void gc_bridge(engine *e, const char *call_sid);
static void ensure(engine *e, rec_job *j, bool may_fetch);
static void job_reply_error(rec_job *j, int code, int status, const char *msg);

static bool write_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        s += w;
        n -= (size_t)w;
    }
    return true;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    dl *d = arg;
    size_t n = size * nmemb;
    long status = 0;
    curl_easy_getinfo(d->easy, CURLINFO_RESPONSE_CODE, &status);
    /* An error body (Kaphila's JSON) is read and dropped; only a 2xx body
     * is the recording. */
    if (status / 100 != 2) return n;
    if (d->written + n > (uint64_t)REC_MAX_BRIDGE_BYTES || !write_all(d->fd, p, n)) {
        d->write_failed = true;
        return 0;   /* aborts the transfer */
    }
    d->written += n;
    return n;
}

/* attempt: the 0-based number of the attempt to make. The timer's argument is the id of one of the call's recordings and
 * the attempt number packed into the pointer value itself: nothing is
 * allocated, so a timer the loop drops at shutdown leaks nothing. */
static void on_retry(loop *l, void *arg)
{
    engine *e = loop_ctx(l);   /* the engine's loop carries the engine */
    intptr_t v = (intptr_t)arg;
    rec_row r;
    if (rec_db_get_id(engine_db(e), (int64_t)(v / REC_DOWNLOAD_ATTEMPTS), &r) != STORE_OK) return;
    log_context(NULL, r.account_sid, r.call_sid);
    kick(e, r.call_sid, (int)(v % REC_DOWNLOAD_ATTEMPTS));
    rec_row_fini(&r);
    log_context_clear();
}

static void schedule_retry(engine *e, const char *call_sid, int attempt)
{
    call_recs cr;
    if (attempt < 1 || attempt >= REC_DOWNLOAD_ATTEMPTS || !load(e, call_sid, &cr)) return;
    for (int i = 0; i < cr.n; i++) {
        if (!pending(&cr.rows[i], true)) continue;
        if (!loop_timer_add(engine_loop(e), retry_delay_ms[attempt - 1], on_retry,
                            (void *)(intptr_t)(cr.rows[i].id * REC_DOWNLOAD_ATTEMPTS + attempt)))
            log_warn("recordings", "cannot schedule a download retry");
        break;
    }
    unload(&cr);
}

/* Every waiting row of the call becomes absent: Kaphila has no file. */
static void all_absent(engine *e, const char *call_sid, int code, const char *why)
{
    call_recs cr;
    bool *dirty = NULL;
    const char **whys = NULL;
    int64_t now = timefmt_now_ms();
    if (!load(e, call_sid, &cr)) return;
    if (!cr.n || !(dirty = calloc((size_t)cr.n, sizeof *dirty)) ||
        !(whys = calloc((size_t)cr.n, sizeof *whys)))
        goto out;
    bool final = bridge_final(&cr.call, cr.rows, cr.n);
    for (int i = 0; i < cr.n; i++) {
        if (!pending(&cr.rows[i], final)) continue;
        make_absent(&cr.rows[i], code, now);
        dirty[i] = true;
        whys[i] = why;
    }
    save(e, cr.rows, cr.n, dirty, true, whys);
out:
    free(whys);
    free(dirty);
    unload(&cr);
}

static void on_download(loop *l, CURL *easy, CURLcode rc, void *arg)
{
    (void)l;
    dl *d = arg;
    engine *e = d->e;
    long status = 0;
    rec_job *j = d->job;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(easy);
    curl_slist_free_all(d->headers);
    close(d->fd);
    log_context(NULL, d->account_sid, d->call_sid);

    if (rc == CURLE_ABORTED_BY_CALLBACK) {
        /* twigate is stopping: leave everything as it is for the next start. */
        unlink(d->part);
        if (j) job_reply_error(j, 20503, 503, "twigate is stopping; retry the download");
        goto out;
    }
    if (rc == CURLE_OK && status / 100 == 2 && !d->write_failed) {
        if (rename(d->part, d->path) != 0) {
            log_error("recordings", "cannot rename %s: %s", d->part, strerror(errno));
            unlink(d->part);
            if (j) job_reply_error(j, 20500, 500, "The recording could not be stored");
            goto out;
        }
        log_info("recordings", "bridge recording downloaded (%llu bytes)",
                 (unsigned long long)d->written);
        /* The cuts run on the bio thread; the pass answers j and collects
         * the bridge when it is done. */
        if (!finalize(e, d->call_sid, FIN_SETTLE, NULL, j) && j)
            job_reply_error(j, 20503, 503, "The recording is being prepared; retry");
        goto out;
    }
    unlink(d->part);
    if (rc == CURLE_OK && status == 404) {
        all_absent(e, d->call_sid, REC_ERR_NO_FILE,
                   "Kaphila has no recording file for this call (download answered 404)");
        if (j) ensure(e, j, false);
        goto out;
    }
    {
        char msg[256];
        if (d->write_failed)
            snprintf(msg, sizeof msg, "the recording could not be written to the cache"
                     " (disk full, or larger than %lld bytes)", (long long)REC_MAX_BRIDGE_BYTES);
        else if (rc != CURLE_OK)
            snprintf(msg, sizeof msg, "Kaphila is unreachable (%s)", curl_easy_strerror(rc));
        else
            snprintf(msg, sizeof msg, "Kaphila answered HTTP %ld to the recording download", status);
        log_warn("recordings", "bridge download failed (attempt %d): %s", d->attempt + 1, msg);
        if (j) job_reply_error(j, 20503, 503, msg);
        schedule_retry(e, d->call_sid, d->attempt + 1);
    }
out:
    free(d);
    log_context_clear();
}

/* Kaphila's path for the call's file: by file name when an event named it
 * (outlives Kaphila's memory of the call), else by callId. */
static bool source_path(const call_recs *cr, char *out, size_t n)
{
    const char *name = NULL, *kid = cr->call.kaphila_id;
    for (int i = 0; i < cr->n && !name; i++)
        if (cr->rows[i].filename[0]) name = cr->rows[i].filename;
    for (int i = 0; i < cr->n && !kid[0]; i++) kid = cr->rows[i].kaphila_call_id;
    if (name) {
        /* Only names Kaphila's file endpoint accepts, and that need no
         * escaping in a path segment. */
        size_t len = strlen(name);
        bool ok = len > 4 && !strcmp(name + len - 4, ".wav") && name[0] != '.';
        for (const char *p = name; ok && *p; p++)
            ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                 (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.';
        if (ok && !strstr(name, "..")) {
            snprintf(out, n, "/recordings/file/%s/download", name);
            return true;
        }
    }
    if (!kid[0]) return false;
    for (const char *p = kid; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return false;
    snprintf(out, n, "/recordings/%s/download", kid);
    return true;
}

/* Claims "<path>.part" for one transfer. 1 claimed (fd set), 0 another
 * transfer holds it, -1 error. */
static int claim(const char *part, int *fd)
{
    for (int tries = 0; tries < 2; tries++) {
        struct stat st;
        *fd = open(part, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (*fd >= 0) return 1;
        if (errno != EEXIST) {
            log_error("recordings", "cannot create %s: %s", part, strerror(errno));
            return -1;
        }
        if (stat(part, &st) != 0) continue;   /* just finished: try again */
        if (timefmt_now_ms() - (int64_t)st.st_mtime * 1000 < REC_PART_STALE_MS) return 0;
        log_warn("recordings", "removing a stale partial download %s", part);
        unlink(part);
    }
    return 0;
}

static fetch_result start_fetch(engine *e, const call_recs *cr, rec_job *j, int attempt)
{
    const config *cfg = engine_config(e);
    const config_account *acct = config_account_by_sid(cfg, cr->call.account_sid);
    char src[REC_FILENAME_LEN + 64], url[1024], auth[600];
    dl *d = NULL;
    long low_s;
    if (!acct) return FETCH_ERROR;
    if (!source_path(cr, src, sizeof src)) return FETCH_NO_SOURCE;
    if (!mkdir_cache(e) || !(d = calloc(1, sizeof *d))) goto fail;
    d->e = e;
    d->fd = -1;
    d->attempt = attempt;
    snprintf(d->call_sid, sizeof d->call_sid, "%s", cr->call.sid);
    snprintf(d->account_sid, sizeof d->account_sid, "%s", cr->call.account_sid);
    if (!rec_bridge_path(cfg, cr->call.sid, d->path)) goto fail;
    snprintf(d->part, sizeof d->part, "%s.part", d->path);
    switch (claim(d->part, &d->fd)) {
    case 0: free(d); return FETCH_BUSY;
    case -1: goto fail;
    default: break;
    }
    snprintf(url, sizeof url, "%s%s", engine_kaphila_url(e), src);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", acct->kaphila_key);
    d->headers = curl_slist_append(NULL, auth);
    memset(auth, 0, sizeof auth);
    if (d->headers) d->headers = curl_slist_append(d->headers, "Accept: audio/wav");
    if (!d->headers || !(d->easy = curl_easy_init())) goto fail_claimed;
    /* No total timeout: a long recording takes as long as it takes; a
     * stalled one is cut off by the low-speed limit instead. */
    low_s = cfg->kaphila_timeout_ms / 1000 > 5 ? cfg->kaphila_timeout_ms / 1000 : 5;
    curl_easy_setopt(d->easy, CURLOPT_URL, url);
    curl_easy_setopt(d->easy, CURLOPT_HTTPHEADER, d->headers);
    curl_easy_setopt(d->easy, CURLOPT_USERAGENT, "twigate/1.0");
    curl_easy_setopt(d->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->kaphila_connect_ms);
    curl_easy_setopt(d->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(d->easy, CURLOPT_LOW_SPEED_TIME, low_s);
    curl_easy_setopt(d->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(d->easy, CURLOPT_WRITEDATA, d);
    curl_easy_setopt(d->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(d->easy, CURLOPT_NOSIGNAL, 1L);
    if (loop_http_start(engine_loop(e), d->easy, on_download, d) != 0) goto fail_claimed;
    d->job = j;
    log_context(NULL, d->account_sid, d->call_sid);
    log_info("recordings", "downloading the bridge recording from Kaphila (%s)", src);
    return FETCH_STARTED;
fail_claimed:
    close(d->fd);
    unlink(d->part);
    curl_easy_cleanup(d->easy);
    curl_slist_free_all(d->headers);
fail:
    free(d);
    return FETCH_ERROR;
}

/* Background: if the call's file is final and recordings wait for it, get
 * it (or finish from the cache). */
static void kick(engine *e, const char *call_sid, int attempt)
{
    call_recs cr;
    char path[PATH_MAX];
    bool any = false;
    if (!load(e, call_sid, &cr)) return;
    bool final = bridge_final(&cr.call, cr.rows, cr.n);
    for (int i = 0; i < cr.n && final; i++) any = any || pending(&cr.rows[i], true);
    if (!any) goto out;
    if (rec_bridge_path(engine_config(e), call_sid, path) && access(path, F_OK) == 0) {
        (void)finalize(e, call_sid, FIN_SETTLE, NULL, NULL);   /* logs its own failure */
        goto out;
    }
    switch (start_fetch(e, &cr, NULL, attempt)) {
    case FETCH_NO_SOURCE:
        all_absent(e, call_sid, REC_ERR_NO_FILE, "Kaphila never named a recording for this call");
        break;
    case FETCH_ERROR:
        schedule_retry(e, call_sid, attempt + 1);
        break;
    default:
        break;   /* started, or another transfer is on it and will finalise */
    }
out:
    unload(&cr);
}

void rec_recover(engine *e)
{
    char (*sids)[SID_SIZE] = calloc(REC_RECOVER_MAX, SID_SIZE);
    int n = 0;
    if (!sids) return;
    if (rec_db_pending_calls(engine_db(e), sids, REC_RECOVER_MAX, &n) != STORE_OK)
        log_error("recordings", "cannot list recordings waiting for media");
    for (int i = 0; i < n; i++) {
        log_context(NULL, NULL, sids[i]);
        kick(e, sids[i], 0);
    }
    if (n) log_info("recordings", "resumed %d call(s) with recordings waiting for media", n);
    log_context_clear();
    free(sids);
}

/* ================================================================ 4 */

/* File work — opening the bridge, cutting windows, deleting files — runs on
 * the engine's bio thread (net/bio.h), never on the engine thread: a bridge
 * file can be 2 GiB and every call would wait for the copy. A pass is
 * decided here (which windows, where to), cut there, and settled back here
 * (fin_done), where the rows change. bio runs one job at a time, so two
 * passes over the same files never overlap. */

typedef struct bridge {
    int           fd;
    uint64_t      size;
    unsigned char hdr[REC_WAV_HEADER_MAX];
    bool          wav_ok;
    rec_wav       w;
} bridge;

/* bio thread. */
static bool bridge_open(const char *path, bridge *b)
{
    struct stat st;
    ssize_t got;
    b->fd = -1;
    b->wav_ok = false;
    b->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (b->fd < 0) return false;
    if (fstat(b->fd, &st) != 0) {
        close(b->fd);
        b->fd = -1;
        return false;
    }
    b->size = (uint64_t)st.st_size;
    got = pread(b->fd, b->hdr, sizeof b->hdr, 0);
    b->wav_ok = got > 0 && rec_wav_parse(b->hdr, (size_t)got, b->size, &b->w) == 0;
    return true;
}

static void bridge_close(bridge *b)
{
    if (b->fd >= 0) close(b->fd);
    b->fd = -1;
}

/* bio thread only: the check that keeps copies off the engine thread. */
static bool copy_range(int in, uint64_t off, uint64_t len, int out)
{
    loff_t o = (loff_t)off;
    char *cbuf = NULL;
    bool ok = true;
    assert(bio_on_thread());
    while (len) {
        ssize_t n = copy_file_range(in, &o, out, NULL, len, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;   /* not supported here (EXDEV, ENOSYS …): fall back below */
        len -= (uint64_t)n;
    }
    if (len && !(cbuf = malloc(REC_COPY_BUF))) return false;
    while (ok && len) {
        ssize_t n = pread(in, cbuf, len < REC_COPY_BUF ? (size_t)len : REC_COPY_BUF, (off_t)o);
        if (n < 0 && errno == EINTR) continue;
        ok = n > 0 && write_all(out, cbuf, (size_t)n);
        if (ok) { o += n; len -= (uint64_t)n; }
    }
    free(cbuf);
    return ok;
}

/* bio thread. Cuts [offset_ms, offset_ms + window_ms) out of the bridge
 * into path. Returns the milliseconds of audio written (0: the window holds
 * no audio, no file made), or -1 on an I/O error. */
static int64_t cut_window(const bridge *b, int64_t offset_ms, int64_t window_ms, const char *path)
{
    char part[PATH_MAX + 8];
    unsigned char head[REC_WAV_OUT_HEADER_MAX];
    uint64_t off, len;
    size_t hl;
    int fd;
    bool ok;
    rec_wav_window(&b->w, offset_ms, window_ms, &off, &len);
    if (!len) return 0;
    hl = rec_wav_header(b->hdr + b->w.fmt_off, b->w.fmt_len, len, head);
    if (!hl) return -1;
    snprintf(part, sizeof part, "%s.part", path);
    fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        log_error("recordings", "cannot create %s: %s", part, strerror(errno));
        return -1;
    }
    ok = write_all(fd, head, hl) && copy_range(b->fd, off, len, fd) &&
         (!(len & 1) || write_all(fd, "", 1));   /* RIFF pad byte */
    if (close(fd) != 0) ok = false;
    if (!ok || rename(part, path) != 0) {
        log_error("recordings", "cannot write %s: %s", path, strerror(errno));
        unlink(part);
        return -1;
    }
    return rec_wav_ms(&b->w, len);
}

/* One window of a pass: decided on the engine thread, cut on bio. */
typedef struct fin_cut {
    int64_t id;                   /* the row */
    int64_t offset_ms, window_ms; /* as cut; the row must still say so */
    char    path[PATH_MAX];       /* its media file */
    int64_t ms;                   /* bio's result: audio written, 0 none, -1 I/O error */
} fin_cut;

/* A pass over one call's bridge file. FIN_SETTLE: every recording waiting
 * for the file becomes completed or absent. FIN_RECUT: one completed
 * window whose cut file is gone (cache cleared) is cut again. Either way j,
 * a suspended media request, is answered when the pass is done. */
typedef struct fin_job {
    engine  *e;
    fin_kind kind;
    char     call_sid[SID_SIZE];
    char     account_sid[SID_SIZE];
    char     bridge[PATH_MAX];
    rec_job *j;
    int      n;
    fin_cut *cuts;
    bool     opened, wav_ok;      /* bio's results */
    rec_wav  w;
} fin_job;

static void fin_free(fin_job *f)
{
    free(f->cuts);
    free(f);
}

static void fin_done(engine *e, void *arg);

/* bio thread: stopping before the pass ran, or its completion could not be
 * posted. The rows stay as they were (the next start's recovery, or the
 * next media request, finishes them). */
static void fin_cancel(void *arg)
{
    fin_job *f = arg;
    if (f->j) job_reply_error(f->j, 20503, 503, "twigate is stopping; retry");
    fin_free(f);
}

static void fin_run(void *arg)
{
    fin_job *f = arg;
    bridge b;
    if (bridge_open(f->bridge, &b)) {
        f->opened = true;
        f->wav_ok = b.wav_ok;
        f->w = b.w;
        for (int i = 0; i < f->n; i++) {
            fin_cut *c = &f->cuts[i];
            c->ms = b.wav_ok ? cut_window(&b, c->offset_ms, c->window_ms, c->path) : -1;
            /* A window that lies (mostly) past the file's end is too short
             * to keep: settling makes it absent. */
            if (f->kind == FIN_SETTLE && c->ms > 0 && c->ms < REC_MIN_WINDOW_MS) unlink(c->path);
        }
        bridge_close(&b);
    }
    if (!engine_submit(f->e, fin_done, f)) fin_cancel(f);
}

/* A window still open when the bridge ended closes at its end. */
static void close_window(rec_row *r, int64_t end_ms)
{
    if (r->window_ms >= 0) return;
    r->window_ms = end_ms > r->offset_ms ? end_ms - r->offset_ms : 0;
    r->duration = rec_duration_s(r->window_ms);
}

/* Starts a pass (engine thread). recut: the row of FIN_RECUT. On true the
 * pass owns j and answers it; on false (nothing to open, queue full,
 * stopping, out of memory) nothing happened and the caller keeps j. */
static bool finalize(engine *e, const char *call_sid, fin_kind kind, const rec_row *recut,
                     rec_job *j)
{
    const config *cfg = engine_config(e);
    call_recs cr;
    fin_job *f = NULL;
    bool ok = false;
    if (!load(e, call_sid, &cr)) return false;
    if (!cr.n || !(f = calloc(1, sizeof *f)) ||
        !(f->cuts = calloc((size_t)cr.n, sizeof *f->cuts)) ||
        !rec_bridge_path(cfg, call_sid, f->bridge))
        goto out;
    f->e = e;
    f->kind = kind;
    f->j = j;
    snprintf(f->call_sid, sizeof f->call_sid, "%s", call_sid);
    snprintf(f->account_sid, sizeof f->account_sid, "%s", cr.call.account_sid);
    bool final = bridge_final(&cr.call, cr.rows, cr.n);
    int64_t end = bridge_end_ms(&cr.call, cr.rows, cr.n);
    for (int i = 0; i < cr.n; i++) {
        rec_row *r = &cr.rows[i];
        if (kind == FIN_RECUT ? r->id != recut->id
                              : !pending(r, final) || !rec_is_window(r))
            continue;
        close_window(r, end);
        if (r->window_ms < REC_MIN_WINDOW_MS) continue;   /* settles as too short, uncut */
        fin_cut *c = &f->cuts[f->n];
        if (!rec_media_path(cfg, r, c->path)) continue;    /* settles as an I/O error */
        c->id = r->id;
        c->offset_ms = r->offset_ms;
        c->window_ms = r->window_ms;
        f->n++;
    }
    ok = bio_submit(engine_bio(e), fin_run, fin_cancel, f);
    if (!ok) log_warn("recordings", "the file worker is busy or stopping; recordings stay pending");
out:
    if (!ok && f) fin_free(f);
    unload(&cr);
    return ok;
}

/* The cut made for r in this pass: its result, or -1 when the pass did not
 * cut r as it stands now (the row changed meanwhile: it stays pending). */
static int64_t cut_result(const fin_job *f, const rec_row *r)
{
    for (int i = 0; i < f->n; i++)
        if (f->cuts[i].id == r->id)
            return f->cuts[i].offset_ms == r->offset_ms && f->cuts[i].window_ms == r->window_ms
                       ? f->cuts[i].ms : -1;
    return -1;
}

/* One waiting row against the pass's results: completed or absent.
 * Returns false on an I/O error (the row stays as it was; a later request
 * retries). */
static bool settle(const fin_job *f, rec_row *r, int64_t end_ms, int64_t now, const char **why)
{
    if (!f->wav_ok) {
        make_absent(r, REC_ERR_BAD_FILE, now);
        *why = "Kaphila's recording file is not a WAV file twigate can read";
        return true;
    }
    r->channels = (int)f->w.channels;
    if (!rec_is_window(r)) {
        if (!f->w.data_len) {
            make_absent(r, REC_ERR_TOO_SHORT, now);
            *why = "Kaphila's recording holds no audio";
            return true;
        }
        if (r->duration < 0) r->duration = rec_duration_s(rec_wav_ms(&f->w, f->w.data_len));
        set_status(r, "completed", now);
        return true;
    }
    close_window(r, end_ms);
    int64_t ms = r->window_ms < REC_MIN_WINDOW_MS ? 0 : cut_result(f, r);
    if (ms < 0) return false;
    if (ms < REC_MIN_WINDOW_MS) {
        make_absent(r, REC_ERR_TOO_SHORT, now);   /* the window lies past the file's end */
        return true;
    }
    r->duration = rec_duration_s(ms);
    set_status(r, "completed", now);
    return true;
}

static void fin_settle(engine *e, const fin_job *f)
{
    call_recs cr;
    bool *dirty = NULL;
    const char **whys = NULL;
    int64_t now = timefmt_now_ms(), end;
    if (!load(e, f->call_sid, &cr)) return;
    if (!cr.n || !(dirty = calloc((size_t)cr.n, sizeof *dirty)) ||
        !(whys = calloc((size_t)cr.n, sizeof *whys)))
        goto out;
    bool final = bridge_final(&cr.call, cr.rows, cr.n);
    end = bridge_end_ms(&cr.call, cr.rows, cr.n);
    for (int i = 0; i < cr.n; i++)
        if (pending(&cr.rows[i], final))
            dirty[i] = settle(f, &cr.rows[i], end, now, &whys[i]);
    save(e, cr.rows, cr.n, dirty, true, whys);
out:
    free(whys);
    free(dirty);
    unload(&cr);
}

static bool serve(engine *e, rec_job *j, const rec_row *r, const char *path);
static bool job_row(engine *e, rec_job *j, rec_row *out);

/* The media request that waited for a pass, answered from its outcome. */
static void fin_answer(engine *e, const fin_job *f, rec_job *j)
{
    rec_row r;
    char path[PATH_MAX], msg[320];
    if (!job_row(e, j, &r)) return;
    if (!rec_media_path(engine_config(e), &r, path)) {
        job_reply_error(j, 20500, 500, "The recording's cache path is too long");
    } else if (status_is(&r, "completed") && serve(e, j, &r, path)) {
        /* answered */
    } else if (status_is(&r, "absent")) {
        snprintf(msg, sizeof msg, "The recording %s is absent (error %d): there is no media",
                 r.sid, r.error_code);
        job_reply_error(j, 20404, 404, msg);
    } else if (f->kind == FIN_RECUT) {
        job_reply_error(j, 20500, 500, "The recording could not be cut from the call's"
                        " recording");
    } else {
        job_reply_error(j, 20500, 500, "The recording could not be prepared from the call's"
                        " recording");
    }
    rec_row_fini(&r);
}

/* Engine thread: the pass's files are done; the rows change here. */
static void fin_done(engine *e, void *arg)
{
    fin_job *f = arg;
    log_context(NULL, f->account_sid, f->call_sid);
    if (f->kind == FIN_SETTLE && f->opened) fin_settle(e, f);
    if (f->j) fin_answer(e, f, f->j);
    gc_bridge(e, f->call_sid);
    fin_free(f);
    log_context_clear();
}

/* The bridge file is kept while it is some recording's media (Record=true)
 * or a window still has to be cut from it; windows already cut are served
 * from their own files. */
static void gc_bridge(engine *e, const char *call_sid)
{
    call_recs cr;
    char path[PATH_MAX];
    bool needed = false;
    if (!load(e, call_sid, &cr)) return;
    bool final = bridge_final(&cr.call, cr.rows, cr.n);
    for (int i = 0; i < cr.n && !needed; i++) {
        const rec_row *r = &cr.rows[i];
        if (r->deleted) continue;
        needed = (!rec_is_window(r) && !status_is(r, "absent")) || pending(r, final);
    }
    if (!needed && rec_bridge_path(engine_config(e), call_sid, path)) unlink(path);
    unload(&cr);
}

/* ================================================================ 5 */

void rec_job_free(rec_job *j)
{
    if (!j) return;
    json_decref(j->params);
    free(j);
}

static void job_reply_error(rec_job *j, int code, int status, const char *msg)
{
    engine_reply_error(j->r, code, status, msg);
    rec_job_free(j);
}

static void job_reply_row(engine *e, rec_job *j, int status, const rec_row *r)
{
    engine_reply_json(j->r, status, rec_json(r, engine_public_url(e), j->call_sid[0] == '\0'));
    rec_job_free(j);
}

static void not_found(rec_job *j)
{
    char msg[256];
    if (j->call_sid[0])
        snprintf(msg, sizeof msg, "The requested resource /2010-04-01/Accounts/%s/Calls/%s/"
                 "Recordings/%s.json was not found", j->account_sid, j->call_sid,
                 j->sid[0] ? j->sid : "Twilio.CURRENT");
    else
        snprintf(msg, sizeof msg, "The requested resource /2010-04-01/Accounts/%s/Recordings/%s"
                 " was not found", j->account_sid, j->sid);
    job_reply_error(j, 20404, 404, msg);
}

/* The job's recording, checked against its account (and call, for
 * call-level routes); replies 404 itself. */
static bool job_row(engine *e, rec_job *j, rec_row *out)
{
    store_status s = rec_db_get(engine_db(e), j->account_sid, j->sid, out);
    if (s == STORE_OK && !out->deleted && (!j->call_sid[0] || !strcmp(out->call_sid, j->call_sid)))
        return true;
    if (s == STORE_OK) rec_row_fini(out);
    if (s == STORE_OK || s == STORE_NOTFOUND) not_found(j);
    else job_reply_error(j, 20503, 503, NULL);
    return false;
}

/* Answers the media job from the recording's WAV at path: the file itself,
 * or for .mp3 a hand-over to the encoder thread (which replies). Frees j
 * when it answers true; false, with nothing done, when the WAV is not
 * there. */
static bool serve(engine *e, rec_job *j, const rec_row *r, const char *path)
{
    char mp3[PATH_MAX];
    const char *range = j->range[0] ? j->range : NULL;
    if (!j->mp3) {
        if (!engine_reply_file(j->r, path, range, REC_WAV_TYPE)) return false;
    } else {
        if (access(path, R_OK) != 0) return false;
        if (!rec_mp3_path(engine_config(e), r, mp3))
            engine_reply_error(j->r, 20500, 500, "The recording's cache path is too long");
        else if (!rec_mp3_submit(j->mp3, j->r, j->account_sid, path, mp3, range))
            engine_reply_error_h(j->r, 20503, 503, "Too many MP3 encodings waiting; retry",
                               (const char *const[]){"Retry-After", "1", NULL});
    }
    rec_job_free(j);
    return true;
}

/* Media: serve from the cache, producing the file first if it is due. */
static void ensure(engine *e, rec_job *j, bool may_fetch)
{
    rec_row r;
    call_recs cr = {0};
    char path[PATH_MAX], msg[320];
    bool have_cr = false;
    if (!job_row(e, j, &r)) return;
    if (status_is(&r, "absent")) {
        snprintf(msg, sizeof msg, "The recording %s is absent (error %d): there is no media",
                 r.sid, r.error_code);
        job_reply_error(j, 20404, 404, msg);
        goto out;
    }
    if (!rec_media_path(engine_config(e), &r, path)) {
        job_reply_error(j, 20500, 500, "The recording's cache path is too long");
        goto out;
    }
    if (status_is(&r, "completed") && serve(e, j, &r, path)) goto out;
    if (!(have_cr = load(e, r.call_sid, &cr))) {
        job_reply_error(j, 20503, 503, NULL);
        goto out;
    }
    if (!bridge_final(&cr.call, cr.rows, cr.n)) {
        snprintf(msg, sizeof msg, "The recording %s is %s: its media is not available yet."
                 " Kaphila finishes the call's recording when the call ends (or when the"
                 " Record=true recording is stopped)", r.sid, r.status);
        job_reply_error(j, 20404, 404, msg);
        goto out;
    }
    char bridge_path[PATH_MAX];
    if (rec_bridge_path(engine_config(e), r.call_sid, bridge_path) &&
        access(bridge_path, F_OK) == 0) {
        /* A completed window whose cut file is gone (cache cleared) is cut
         * again; anything else waiting is settled. Both on the bio thread,
         * which answers j when done. */
        bool recut = status_is(&r, "completed") && rec_is_window(&r);
        if (!finalize(e, r.call_sid, recut ? FIN_RECUT : FIN_SETTLE, &r, j))
            job_reply_error(j, 20503, 503, "The recording is being prepared; retry");
        goto out;
    }
    if (!may_fetch) {
        job_reply_error(j, 20503, 503, "The recording is not in the cache; retry");
        goto out;
    }
    switch (start_fetch(e, &cr, j, 0)) {
    case FETCH_STARTED:
        break;   /* on_download answers */
    case FETCH_BUSY:
        /* Another request or the background fetch is downloading it: one
         * transfer per file. The file is there in moments. */
        engine_reply_error_h(j->r, 20503, 503, "The recording is being fetched from Kaphila;"
                           " retry in a second", (const char *const[]){"Retry-After", "1", NULL});
        rec_job_free(j);
        break;
    case FETCH_NO_SOURCE:
        all_absent(e, r.call_sid, REC_ERR_NO_FILE, "Kaphila never named a recording for this call");
        job_reply_error(j, 20404, 404, "The recording is absent: Kaphila has no file for this call");
        break;
    case FETCH_ERROR:
        job_reply_error(j, 20500, 500, "The recording download could not be started");
        break;
    }
out:
    rec_row_fini(&r);
    if (have_cr) unload(&cr);
}

/* The call of a call-level job, in the job's account; replies 404 itself. */
static bool job_call(engine *e, rec_job *j, call_recs *cr)
{
    memset(cr, 0, sizeof *cr);
    if (store_call_get(engine_db(e), j->account_sid, j->call_sid, &cr->call) != STORE_OK) {
        char msg[192];
        snprintf(msg, sizeof msg, "The requested resource /2010-04-01/Accounts/%s/Calls/%s.json"
                 " was not found", j->account_sid, j->call_sid);
        job_reply_error(j, 20404, 404, msg);
        return false;
    }
    if (rec_db_for_call(engine_db(e), j->call_sid, &cr->rows, &cr->n) != STORE_OK) {
        store_call_fini(&cr->call);
        job_reply_error(j, 20503, 503, NULL);
        return false;
    }
    return true;
}

/* POST …/Calls/{CA}/Recordings.json: Kaphila cannot start a recording, but
 * it records the whole bridge from the answer, so a recording "from now"
 * is a window that opens now (docs/recordings.md). */
static void do_create(engine *e, rec_job *j)
{
    call_recs cr;
    rec_row r = {0};
    int64_t now = timefmt_now_ms();
    char msg[320];
    if (!job_call(e, j, &cr)) return;
    if (strcmp(cr.call.status, "in-progress") != 0 || !cr.call.answered_at) {
        snprintf(msg, sizeof msg, "Invalid call state: the call is %s; only a call in progress"
                 " can be recorded", cr.call.status);
        job_reply_error(j, 21220, 400, msg);
        goto out;
    }
    if (bridge_final(&cr.call, cr.rows, cr.n)) {
        job_reply_error(j, 21220, 400, "Invalid call state: this call's recording was stopped"
                        " (Status=stopped on its Record=true recording), and Kaphila cannot"
                        " start recording a call again");
        goto out;
    }
    if (cr.n >= REC_MAX_PER_CALL) {
        snprintf(msg, sizeof msg, "This call already has %d recordings, twigate's limit",
                 REC_MAX_PER_CALL);
        job_reply_error(j, 20429, 429, msg);
        goto out;
    }
    if (!sid_new("RE", r.sid)) {
        job_reply_error(j, 20500, 500, NULL);
        goto out;
    }
    snprintf(r.account_sid, sizeof r.account_sid, "%s", j->account_sid);
    snprintf(r.call_sid, sizeof r.call_sid, "%s", j->call_sid);
    snprintf(r.source, sizeof r.source, "StartCallRecordingAPI");
    snprintf(r.status, sizeof r.status, "in-progress");
    r.channels = 1;
    snprintf(r.track, sizeof r.track, "both");
    r.offset_ms = now > cr.call.answered_at ? now - cr.call.answered_at : 0;
    r.window_ms = -1;
    r.start_time = r.date_created = r.date_updated = now;
    r.duration = -1;
    snprintf(r.kaphila_call_id, sizeof r.kaphila_call_id, "%s", cr.call.kaphila_id);
    set_callback(&r, j->params);
    if (rec_db_insert(engine_db(e), &r) != STORE_OK) {
        job_reply_error(j, 20503, 503, NULL);
        goto out;
    }
    log_info("recordings", "%s started by the REST API at %lld ms into the call", r.sid,
             (long long)r.offset_ms);
    job_reply_row(e, j, 201, &r);
    send_callback(e, &r);
out:
    rec_row_fini(&r);
    unload(&cr);
}

typedef struct stop_ctx {
    engine  *e;
    rec_job *j;
} stop_ctx;

/* Marks the whole-bridge recording stopped after Kaphila's stop, replies,
 * and lets the windows end with the bridge. */
static void on_stop(loop *l, void *arg, const kaphila_result *res)
{
    (void)l;
    stop_ctx *s = arg;
    engine *e = s->e;
    rec_job *j = s->j;
    rec_row r;
    store_call crow = {0};
    char call_sid[SID_SIZE];
    bool ended = false, have_call;
    free(s);
    log_context(NULL, j->account_sid, j->call_sid);
    if (res->curl_rc == CURLE_ABORTED_BY_CALLBACK) {
        job_reply_error(j, 20503, 503, "twigate is stopping");
        return;
    }
    /* 404: Kaphila has no active recording — the bridge already ended,
     * which is what was asked. */
    if (!kaphila_ok(res) && res->http_status != 404) {
        int code, status;
        char msg[400];
        kaphila_twilio_error(res, &code, &status, msg, sizeof msg);
        job_reply_error(j, code, status, msg);
        return;
    }
    if (!job_row(e, j, &r)) return;
    snprintf(call_sid, sizeof call_sid, "%s", r.call_sid);
    if (status_is(&r, "in-progress")) {
        int64_t now = timefmt_now_ms();
        have_call = store_call_get_by_sid(engine_db(e), r.call_sid, &crow) == STORE_OK;
        if (have_call && crow.answered_at) r.window_ms = now - crow.answered_at;
        ended = have_call && !store_status_live(crow.status);
        r.duration = rec_duration_s(r.window_ms);
        set_status(&r, "stopped", now);
        if (rec_db_update(engine_db(e), &r) != STORE_OK) {
            job_reply_error(j, 20503, 503, NULL);
            goto out;
        }
    }
    /* The answer to Status=stopped is "stopped", even when Kaphila's
     * recording.stopped overtook this reply and already moved it on. */
    if (status_is(&r, "processing")) snprintf(r.status, sizeof r.status, "stopped");
    job_reply_row(e, j, 200, &r);
    bridge_event(e, call_sid, NULL, NULL, -1, true);
    /* The file is final when Kaphila reports recording.completed; if it
     * had nothing active to stop, it already was. */
    if (ended || res->http_status == 404) kick(e, call_sid, 0);
out:
    store_call_fini(&crow);
    rec_row_fini(&r);
}

static void do_update(engine *e, rec_job *j)
{
    call_recs cr;
    rec_row r = {0};
    const char *want = json_string_value(json_object_get(j->params, "status"));
    char msg[320];
    int64_t now = timefmt_now_ms();
    bool have_row = false;
    if (!job_call(e, j, &cr)) return;
    if (!j->sid[0]) {
        /* Twilio.CURRENT: the newest recording still in progress. */
        for (int i = cr.n - 1; i >= 0 && !j->sid[0]; i--)
            if (!cr.rows[i].deleted && status_is(&cr.rows[i], "in-progress"))
                snprintf(j->sid, sizeof j->sid, "%s", cr.rows[i].sid);
        if (!j->sid[0]) {
            job_reply_error(j, 20404, 404, "This call has no recording in progress"
                            " (Twilio.CURRENT)");
            goto out;
        }
    }
    if (!(have_row = job_row(e, j, &r))) goto out;
    if (!want) want = "";
    if (!strcmp(want, "paused")) {
        job_reply_error(j, 21220, 400, "Kaphila records the call's bridge continuously and"
                        " cannot pause a recording: Status=paused is not supported by twigate"
                        " (Status=stopped is)");
    } else if (!strcmp(want, "in-progress")) {
        if (status_is(&r, "in-progress")) {
            job_reply_row(e, j, 200, &r);   /* resuming a running recording changes nothing */
        } else {
            snprintf(msg, sizeof msg, "Invalid call state: the recording is %s; a recording"
                     " that ended cannot be resumed", r.status);
            job_reply_error(j, 21220, 400, msg);
        }
    } else if (!status_is(&r, "in-progress")) {
        job_reply_row(e, j, 200, &r);   /* stopping an ended recording changes nothing */
    } else if (rec_is_window(&r)) {
        int64_t end = now - cr.call.answered_at;
        r.window_ms = end > r.offset_ms ? end - r.offset_ms : 0;
        r.duration = rec_duration_s(r.window_ms);
        set_status(&r, "stopped", now);
        if (rec_db_update(engine_db(e), &r) != STORE_OK) {
            job_reply_error(j, 20503, 503, NULL);
            goto out;
        }
        job_reply_row(e, j, 200, &r);
        if (bridge_final(&cr.call, cr.rows, cr.n)) kick(e, r.call_sid, 0);
    } else {
        char path[64];
        stop_ctx *s = calloc(1, sizeof *s);
        json_t *body = json_object();
        snprintf(path, sizeof path, "/recordings/%.40s/stop",
                 r.kaphila_call_id[0] ? r.kaphila_call_id : cr.call.kaphila_id);
        if (!s || !body) {
            free(s);
            json_decref(body);
            job_reply_error(j, 20500, 500, NULL);
            goto out;
        }
        s->e = e;
        s->j = j;
        if (engine_kaphila(e, j->account_sid, "POST", path, body, on_stop, s) != 0) {
            free(s);
            job_reply_error(j, 20503, 503, "Kaphila could not be asked to stop the recording");
        }
        json_decref(body);
    }
out:
    if (have_row) rec_row_fini(&r);
    unload(&cr);
}

static void do_delete(engine *e, rec_job *j)
{
    rec_row r;
    char path[PATH_MAX];
    if (!job_row(e, j, &r)) return;
    if (status_is(&r, "in-progress")) {
        job_reply_error(j, 21220, 400, "Invalid call state: the recording is in progress; stop"
                        " it (Status=stopped) or let the call end before deleting it");
        goto out;
    }
    if (rec_db_set_deleted(engine_db(e), r.sid, timefmt_now_ms()) != STORE_OK) {
        job_reply_error(j, 20503, 503, NULL);
        goto out;
    }
    /* The media goes now; Kaphila keeps its own file (it has no delete). */
    if (rec_is_window(&r) && rec_media_path(engine_config(e), &r, path)) unlink(path);
    if (rec_mp3_path(engine_config(e), &r, path)) unlink(path);
    gc_bridge(e, r.call_sid);
    engine_reply_bytes(j->r, 204, NULL, "", 0);
    rec_job_free(j);
out:
    rec_row_fini(&r);
}

static void job_run(engine *e, void *arg)
{
    rec_job *j = arg;
    log_context(NULL, j->account_sid, j->call_sid[0] ? j->call_sid : NULL);
    switch (j->kind) {
    case REC_JOB_MEDIA:  ensure(e, j, true); break;
    case REC_JOB_CREATE: do_create(e, j); break;
    case REC_JOB_UPDATE: do_update(e, j); break;
    case REC_JOB_DELETE: do_delete(e, j); break;
    }
}

bool rec_job_submit(engine *e, rec_job *j)
{
    engine_reply_suspend(j->r);
    return engine_submit(e, job_run, j);
}
