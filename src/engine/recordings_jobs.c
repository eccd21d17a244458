/* recordings_jobs.c — the REST work that changes state (media on demand,
 * start, stop, delete), handed over by recordings_rest.c as rec_jobs and
 * answered through their engine_reply. Engine thread
 * (recordings_core_int.h). */
#include "recordings_core_int.h"

/* ================================================================ 5 */

void rec_job_free(rec_job *j)
{
    if (!j) return;
    json_decref(j->params);
    free(j);
}

void rec_job_reply_error(rec_job *j, int code, int status, const char *msg)
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
    rec_job_reply_error(j, 20404, 404, msg);
}

/* The job's recording, checked against its account (and call, for
 * call-level routes); replies 404 itself. */
bool rec_job_row(engine *e, rec_job *j, rec_row *out)
{
    store_status s = rec_db_get(engine_db(e), j->account_sid, j->sid, out);
    if (s == STORE_OK && !out->deleted && (!j->call_sid[0] || !strcmp(out->call_sid, j->call_sid)))
        return true;
    if (s == STORE_OK) rec_row_fini(out);
    if (s == STORE_OK || s == STORE_NOTFOUND) not_found(j);
    else rec_job_reply_error(j, 20503, 503, NULL);
    return false;
}

/* Answers the media job from the recording's WAV at path: the file itself,
 * or for .mp3 a hand-over to the encoder thread (which replies). Frees j
 * when it answers true; false, with nothing done, when the WAV is not
 * there. */
bool rec_serve(engine *e, rec_job *j, const rec_row *r, const char *path)
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
/* false, after answering j, when the recording has no media (absent) or
 * its cache path cannot be made; path receives it. */
static bool ensure_has_media(engine *e, rec_job *j, const rec_row *r, char path[PATH_MAX])
{
    char msg[320];

    if (rec_status_is(r, "absent")) {
        snprintf(msg, sizeof msg, "The recording %s is absent (error %d): there is no media",
                 r->sid, r->error_code);
        rec_job_reply_error(j, 20404, 404, msg);
        return false;
    }
    if (!rec_media_path(engine_config(e), r, path)) {
        rec_job_reply_error(j, 20500, 500, "The recording's cache path is too long");
        return false;
    }
    return true;
}

static void ensure_not_final(rec_job *j, const rec_row *r)
{
    char msg[320];

    snprintf(msg, sizeof msg, "The recording %s is %s: its media is not available yet."
             " Kaphila finishes the call's recording when the call ends (or when the"
             " Record=true recording is stopped)", r->sid, r->status);
    rec_job_reply_error(j, 20404, 404, msg);
}

/* The bridge file is in the cache: a completed window whose cut file is
 * gone (cache cleared) is cut again; anything else waiting is settled.
 * Both on the bio thread, which answers j when done. */
static void ensure_finalize(engine *e, rec_job *j, const rec_row *r)
{
    bool recut = rec_status_is(r, "completed") && rec_is_window(r);
    if (!rec_finalize(e, r->call_sid, recut ? FIN_RECUT : FIN_SETTLE, r, j))
        rec_job_reply_error(j, 20503, 503, "The recording is being prepared; retry");
}

/* The bridge file is not here: download it for j (on_download answers),
 * or answer now why not. */
static void ensure_fetch(engine *e, rec_job *j, const rec_row *r, const call_recs *cr)
{
    switch (rec_start_fetch(e, cr, j, 0)) {
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
        rec_all_absent(e, r->call_sid, REC_ERR_NO_FILE, "Kaphila never named a recording for this call");
        rec_job_reply_error(j, 20404, 404, "The recording is absent: Kaphila has no file for this call");
        break;
    case FETCH_ERROR:
        rec_job_reply_error(j, 20500, 500, "The recording download could not be started");
        break;
    }
}

