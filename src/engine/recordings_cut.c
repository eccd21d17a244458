/* recordings_cut.c — finalising: once the bridge file is here, every
 * recording waiting for it is cut (windows, on the bio thread) or checked
 * (the whole bridge) and becomes completed or absent, with its callback.
 * Engine thread, cuts on bio (recordings_core_int.h). */
#include "recordings_core_int.h"

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
        ok = n > 0 && rec_write_all(out, cbuf, (size_t)n);
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
    ok = rec_write_all(fd, head, hl) && copy_range(b->fd, off, len, fd) &&
         (!(len & 1) || rec_write_all(fd, "", 1));   /* RIFF pad byte */
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
    if (f->j) rec_job_reply_error(f->j, 20503, 503, "twigate is stopping; retry");
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
bool rec_finalize(engine *e, const char *call_sid, fin_kind kind, const rec_row *recut,
                  rec_job *j)
{
    const config *cfg = engine_config(e);
    call_recs cr;
    fin_job *f = NULL;
    bool ok = false;
    if (!rec_load(e, call_sid, &cr)) return false;
    if (!cr.n || !(f = calloc(1, sizeof *f)) ||
        !(f->cuts = calloc((size_t)cr.n, sizeof *f->cuts)) ||
        !rec_bridge_path(cfg, call_sid, f->bridge))
        goto out;
    f->e = e;
    f->kind = kind;
    f->j = j;
    snprintf(f->call_sid, sizeof f->call_sid, "%s", call_sid);
    snprintf(f->account_sid, sizeof f->account_sid, "%s", cr.call.account_sid);
    bool final = rec_bridge_final(&cr.call, cr.rows, cr.n);
    int64_t end = rec_bridge_end_ms(&cr.call, cr.rows, cr.n);
    for (int i = 0; i < cr.n; i++) {
        rec_row *r = &cr.rows[i];
        if (kind == FIN_RECUT ? r->id != recut->id
                              : !rec_pending(r, final) || !rec_is_window(r))
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
    rec_unload(&cr);
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
        rec_make_absent(r, REC_ERR_BAD_FILE, now);
        *why = "Kaphila's recording file is not a WAV file twigate can read";
        return true;
    }
    r->channels = (int)f->w.channels;
    if (!rec_is_window(r)) {
        if (!f->w.data_len) {
            rec_make_absent(r, REC_ERR_TOO_SHORT, now);
            *why = "Kaphila's recording holds no audio";
            return true;
        }
        if (r->duration < 0) r->duration = rec_duration_s(rec_wav_ms(&f->w, f->w.data_len));
        rec_set_status(r, "completed", now);
        return true;
    }
    close_window(r, end_ms);
    int64_t ms = r->window_ms < REC_MIN_WINDOW_MS ? 0 : cut_result(f, r);
    if (ms < 0) return false;
    if (ms < REC_MIN_WINDOW_MS) {
        rec_make_absent(r, REC_ERR_TOO_SHORT, now);   /* the window lies past the file's end */
        return true;
    }
    r->duration = rec_duration_s(ms);
    rec_set_status(r, "completed", now);
    return true;
}

static void fin_settle(engine *e, const fin_job *f)
{
    call_recs cr;
    bool *dirty = NULL;
    const char **whys = NULL;
    int64_t now = timefmt_now_ms(), end;
    if (!rec_load(e, f->call_sid, &cr)) return;
    if (!cr.n || !(dirty = calloc((size_t)cr.n, sizeof *dirty)) ||
        !(whys = calloc((size_t)cr.n, sizeof *whys)))
        goto out;
    bool final = rec_bridge_final(&cr.call, cr.rows, cr.n);
    end = rec_bridge_end_ms(&cr.call, cr.rows, cr.n);
    for (int i = 0; i < cr.n; i++)
        if (rec_pending(&cr.rows[i], final))
            dirty[i] = settle(f, &cr.rows[i], end, now, &whys[i]);
    rec_save(e, cr.rows, cr.n, dirty, true, whys);
out:
    free(whys);
    free(dirty);
    rec_unload(&cr);
}


/* The media request that waited for a pass, answered from its outcome. */
static void fin_answer(engine *e, const fin_job *f, rec_job *j)
{
    rec_row r;
    char path[PATH_MAX], msg[320];
    if (!rec_job_row(e, j, &r)) return;
    if (!rec_media_path(engine_config(e), &r, path)) {
        rec_job_reply_error(j, 20500, 500, "The recording's cache path is too long");
    } else if (rec_status_is(&r, "completed") && rec_serve(e, j, &r, path)) {
        /* answered */
    } else if (rec_status_is(&r, "absent")) {
        snprintf(msg, sizeof msg, "The recording %s is absent (error %d): there is no media",
                 r.sid, r.error_code);
        rec_job_reply_error(j, 20404, 404, msg);
    } else if (f->kind == FIN_RECUT) {
        rec_job_reply_error(j, 20500, 500, "The recording could not be cut from the call's"
                        " recording");
    } else {
        rec_job_reply_error(j, 20500, 500, "The recording could not be prepared from the call's"
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
    rec_gc_bridge(e, f->call_sid);
    fin_free(f);
    log_context_clear();
}

/* The bridge file is kept while it is some recording's media (Record=true)
 * or a window still has to be cut from it; windows already cut are served
 * from their own files. */
void rec_gc_bridge(engine *e, const char *call_sid)
{
    call_recs cr;
    char path[PATH_MAX];
    bool needed = false;
    if (!rec_load(e, call_sid, &cr)) return;
    bool final = rec_bridge_final(&cr.call, cr.rows, cr.n);
    for (int i = 0; i < cr.n && !needed; i++) {
        const rec_row *r = &cr.rows[i];
        if (r->deleted) continue;
        needed = (!rec_is_window(r) && !rec_status_is(r, "absent")) || rec_pending(r, final);
    }
    if (!needed && rec_bridge_path(engine_config(e), call_sid, path)) unlink(path);
    rec_unload(&cr);
}

