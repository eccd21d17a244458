/* recordings_rest.c — the Recording routes (contract §6.1, §6.2) on HTTP
 * threads.
 *
 * Map: parameter tables; shared checks (the call, the recording, date
 * filters); lists; fetches (including Twilio.CURRENT); the media (served
 * straight from the cache when the file is there, otherwise produced by
 * the engine); and the writes — create, update, delete — which are
 * validated here and carried out on the engine thread (recordings.c), so
 * every change to a recording happens on one thread.
 *
 * Every lookup is keyed by the account of the authenticated path: another
 * account's recording is simply not found (20404). */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/calljson.h"
#include "engine/engine.h"
#include "engine/recordings.h"
#include "base/log.h"
#include "base/errors.h"
#include "base/params.h"
#include "http/recordings_rest.h"
#include "http/rest.h"
#include "base/timefmt.h"

/* Rows fetched per list page: PageSize is at most 1000, +1 shows whether
 * another page exists. */
#define REC_LIST_MAX_ROWS 1001
/* Twilio's content types for WAV and MP3 media. */
#define WAV_TYPE "audio/x-wav"
#define MP3_TYPE "audio/mpeg"

static const param_spec create_spec[] = {
    {"RecordingStatusCallbackEvent", "recording_status_callback_event", P_LIST, 0, 0,
     "in-progress|completed|absent", TWERR_BAD_PARAM},
    {"RecordingStatusCallback", "recording_status_callback", P_URL, 0, 0, NULL, 21205},
    {"RecordingStatusCallbackMethod", "recording_status_callback_method", P_METHOD, 0, 0, NULL,
     TWERR_BAD_PARAM},
    {"Trim", "trim", P_ENUM, 0, 0, "trim-silence|do-not-trim", TWERR_BAD_PARAM},
    {"RecordingChannels", "recording_channels", P_ENUM, 0, 0, "mono|dual", TWERR_BAD_PARAM},
    {"RecordingTrack", "recording_track", P_ENUM, 0, 0, "inbound|outbound|both", TWERR_BAD_PARAM},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Twilio's enum also names processing, completed and absent, which a
 * client cannot ask for. */
static const param_spec update_spec[] = {
    {"Status", "status", P_ENUM, 0, 0, "in-progress|paused|stopped", TWERR_BAD_PARAM},
    {"PauseBehavior", "pause_behavior", P_ENUM, 0, 0, "skip|silence", TWERR_BAD_PARAM},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---- shared checks ---- */

static void call_not_found(http_req *r, const char *account_sid, const char *call_sid)
{
    char msg[192];
    snprintf(msg, sizeof msg, "The requested resource /2010-04-01/Accounts/%s/Calls/%.40s.json"
             " was not found", account_sid, call_sid);
    http_reply_error(r, 20404, 404, msg);
}

static void rec_not_found(http_req *r, const char *account_sid, const char *call_sid,
                          const char *sid)
{
    char msg[256];
    if (call_sid)
        snprintf(msg, sizeof msg, "The requested resource /2010-04-01/Accounts/%s/Calls/%s/"
                 "Recordings/%.40s.json was not found", account_sid, call_sid, sid);
    else
        snprintf(msg, sizeof msg, "The requested resource /2010-04-01/Accounts/%s/Recordings/"
                 "%.40s was not found", account_sid, sid);
    http_reply_error(r, 20404, 404, msg);
}

/* The call in the path exists in this account; replies itself when not. */
static bool call_exists(http_req *r, store_conn *c, const char *account_sid, const char *call_sid)
{
    store_call call = {0};
    store_status s = sid_valid(call_sid, "CA") ? store_call_get(c, account_sid, call_sid, &call)
                                                : STORE_NOTFOUND;
    store_call_fini(&call);
    if (s == STORE_OK) return true;
    if (s == STORE_NOTFOUND) call_not_found(r, account_sid, call_sid);
    else http_reply_error(r, 20503, 503, NULL);
    return false;
}

/* A query boolean (IncludeSoftDeleted); replies 400 itself when invalid. */
static bool query_bool(http_req *r, const char *name, bool *out)
{
    const char *v = form_get(http_query(r), name);
    *out = false;
    if (!v || !*v || !strcasecmp(v, "false")) return true;
    if (!strcasecmp(v, "true")) {
        *out = true;
        return true;
    }
    char msg[160];
    snprintf(msg, sizeof msg, "%s must be true or false, not '%.64s'", name, v);
    http_reply_error(r, TWERR_BAD_PARAM, 400, msg);
    return false;
}

/* ---- lists ---- */

static void list(app *a, http_req *r, const config_account *acct, const char *call_sid)
{
    const form *q = http_query(r);
    rest_paging pg;
    rec_filter f = {.account_sid = acct->sid, .call_sid = call_sid};
    store_conn *c = NULL;
    rec_row *rows = NULL;
    int n = 0;
    int64_t before = 0;
    bool none = false;
    char base[160], next[SID_SIZE + 2];
    json_t *items = NULL;

    if (!rest_paging_parse(r, &pg) || !rest_date_filter(r, "DateCreated", &f.created_from, &f.created_to)) return;
    if (!call_sid) {
        const char *v = form_get(q, "CallSid");
        if (v && *v) f.call_sid = v;
        /* twigate has no conferences, so no recording belongs to one. */
        v = form_get(q, "ConferenceSid");
        none = v && *v;
        if (!query_bool(r, "IncludeSoftDeleted", &f.include_deleted)) return;
    }
    if (!(c = store_conn_acquire(a->store)) || !(rows = calloc(REC_LIST_MAX_ROWS, sizeof *rows))) {
        http_reply_error(r, 20503, 503, NULL);
        goto out;
    }
    if (call_sid && !call_exists(r, c, acct->sid, call_sid)) goto out;
    if (pg.token) {
        /* "PA" + the SID of the previous page's last recording. */
        rec_row t;
        if (strncmp(pg.token, "PA", 2) != 0 || !sid_valid(pg.token + 2, "RE") ||
            rec_db_get(c, acct->sid, pg.token + 2, &t) != STORE_OK) {
            http_reply_error(r, TWERR_BAD_PARAM, 400, "PageToken is not valid for this list");
            goto out;
        }
        before = t.id;
        rec_row_fini(&t);
    }
    if (!none && rec_db_list(c, &f, before, pg.token ? 0 : (int64_t)pg.page * pg.page_size,
                             pg.page_size + 1, rows, &n) != STORE_OK) {
        http_reply_error(r, 20500, 500, NULL);
        goto out;
    }
    items = json_array();
    for (int i = 0; i < n && i < pg.page_size; i++)
        json_array_append_new(items, rec_json(&rows[i], a->public_url, !call_sid));
    if (call_sid)
        snprintf(base, sizeof base, API_PREFIX "/Accounts/%s/Calls/%s/Recordings.json", acct->sid,
                 call_sid);
    else
        snprintf(base, sizeof base, API_PREFIX "/Accounts/%s/Recordings.json", acct->sid);
    if (n > pg.page_size) snprintf(next, sizeof next, "PA%s", rows[pg.page_size - 1].sid);
    calljson_page page = {
        .key = "recordings", .base_path = base, .filters = q, .page = pg.page,
        .page_size = pg.page_size, .page_token = pg.token,
        .next_token = n > pg.page_size ? next : NULL,
    };
    http_reply_json(r, 200, calljson_list(&page, items));
out:
    for (int i = 0; rows && i < n; i++) rec_row_fini(&rows[i]);
    free(rows);
    store_conn_release(c);
}

void rec_list(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    const config_account *acct = rest_auth(a, r, m->cap[0]);
    if (acct) list(a, r, acct, NULL);
}

void rec_call_list(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    const config_account *acct = rest_auth(a, r, m->cap[0]);
    if (acct) list(a, r, acct, m->cap[1]);
}

/* ---- fetch ---- */

/* Loads the recording named by the path (optionally within a call). With
 * include_deleted false a deleted recording is not found. Replies itself
 * when it answers false. */
static bool load_row(app *a, http_req *r, const char *account_sid, const char *call_sid,
                     const char *sid, bool include_deleted, rec_row *out)
{
    store_conn *c = NULL;
    store_status s = STORE_NOTFOUND;
    if (sid_valid(sid, "RE")) {
        if (!(c = store_conn_acquire(a->store))) {
            http_reply_error(r, 20503, 503, NULL);
            return false;
        }
        s = rec_db_get(c, account_sid, sid, out);
        store_conn_release(c);
    }
    if (s == STORE_OK && ((out->deleted && !include_deleted) ||
                          (call_sid && strcmp(out->call_sid, call_sid) != 0))) {
        rec_row_fini(out);
        s = STORE_NOTFOUND;
    }
    if (s == STORE_OK) return true;
    if (s == STORE_NOTFOUND) rec_not_found(r, account_sid, call_sid, sid);
    else http_reply_error(r, 20503, 503, NULL);
    return false;
}

void rec_fetch(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    const config_account *acct = rest_auth(a, r, m->cap[0]);
    rec_row row;
    bool deleted_too;
    if (!acct || !query_bool(r, "IncludeSoftDeleted", &deleted_too) ||
        !load_row(a, r, acct->sid, NULL, m->cap[1], deleted_too, &row))
        return;
    http_reply_json(r, 200, rec_json(&row, a->public_url, true));
    rec_row_fini(&row);
}

void rec_call_fetch(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    const config_account *acct = rest_auth(a, r, m->cap[0]);
    rec_row row;
    if (!acct || !load_row(a, r, acct->sid, m->cap[1], m->cap[2], false, &row)) return;
    http_reply_json(r, 200, rec_json(&row, a->public_url, false));
    rec_row_fini(&row);
}

void rec_call_current_fetch(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    const config_account *acct = rest_auth(a, r, m->cap[0]);
    store_conn *c = NULL;
    rec_row *rows = NULL;
    int n = 0, cur = -1;
    if (!acct) return;
    if (!(c = store_conn_acquire(a->store))) {
        http_reply_error(r, 20503, 503, NULL);
        return;
    }
    if (!call_exists(r, c, acct->sid, m->cap[1])) goto out;
    if (rec_db_for_call(c, m->cap[1], &rows, &n) != STORE_OK) {
        http_reply_error(r, 20503, 503, NULL);
        goto out;
    }
    for (int i = n - 1; i >= 0 && cur < 0; i--)
        if (!rows[i].deleted && !strcmp(rows[i].status, "in-progress")) cur = i;
    if (cur < 0)
        http_reply_error(r, 20404, 404, "This call has no recording in progress (Twilio.CURRENT)");
    else
        http_reply_json(r, 200, rec_json(&rows[cur], a->public_url, false));
out:
    rec_rows_free(rows, n);
    store_conn_release(c);
}

/* ---- writes: validated here, done by the engine ---- */

static rec_job *new_job(http_req *r, rec_job_kind kind, const char *account_sid,
                        const char *call_sid, const char *sid)
{
    rec_job *j = calloc(1, sizeof *j);
    if (!j) {
        http_reply_error(r, 20500, 500, NULL);
        return NULL;
    }
    j->kind = kind;
    j->r = rest_engine_reply(r);
    snprintf(j->account_sid, sizeof j->account_sid, "%s", account_sid);
    snprintf(j->call_sid, sizeof j->call_sid, "%s", call_sid ? call_sid : "");
    snprintf(j->sid, sizeof j->sid, "%s", sid ? sid : "");
    return j;
}

static void submit(app *a, rec_job *j)
{
    if (rec_job_submit(a->engine, j)) return;
    engine_reply_error(j->r, 20503, 503, "Too many requests in progress; try again shortly");
    rec_job_free(j);
}

/* Parses the body against spec into a new object; replies itself on error. */
static json_t *body_params(app *a, http_req *r, const param_spec *spec)
{
    form f;
    param_error perr;
    json_t *p;
    if (!rest_body_form(a, r, &f)) return NULL;
    p = json_object();
    if (!p) {
        http_reply_error(r, 20500, 500, NULL);
    } else if (!params_parse(spec, &f, p, NULL, &perr)) {
        http_reply_error(r, perr.code, 400, perr.message);
        json_decref(p);
        p = NULL;
    }
    form_fini(&f);
    return p;
}

void rec_call_create(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    const config_account *acct = rest_auth(a, r, m->cap[0]);
    json_t *p;
    rec_job *j;
    if (!acct) return;
    if (!sid_valid(m->cap[1], "CA")) {
        call_not_found(r, acct->sid, m->cap[1]);
        return;
    }
    if (!(p = body_params(a, r, create_spec))) return;
    if (!(j = new_job(r, REC_JOB_CREATE, acct->sid, m->cap[1], NULL))) {
        json_decref(p);
        return;
    }
    j->params = p;
    submit(a, j);
}

static void update(app *a, http_req *r, const http_match *m, const char *sid)
{
    const config_account *acct = rest_auth(a, r, m->cap[0]);
    json_t *p;
    rec_job *j;
    if (!acct) return;
    if (!sid_valid(m->cap[1], "CA")) {
        call_not_found(r, acct->sid, m->cap[1]);
        return;
    }
    if (sid && !sid_valid(sid, "RE")) {
        rec_not_found(r, acct->sid, m->cap[1], sid);
        return;
    }
    if (!(p = body_params(a, r, update_spec))) return;
    if (!json_object_get(p, "status")) {
        http_reply_error(r, TWERR_BAD_PARAM, 400, "Status is required: stopped (or paused,"
                         " in-progress)");
        json_decref(p);
        return;
    }
    if (!(j = new_job(r, REC_JOB_UPDATE, acct->sid, m->cap[1], sid))) {
        json_decref(p);
        return;
    }
    j->params = p;
    submit(a, j);
}

void rec_call_update(void *ctx, http_req *r, const http_match *m)
{
    update(ctx, r, m, m->cap[2]);
}

void rec_call_current_update(void *ctx, http_req *r, const http_match *m)
{
    update(ctx, r, m, NULL);
}

static void delete_rec(app *a, http_req *r, const char *account_sid, const char *call_sid,
                   const char *sid)
{
    rec_job *j;
    if (!sid_valid(sid, "RE") || (call_sid && !sid_valid(call_sid, "CA"))) {
        rec_not_found(r, account_sid, call_sid, sid);
        return;
    }
    if ((j = new_job(r, REC_JOB_DELETE, account_sid, call_sid, sid))) submit(a, j);
}

void rec_delete(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    const config_account *acct = rest_auth(a, r, m->cap[0]);
    if (acct) delete_rec(a, r, acct->sid, NULL, m->cap[1]);
}

void rec_call_delete(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    const config_account *acct = rest_auth(a, r, m->cap[0]);
    if (acct) delete_rec(a, r, acct->sid, m->cap[1], m->cap[2]);
}

/* ---- media ---- */

static bool rec_serve_file(http_req *r, const char *path, const char *range)
{
    return rec_serve_media(r, path, range, WAV_TYPE);
}

bool rec_serve_media(http_req *r, const char *path, const char *range, const char *type)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    uint64_t off = 0, len = 0, size;
    char cr[96];
    if (fd < 0) {
        if (errno == ENOENT) return false;
        log_error("recordings", "cannot open %s: %s", path, strerror(errno));
        http_reply_error(r, 20500, 500, "The recording file cannot be read");
        return true;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        http_reply_error(r, 20500, 500, "The recording file cannot be read");
        return true;
    }
    size = (uint64_t)st.st_size;
    switch (rec_range_parse(range, size, &off, &len)) {
    case REC_RANGE_OK:
        snprintf(cr, sizeof cr, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, off, off + len - 1, size);
        http_reply_fd(r, 206, type, fd, off, len, (const char *const[]){
                          "Accept-Ranges", "bytes", "Content-Range", cr, NULL});
        break;
    case REC_RANGE_UNSATISFIABLE:
        close(fd);
        snprintf(cr, sizeof cr, "bytes */%" PRIu64, size);
        http_reply_error_h(r, 416, 416, "Requested range not satisfiable",
                           (const char *const[]){"Content-Range", cr, NULL});
        break;
    case REC_RANGE_NONE:
        http_reply_fd(r, 200, type, fd, 0, size,
                      (const char *const[]){"Accept-Ranges", "bytes", NULL});
        break;
    }
    return true;
}

/* Who may fetch media. Twilio serves RecordingUrl without credentials
 * unless the account turns on "HTTP Basic auth for media", and ported apps
 * fetch it that way; the URL's recording SID (80 random bits, sid.h) is
 * then what keeps it private. So with media_auth off a request without an
 * Authorization header is let through for the account in the path; one
 * with credentials is checked as everywhere (wrong ones get 401), and the
 * recording's JSON routes always need them. */
static const config_account *media_auth(app *a, http_req *r, const char *account_sid)
{
    const config_account *acct = config_account_by_sid(app_config(a), account_sid);
    if (!acct || acct->media_auth || http_header(r, "Authorization"))
        return rest_auth(a, r, account_sid);
    log_context(http_request_id(r), acct->sid, NULL);
    return acct;
}

void rec_media(void *ctx, http_req *r, const http_match *m)
{
    app *a = ctx;
    const config_account *acct = media_auth(a, r, m->cap[0]);
    const char *dot, *range;
    char sid[SID_SIZE], path[PATH_MAX], mp3_path[PATH_MAX] = "", msg[320];
    bool mp3;
    rec_row row;
    rec_job *j;
    if (!acct) return;
    /* {RE}, {RE}.wav or {RE}.mp3 (.json is the metadata route). */
    dot = strchr(m->cap[1], '.');
    if ((dot ? (size_t)(dot - m->cap[1]) : strlen(m->cap[1])) != SID_LEN ||
        (dot && strcmp(dot, ".wav") && strcmp(dot, ".mp3"))) {
        rec_not_found(r, acct->sid, NULL, m->cap[1]);
        return;
    }
    snprintf(sid, sizeof sid, "%.*s", SID_LEN, m->cap[1]);
    if (!load_row(a, r, acct->sid, NULL, sid, false, &row)) return;
    mp3 = dot && !strcmp(dot, ".mp3");
    if (!strcmp(row.status, "absent")) {
        snprintf(msg, sizeof msg, "The recording %s is absent (error %d): there is no media",
                 row.sid, row.error_code);
        http_reply_error(r, 20404, 404, msg);
        goto out;
    }
    range = http_header(r, "Range");
    if (mp3 && !strcmp(row.status, "completed") && rec_mp3_path(app_config(a), &row, mp3_path) &&
        rec_serve_media(r, mp3_path, range, MP3_TYPE))
        goto out;   /* encoded before */
    if (!strcmp(row.status, "completed") && rec_media_path(app_config(a), &row, path)) {
        if (!mp3 && rec_serve_file(r, path, range)) goto out;
        if (mp3 && mp3_path[0] && access(path, R_OK) == 0) {
            /* The WAV is there: the encoder thread makes the MP3 and replies. */
            http_suspend(r);
            if (!rec_mp3_submit(a->mp3, rest_engine_reply(r), acct->sid, path, mp3_path, range))
                http_reply_error_h(r, 20503, 503, "Too many MP3 encodings waiting; retry",
                                   (const char *const[]){"Retry-After", "1", NULL});
            goto out;
        }
    }
    /* Not produced yet (or gone from the cache): the engine decides, and
     * hands an .mp3 request on to the encoder once the WAV is there. */
    if (!(j = new_job(r, REC_JOB_MEDIA, acct->sid, NULL, sid))) goto out;
    if (range && strlen(range) < sizeof j->range) snprintf(j->range, sizeof j->range, "%s", range);
    if (mp3) j->mp3 = a->mp3;
    submit(a, j);
out:
    rec_row_fini(&row);
}