void rec_ensure(engine *e, rec_job *j, bool may_fetch)
{
    rec_row r;
    call_recs cr = {0};
    char path[PATH_MAX], bridge_path[PATH_MAX];
    bool have_cr = false;

    if (!rec_job_row(e, j, &r)) return;
    if (!ensure_has_media(e, j, &r, path)) goto out;
    if (rec_status_is(&r, "completed") && rec_serve(e, j, &r, path)) goto out;
    if (!(have_cr = rec_load(e, r.call_sid, &cr))) {
        rec_job_reply_error(j, 20503, 503, NULL);
        goto out;
    }
    if (!rec_bridge_final(&cr.call, cr.rows, cr.n)) {
        ensure_not_final(j, &r);
        goto out;
    }
    if (rec_bridge_path(engine_config(e), r.call_sid, bridge_path) &&
        access(bridge_path, F_OK) == 0) {
        ensure_finalize(e, j, &r);
        goto out;
    }
    if (!may_fetch) {
        rec_job_reply_error(j, 20503, 503, "The recording is not in the cache; retry");
        goto out;
    }
    ensure_fetch(e, j, &r, &cr);
out:
    rec_row_fini(&r);
    if (have_cr) rec_unload(&cr);
}

/* The call of a call-level job, in the job's account; replies 404 itself. */
static bool job_call(engine *e, rec_job *j, call_recs *cr)
{
    memset(cr, 0, sizeof *cr);
    if (store_call_get(engine_db(e), j->account_sid, j->call_sid, &cr->call) != STORE_OK) {
        char msg[192];
        snprintf(msg, sizeof msg, "The requested resource /2010-04-01/Accounts/%s/Calls/%s.json"
                 " was not found", j->account_sid, j->call_sid);
        rec_job_reply_error(j, 20404, 404, msg);
        return false;
    }
    if (rec_db_for_call(engine_db(e), j->call_sid, &cr->rows, &cr->n) != STORE_OK) {
        store_call_fini(&cr->call);
        rec_job_reply_error(j, 20503, 503, NULL);
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
        rec_job_reply_error(j, 21220, 400, msg);
        goto out;
    }
    if (rec_bridge_final(&cr.call, cr.rows, cr.n)) {
        rec_job_reply_error(j, 21220, 400, "Invalid call state: this call's recording was stopped"
                        " (Status=stopped on its Record=true recording), and Kaphila cannot"
                        " start recording a call again");
        goto out;
    }
    if (cr.n >= REC_MAX_PER_CALL) {
        snprintf(msg, sizeof msg, "This call already has %d recordings, twigate's limit",
                 REC_MAX_PER_CALL);
        rec_job_reply_error(j, 20429, 429, msg);
        goto out;
    }
    if (!sid_new("RE", r.sid)) {
        rec_job_reply_error(j, 20500, 500, NULL);
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
    rec_set_callback(&r, j->params);
    if (rec_db_insert(engine_db(e), &r) != STORE_OK) {
        rec_job_reply_error(j, 20503, 503, NULL);
        goto out;
    }
    log_info("recordings", "%s started by the REST API at %lld ms into the call", r.sid,
             (long long)r.offset_ms);
    job_reply_row(e, j, 201, &r);
    rec_send_callback(e, &r);
out:
    rec_row_fini(&r);
    rec_unload(&cr);
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
        rec_job_reply_error(j, 20503, 503, "twigate is stopping");
        return;
    }
    /* 404: Kaphila has no active recording — the bridge already ended,
     * which is what was asked. */
    if (!kaphila_ok(res) && res->http_status != 404) {
        int code, status;
        char msg[400];
        kaphila_twilio_error(res, &code, &status, msg, sizeof msg);
        rec_job_reply_error(j, code, status, msg);
        return;
    }
    if (!rec_job_row(e, j, &r)) return;
    snprintf(call_sid, sizeof call_sid, "%s", r.call_sid);
    if (rec_status_is(&r, "in-progress")) {
        int64_t now = timefmt_now_ms();
        have_call = store_call_get_by_sid(engine_db(e), r.call_sid, &crow) == STORE_OK;
        if (have_call && crow.answered_at) r.window_ms = now - crow.answered_at;
        ended = have_call && !store_status_live(crow.status);
        r.duration = rec_duration_s(r.window_ms);
        rec_set_status(&r, "stopped", now);
        if (rec_db_update(engine_db(e), &r) != STORE_OK) {
            rec_job_reply_error(j, 20503, 503, NULL);
            goto out;
        }
    }
    /* The answer to Status=stopped is "stopped", even when Kaphila's
     * recording.stopped overtook this reply and already moved it on. */
    if (rec_status_is(&r, "processing")) snprintf(r.status, sizeof r.status, "stopped");
    job_reply_row(e, j, 200, &r);
    rec_bridge_event(e, call_sid, NULL, NULL, -1, true);
    /* The file is final when Kaphila reports recording.completed; if it
     * had nothing active to stop, it already was. */
    if (ended || res->http_status == 404) rec_kick(e, call_sid, 0);
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
            if (!cr.rows[i].deleted && rec_status_is(&cr.rows[i], "in-progress"))
                snprintf(j->sid, sizeof j->sid, "%s", cr.rows[i].sid);
        if (!j->sid[0]) {
            rec_job_reply_error(j, 20404, 404, "This call has no recording in progress"
                            " (Twilio.CURRENT)");
            goto out;
        }
    }
    if (!(have_row = rec_job_row(e, j, &r))) goto out;
    if (!want) want = "";
    if (!strcmp(want, "paused")) {
        rec_job_reply_error(j, 21220, 400, "Kaphila records the call's bridge continuously and"
                        " cannot pause a recording: Status=paused is not supported by twigate"
                        " (Status=stopped is)");
    } else if (!strcmp(want, "in-progress")) {
        if (rec_status_is(&r, "in-progress")) {
            job_reply_row(e, j, 200, &r);   /* resuming a running recording changes nothing */
        } else {
            snprintf(msg, sizeof msg, "Invalid call state: the recording is %s; a recording"
                     " that ended cannot be resumed", r.status);
            rec_job_reply_error(j, 21220, 400, msg);
        }
    } else if (!rec_status_is(&r, "in-progress")) {
        job_reply_row(e, j, 200, &r);   /* stopping an ended recording changes nothing */
    } else if (rec_is_window(&r)) {
        int64_t end = now - cr.call.answered_at;
        r.window_ms = end > r.offset_ms ? end - r.offset_ms : 0;
        r.duration = rec_duration_s(r.window_ms);
        rec_set_status(&r, "stopped", now);
        if (rec_db_update(engine_db(e), &r) != STORE_OK) {
            rec_job_reply_error(j, 20503, 503, NULL);
            goto out;
        }
        job_reply_row(e, j, 200, &r);
        if (rec_bridge_final(&cr.call, cr.rows, cr.n)) rec_kick(e, r.call_sid, 0);
    } else {
        char path[64];
        stop_ctx *s = calloc(1, sizeof *s);
        json_t *body = json_object();
        snprintf(path, sizeof path, "/recordings/%.40s/stop",
                 r.kaphila_call_id[0] ? r.kaphila_call_id : cr.call.kaphila_id);
        if (!s || !body) {
            free(s);
            json_decref(body);
            rec_job_reply_error(j, 20500, 500, NULL);
            goto out;
        }
        s->e = e;
        s->j = j;
        if (engine_kaphila(e, j->account_sid, "POST", path, body, on_stop, s) != 0) {
            free(s);
            rec_job_reply_error(j, 20503, 503, "Kaphila could not be asked to stop the recording");
        }
        json_decref(body);
    }
out:
    if (have_row) rec_row_fini(&r);
    rec_unload(&cr);
}

static void do_delete(engine *e, rec_job *j)
{
    rec_row r;
    char path[PATH_MAX];
    if (!rec_job_row(e, j, &r)) return;
    if (rec_status_is(&r, "in-progress")) {
        rec_job_reply_error(j, 21220, 400, "Invalid call state: the recording is in progress; stop"
                        " it (Status=stopped) or let the call end before deleting it");
        goto out;
    }
    if (rec_db_set_deleted(engine_db(e), r.sid, timefmt_now_ms()) != STORE_OK) {
        rec_job_reply_error(j, 20503, 503, NULL);
        goto out;
    }
    /* The media goes now; Kaphila keeps its own file (it has no delete). */
    if (rec_is_window(&r) && rec_media_path(engine_config(e), &r, path)) unlink(path);
    if (rec_mp3_path(engine_config(e), &r, path)) unlink(path);
    rec_gc_bridge(e, r.call_sid);
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
    case REC_JOB_MEDIA:  rec_ensure(e, j, true); break;
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

