/* recordings_mp3.c — the "rec-mp3" thread: encodes a recording's WAV to
 * MP3 (mp3.c, LAME) the first time …/Recordings/{RE}.mp3 is asked for,
 * caches it beside the WAV as <RecordingSid>.mp3, and answers the request
 * from it (Range honoured, like the WAV).
 *
 * Why a thread of its own: encoding is CPU work — about a second of CPU
 * per many minutes of telephone audio, but a recording may last hours
 * (bench: BENCH_ONLY=mp3) — and neither the engine (every live call) nor
 * an MHD thread (listen.threads of them serve every request) may be held
 * for that. The HTTP thread, or the engine when it had to fetch the WAV
 * first, suspends the request and queues it here; this thread replies.
 * One thread: encodes never use more than one core, and requests for the
 * same recording are served in order, so the second finds the file the
 * first one made and nothing is encoded twice.
 *
 * Map: the queue (submit, capped); the thread (take a job, encode unless
 * cached, serve); lifecycle (create, stop: cancel and answer what is
 * queued, destroy). */
#include "recordings_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "engine/mp3.h"

/* Requests waiting for an encode. Each holds a suspended connection; past
 * this many, clients are told to retry (503) rather than queue behind
 * hours of encoding. */
#define REC_MP3_MAX_QUEUE 64

typedef struct mp3_job {
    struct mp3_job *next;
    engine_reply    r;                 /* suspended; this thread replies */
    char            wav[PATH_MAX];
    char            mp3[PATH_MAX];
    char            range[REC_RANGE_LEN];
    char            account_sid[SID_SIZE];
} mp3_job;

struct rec_mp3 {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    mp3_job        *head, *tail;       /* FIFO, under mu */
    int             n;
    bool            stopping;          /* under mu: no new jobs */
    atomic_bool     cancel;            /* read by the encoder between chunks */
    bool            running;           /* the thread was started (create/stop only) */
    pthread_t       thread;
};

static void reply_busy(engine_reply r, const char *msg)
{
    engine_reply_error_h(r, 20503, 503, msg, (const char *const[]){"Retry-After", "1", NULL});
}

bool rec_mp3_submit(rec_mp3 *w, engine_reply r, const char *account_sid, const char *wav,
                    const char *mp3, const char *range)
{
    mp3_job *j = calloc(1, sizeof *j);
    bool ok = false;
    if (!j) return false;
    j->r = r;
    snprintf(j->wav, sizeof j->wav, "%s", wav);
    snprintf(j->mp3, sizeof j->mp3, "%s", mp3);
    snprintf(j->range, sizeof j->range, "%s", range ? range : "");
    snprintf(j->account_sid, sizeof j->account_sid, "%s", account_sid);
    pthread_mutex_lock(&w->mu);
    if (!w->stopping && w->n < REC_MP3_MAX_QUEUE) {
        if (w->tail) w->tail->next = j;
        else w->head = j;
        w->tail = j;
        w->n++;
        ok = true;
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    if (!ok) free(j);
    return ok;
}

/* Encodes j->wav into j->mp3 (through "<mp3>.part", renamed when whole, so
 * a reader never sees half a file). False when it failed; the reason is
 * logged. */
static bool encode(rec_mp3 *w, const mp3_job *j)
{
    char part[PATH_MAX + 8];
    int in = -1, out = -1;
    int64_t ms = 0;
    struct timespec t0, t1;
    mp3_status st = MP3_IO;
    bool ok = false;

    if (snprintf(part, sizeof part, "%s.part", j->mp3) >= (int)sizeof part) goto out;
    if ((in = open(j->wav, O_RDONLY | O_CLOEXEC)) < 0) {
        log_error("recordings", "mp3: cannot open %s: %s", j->wav, strerror(errno));
        goto out;
    }
    /* One encoding thread: no other writer of this .part can exist, so a
     * leftover from a previous process is simply overwritten. */
    if ((out = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
        log_error("recordings", "mp3: cannot create %s: %s", part, strerror(errno));
        goto out;
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    st = mp3_encode_wav(in, out, &w->cancel, &ms);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    if (close(out) != 0 && st == MP3_OK) st = MP3_IO;
    out = -1;
    if (st != MP3_OK) {
        log_error("recordings", "mp3: %s: %s", j->wav, mp3_strerror(st));
        unlink(part);
        goto out;
    }
    if (rename(part, j->mp3) != 0) {
        log_error("recordings", "mp3: cannot rename %s: %s", part, strerror(errno));
        unlink(part);
        goto out;
    }
    log_info("recordings", "mp3: encoded %.1f s of audio in %.3f s of CPU",
             (double)ms / 1000.0,
             (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    ok = true;
out:
    if (out >= 0) {
        close(out);
        unlink(part);
    }
    if (in >= 0) close(in);
    return ok;
}

static void run_job(rec_mp3 *w, mp3_job *j)
{
    const char *range = j->range[0] ? j->range : NULL;
    log_context(NULL, j->account_sid, NULL);
    /* Cached by an earlier request (possibly one queued just before). */
    if (engine_reply_file(j->r, j->mp3, range, REC_MP3_TYPE)) return;
    if (atomic_load(&w->cancel)) {
        reply_busy(j->r, "twigate is stopping; retry the download");
        return;
    }
    if (!encode(w, j)) {
        if (atomic_load(&w->cancel))
            reply_busy(j->r, "twigate is stopping; retry the download");
        else
            engine_reply_error(j->r, 20500, 500, "The recording could not be encoded as MP3;"
                             " its WAV is still served without the .mp3 extension");
        return;
    }
    if (!engine_reply_file(j->r, j->mp3, range, REC_MP3_TYPE))
        engine_reply_error(j->r, 20500, 500, "The encoded recording has gone from the cache");
}

static void *thread_main(void *arg)
{
    rec_mp3 *w = arg;
    pthread_setname_np(pthread_self(), "rec-mp3");
    for (;;) {
        mp3_job *j;
        pthread_mutex_lock(&w->mu);
        while (!w->head && !w->stopping) pthread_cond_wait(&w->cv, &w->mu);
        j = w->head;
        if (j) {
            w->head = j->next;
            if (!w->head) w->tail = NULL;
            w->n--;
        }
        pthread_mutex_unlock(&w->mu);
        if (!j) break;   /* stopping and nothing left */
        run_job(w, j);
        free(j);
    }
    log_context_clear();
    return NULL;
}

rec_mp3 *rec_mp3_create(void)
{
    rec_mp3 *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    atomic_init(&w->cancel, false);
    if (pthread_create(&w->thread, NULL, thread_main, w) != 0) {
        rec_mp3_destroy(w);
        return NULL;
    }
    w->running = true;
    return w;
}

void rec_mp3_stop(rec_mp3 *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    /* The encode under way stops at its next chunk; the jobs still queued
     * are answered 503 by the thread as it empties the queue. */
    atomic_store(&w->cancel, true);
    if (w->running) pthread_join(w->thread, NULL);
    w->running = false;
}

void rec_mp3_destroy(rec_mp3 *w)
{
    if (!w) return;
    rec_mp3_stop(w);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
