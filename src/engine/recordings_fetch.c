/* recordings_fetch.c — the bridge file: downloading it from Kaphila into the
 * cache (one transfer per call, guarded by an exclusive "<file>.part"),
 * retries, and start-up recovery. Engine thread (recordings_core_int.h). */
#include "recordings_core_int.h"

static const int64_t retry_delay_ms[REC_DOWNLOAD_ATTEMPTS - 1] = {1000, 10000, 60000};

/* ================================================================ 3 */


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


bool rec_write_all(int fd, const void *p, size_t n)
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
    if (d->written + n > (uint64_t)REC_MAX_BRIDGE_BYTES || !rec_write_all(d->fd, p, n)) {
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
    rec_kick(e, r.call_sid, (int)(v % REC_DOWNLOAD_ATTEMPTS));
    rec_row_fini(&r);
    log_context_clear();
}

static void schedule_retry(engine *e, const char *call_sid, int attempt)
{
    call_recs cr;
    if (attempt < 1 || attempt >= REC_DOWNLOAD_ATTEMPTS || !rec_load(e, call_sid, &cr)) return;
    for (int i = 0; i < cr.n; i++) {
        if (!rec_pending(&cr.rows[i], true)) continue;
        if (!loop_timer_add(engine_loop(e), retry_delay_ms[attempt - 1], on_retry,
                            (void *)(intptr_t)(cr.rows[i].id * REC_DOWNLOAD_ATTEMPTS + attempt)))
            log_warn("recordings", "cannot schedule a download retry");
        break;
    }
    rec_unload(&cr);
}

/* Every waiting row of the call becomes absent: Kaphila has no file. */
void rec_all_absent(engine *e, const char *call_sid, int code, const char *why)
{
    call_recs cr;
    bool *dirty = NULL;
    const char **whys = NULL;
    int64_t now = timefmt_now_ms();
    if (!rec_load(e, call_sid, &cr)) return;
    if (!cr.n || !(dirty = calloc((size_t)cr.n, sizeof *dirty)) ||
        !(whys = calloc((size_t)cr.n, sizeof *whys)))
        goto out;
    bool final = rec_bridge_final(&cr.call, cr.rows, cr.n);
    for (int i = 0; i < cr.n; i++) {
        if (!rec_pending(&cr.rows[i], final)) continue;
        rec_make_absent(&cr.rows[i], code, now);
        dirty[i] = true;
        whys[i] = why;
    }
    rec_save(e, cr.rows, cr.n, dirty, true, whys);
out:
    free(whys);
    free(dirty);
    rec_unload(&cr);
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
        if (j) rec_job_reply_error(j, 20503, 503, "twigate is stopping; retry the download");
        goto out;
    }
    if (rc == CURLE_OK && status / 100 == 2 && !d->write_failed) {
        if (rename(d->part, d->path) != 0) {
            log_error("recordings", "cannot rename %s: %s", d->part, strerror(errno));
            unlink(d->part);
            if (j) rec_job_reply_error(j, 20500, 500, "The recording could not be stored");
            goto out;
        }
        log_info("recordings", "bridge recording downloaded (%llu bytes)",
                 (unsigned long long)d->written);
        /* The cuts run on the bio thread; the pass answers j and collects
         * the bridge when it is done. */
        if (!rec_finalize(e, d->call_sid, FIN_SETTLE, NULL, j) && j)
            rec_job_reply_error(j, 20503, 503, "The recording is being prepared; retry");
        goto out;
    }
    unlink(d->part);
    if (rc == CURLE_OK && status == 404) {
        rec_all_absent(e, d->call_sid, REC_ERR_NO_FILE,
                   "Kaphila has no recording file for this call (download answered 404)");
        if (j) rec_ensure(e, j, false);
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
        if (j) rec_job_reply_error(j, 20503, 503, msg);
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

fetch_result rec_start_fetch(engine *e, const call_recs *cr, rec_job *j, int attempt)
{
    const config *cfg = engine_config(e);
    const config_account *acct = config_account_by_sid(cfg, cr->call.account_sid);
    char src[REC_FILENAME_LEN + 64], url[1024], auth[600];
    dl *d = NULL;
    long low_s;
    if (!acct) return FETCH_ERROR;
    if (!source_path(cr, src, sizeof src)) return FETCH_NO_SOURCE;
    if (!rec_mkdir_cache(e) || !(d = calloc(1, sizeof *d))) goto fail;
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
void rec_kick(engine *e, const char *call_sid, int attempt)
{
    call_recs cr;
    char path[PATH_MAX];
    bool any = false;
    if (!rec_load(e, call_sid, &cr)) return;
    bool final = rec_bridge_final(&cr.call, cr.rows, cr.n);
    for (int i = 0; i < cr.n && final; i++) any = any || rec_pending(&cr.rows[i], true);
    if (!any) goto out;
    if (rec_bridge_path(engine_config(e), call_sid, path) && access(path, F_OK) == 0) {
        (void)rec_finalize(e, call_sid, FIN_SETTLE, NULL, NULL);   /* logs its own failure */
        goto out;
    }
    switch (rec_start_fetch(e, &cr, NULL, attempt)) {
    case FETCH_NO_SOURCE:
        rec_all_absent(e, call_sid, REC_ERR_NO_FILE, "Kaphila never named a recording for this call");
        break;
    case FETCH_ERROR:
        schedule_retry(e, call_sid, attempt + 1);
        break;
    default:
        break;   /* started, or another transfer is on it and will finalise */
    }
out:
    rec_unload(&cr);
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
        rec_kick(e, sids[i], 0);
    }
    if (n) log_info("recordings", "resumed %d call(s) with recordings waiting for media", n);
    log_context_clear();
    free(sids);
}

void rec_recover_call(engine *e, const char *call_sid)
{
    rec_kick(e, call_sid, 0);
}
