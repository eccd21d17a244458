/* recordings.c — the engine-thread half of recordings.
 *
 * Map (shared internals: recordings_core_int.h):
 *   recordings.c (this file)
 *     1. small helpers: the call's clock, statuses, the recording status
 *        callback (contract §8.6) and notifications;
 *     2. where recordings come from: Record=true (rec_call_answered), <Record>
 *        (call_record_window), and Kaphila's events (rec_kaphila_event), which
 *        close windows when the bridge recording ends;
 *   recordings_fetch.c  3. the bridge file: downloading it from Kaphila into
 *        the cache (one transfer per call, guarded by an exclusive
 *        "<file>.part"), retries;
 *   recordings_cut.c  4. finalising: once the bridge file is here, every
 *        recording waiting for it is cut (windows) or checked (the whole
 *        bridge) and becomes completed or absent, with its callback;
 *   recordings_jobs.c  5. the REST work that changes state (media on demand,
 *        start, stop, delete), handed over by recordings_rest.c as rec_jobs.
 *
 * The life of a recording:
 *   OutboundAPI  in-progress → [stopped] → processing → completed | absent
 *   StartCallRecordingAPI  in-progress → [stopped] → processing → completed | absent
 *   RecordVerb   processing (created when the window closes) → completed | absent
 * "processing" means the window is known but Kaphila's file is not final yet
 * (the bridge is recorded until the call ends or the Record=true recording
 * is stopped); "completed" means the media is in the cache, so the
 * completed callback is only sent when a download would succeed. */
#include "recordings_core_int.h"

/* ================================================================ 1 */

void rec_set_status(rec_row *r, const char *s, int64_t now)
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

void rec_set_callback(rec_row *r, json_t *params)
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
void rec_send_callback(engine *e, const rec_row *r)
{
    int bit = rec_status_is(r, "in-progress") ? REC_EV_IN_PROGRESS
              : rec_status_is(r, "completed") ? REC_EV_COMPLETED
              : rec_status_is(r, "absent") ? REC_EV_ABSENT : 0;
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
void rec_make_absent(rec_row *r, int code, int64_t now)
{
    rec_set_status(r, "absent", now);
    r->error_code = code;
}

bool rec_mkdir_cache(engine *e)
{
    char dir[PATH_MAX];
    if (!rec_cache_dir(engine_config(e), dir)) return false;
    if (mkdir(dir, 0700) == 0 || errno == EEXIST) return true;
    log_error("recordings", "cannot create the cache directory %s: %s", dir, strerror(errno));
    return false;
}

/* A row still waiting for the bridge file. */
bool rec_pending(const rec_row *r, bool final)
{
    if (r->deleted) return false;
    return rec_status_is(r, "processing") || rec_status_is(r, "stopped") ||
           (final && rec_status_is(r, "in-progress"));
}

/* Kaphila's file for the call is complete: the call ended, or the Record=true
 * recording (which is Kaphila's bridge recording) was stopped. */
bool rec_bridge_final(const store_call *cl, const rec_row *rows, int n)
{
    if (!store_status_live(cl->status)) return true;
    for (int i = 0; i < n; i++)
        if (!rec_is_window(&rows[i]) && !rec_status_is(&rows[i], "in-progress")) return true;
    return false;
}

/* Where the bridge recording ended, on the call_answered_ms() clock. */
int64_t rec_bridge_end_ms(const store_call *cl, const rec_row *rows, int n)
{
    if (!cl->answered_at) return 0;
    if (!store_status_live(cl->status) && cl->end_time >= cl->answered_at)
        return cl->end_time - cl->answered_at;
    for (int i = 0; i < n; i++)
        if (!rec_is_window(&rows[i]) && !rec_status_is(&rows[i], "in-progress") &&
            rows[i].window_ms >= 0)
            return rows[i].window_ms;
    return timefmt_now_ms() - cl->answered_at;
}

/* The call's recordings, then the call. false when the call has none —
 * most calls record nothing, and for them this one indexed lookup is all
 * the work there is (the call row is not even read) — or on an error. */
bool rec_load(engine *e, const char *call_sid, call_recs *cr)
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

void rec_unload(call_recs *cr)
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
void rec_save(engine *e, rec_row *rows, int n, const bool *dirty, bool announce,
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
        if (rec_status_is(&rows[i], "absent") && why && why[i]) notify_absent(e, &rows[i], why[i]);
        if (rec_status_is(&rows[i], "completed") || rec_status_is(&rows[i], "absent"))
            rec_send_callback(e, &rows[i]);
    }
}

/* ================================================================ 2 */


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
    rec_set_callback(&r, call_row_params(c));
    if (rec_db_insert(engine_db(e), &r) != STORE_OK) {
        call_notify(c, 20500, 0, "Record=true: the recording could not be stored", NULL, NULL);
        rec_row_fini(&r);
        return;
    }
    call_log(c, "recording/start", json_pack("{s:s,s:s}", "recordingSid", r.sid, "source",
                                            "OutboundAPI"));
    rec_send_callback(e, &r);
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
            !rec_status_is(&rows[i], "absent"))
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
    if (r.window_ms < REC_MIN_WINDOW_MS) rec_make_absent(&r, REC_ERR_TOO_SHORT, now);
    else rec_set_status(&r, "processing", now);
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
        rec_set_status(&ip, "in-progress", now);
        rec_send_callback(e, &ip);
    }
    if (rec_status_is(&r, "absent")) {
        rec_send_callback(e, &r);
    } else if (rec_bridge_final(&c->row, rows, n)) {
        rec_kick(e, call_row_sid(c), 0);   /* the bridge was already stopped: finish now */
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
    end = rec_bridge_end_ms(&cr->call, cr->rows, cr->n);
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
            if (rec_status_is(r, "in-progress") || rec_status_is(r, "stopped")) {
                rec_set_status(r, "processing", now);
                dirty[i] = true;
            }
            if (rec_status_is(r, "processing") && (dur_s >= 0 || r->duration < 0)) {
                r->duration = dur_s >= 0 ? dur_s : rec_duration_s(end);
                dirty[i] = true;
            }
        } else if (rec_status_is(r, "in-progress")) {
            r->window_ms = end > r->offset_ms ? end - r->offset_ms : 0;
            r->duration = rec_duration_s(r->window_ms);
            rec_set_status(r, "processing", now);
            dirty[i] = true;
        } else if (rec_status_is(r, "stopped")) {
            rec_set_status(r, "processing", now);
            dirty[i] = true;
        }
    }
    rec_save(e, cr->rows, cr->n, dirty, false, NULL);
    free(dirty);
}

void rec_bridge_event(engine *e, const char *call_sid, const char *filename,
                      const char *krec, int dur_s, bool ended)
{
    call_recs cr;
    if (!rec_load(e, call_sid, &cr)) return;
    bridge_update(e, &cr, filename, krec, dur_s, ended);
    rec_unload(&cr);
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
    if (!rec_load(e, call_sid, &cr)) return;
    bridge_update(e, &cr, safe_name(json_string_value(json_object_get(rec, "filename"))), krec,
                  json_is_integer(d) ? (int)json_integer_value(d) : -1, ended);
    rec_unload(&cr);
    if (final) rec_kick(e, call_sid, 0);
}

