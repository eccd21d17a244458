/* sim_rec — the simulator's recordings: one per answered call (Kaphila
 * records the bridge), as 8 kHz 16-bit mono PCM WAV holding a deterministic
 * 400 Hz tone of the call's length, so a download can be checked byte for
 * byte.
 *
 * A recording is only its length: the table keeps {callId, seconds,
 * active} and the bytes are generated when a download asks for them (any
 * byte range, straight into libmicrohttpd's buffer), so answering a call
 * costs no file work at all — on ext4 the create/rename/rewrite of a file
 * per call used to cost the loop 0.5-1.5 ms (docs/performance.md). With
 * --recordings-dir the sim also writes each recording as a file there, as
 * Kaphila's disk would hold it (empty from the answer, in full at the end),
 * and serves downloads and the files[] list from that directory, so a test
 * can take a file away.
 *
 * Map of this file: the WAV bytes (pure, any thread); the table (loop
 * thread: start, stop, eviction); downloads and Range; the files[] list. */
#include "sim_int.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"

#define WAV_RATE   8000
#define WAV_HEADER 44
/* A 400 Hz triangle wave: 20 samples (40 bytes) per period at 8 kHz. */
#define TONE_PERIOD 20
#define TONE_PEAK   8000
#define TONE_BYTES  (TONE_PERIOD * 2)

/* ---------------------------------------------------------------- bytes */

static void put_le16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v & 0xff);
    p[1] = (unsigned char)((v >> 8) & 0xff);
}

static void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)((v >> (8 * i)) & 0xff);
}

static int16_t tone_sample(uint32_t n)
{
    int phase = (int)(n % TONE_PERIOD);
    int half = TONE_PERIOD / 2;
    int v = phase < half ? phase : TONE_PERIOD - phase;     /* 0..half..0 */
    return (int16_t)((v * 2 - half) * TONE_PEAK / half);    /* -peak..peak */
}

static int clamp_seconds(int seconds)
{
    return seconds < 0 ? 0 : seconds > SIM_WAV_MAX_SECONDS ? SIM_WAV_MAX_SECONDS : seconds;
}

uint64_t sim_wav_size(int seconds)
{
    return WAV_HEADER + (uint64_t)clamp_seconds(seconds) * WAV_RATE * 2;
}

void sim_wav_read(int seconds, uint64_t pos, unsigned char *out, size_t n)
{
    uint32_t data_len = (uint32_t)clamp_seconds(seconds) * WAV_RATE * 2;
    unsigned char h[WAV_HEADER], tone[TONE_BYTES];
    memcpy(h, "RIFF", 4);
    put_le32(h + 4, 36 + data_len);
    memcpy(h + 8, "WAVEfmt ", 8);
    put_le32(h + 16, 16);            /* fmt chunk size */
    put_le16(h + 20, 1);             /* PCM */
    put_le16(h + 22, 1);             /* mono */
    put_le32(h + 24, WAV_RATE);
    put_le32(h + 28, WAV_RATE * 2);  /* byte rate */
    put_le16(h + 32, 2);             /* block align */
    put_le16(h + 34, 16);            /* bits per sample */
    memcpy(h + 36, "data", 4);
    put_le32(h + 40, data_len);
    for (uint32_t i = 0; i < TONE_PERIOD; i++)
        put_le16(tone + 2 * i, (uint16_t)tone_sample(i));
    /* A second holds whole periods, so sample byte d is tone[d % 40]. */
    while (n) {
        if (pos < WAV_HEADER) {
            size_t k = WAV_HEADER - (size_t)pos < n ? WAV_HEADER - (size_t)pos : n;
            memcpy(out, h + pos, k);
            out += k, pos += k, n -= k;
            continue;
        }
        size_t d = (size_t)((pos - WAV_HEADER) % TONE_BYTES);
        size_t k = TONE_BYTES - d < n ? TONE_BYTES - d : n;
        memcpy(out, tone + d, k);
        out += k, pos += k, n -= k;
    }
}

int sim_wav_write(const char *path, int seconds)
{
    int rc = -1;
    FILE *f = NULL;
    char tmp[600];
    unsigned char *chunk = NULL;
    uint64_t size = sim_wav_size(seconds);

    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        goto out;
    f = fopen(tmp, "wb");
    chunk = malloc(SIM_WAV_BLOCK);
    if (!f || !chunk)
        goto out;
    for (uint64_t done = 0; done < size;) {
        size_t n = size - done < SIM_WAV_BLOCK ? (size_t)(size - done) : SIM_WAV_BLOCK;
        sim_wav_read(seconds, done, chunk, n);
        if (fwrite(chunk, 1, n, f) != n)
            goto out;
        done += n;
    }
    if (fclose(f) != 0) {
        f = NULL;
        goto out;
    }
    f = NULL;
    if (rename(tmp, path) != 0)
        goto out;
    rc = 0;
out:
    free(chunk);
    if (f)
        fclose(f);
    if (rc != 0)
        unlink(tmp);
    return rc;
}

/* ---------------------------------------------------------------- table */

typedef struct sim_rec {
    struct sim_rec *prev, *next;    /* creation order */
    int      seconds;               /* audio in the file (0 while recording) */
    bool     active;
    int64_t  written_ms;            /* wall clock of the last change, like a file's mtime */
    char     call_id[SIM_CALL_ID_SIZE];
} sim_rec;

typedef struct sim_recs {
    sim_map  by_id;
    sim_rec *head, *tail;
    size_t   n;
} sim_recs;

int sim_recs_create(sim *s)
{
    sim_recs *t = calloc(1, sizeof *t);
    if (!t || sim_map_init(&t->by_id) != 0) {
        free(t);
        return -1;
    }
    s->recs = t;
    return 0;
}

void sim_recs_destroy(sim *s)
{
    sim_recs *t = s->recs;
    if (!t)
        return;
    while (t->head) {
        sim_rec *r = t->head;
        t->head = r->next;
        free(r);
    }
    sim_map_fini(&t->by_id);
    free(t);
    s->recs = NULL;
}

static void unlink_rec(sim_recs *t, sim_rec *r)
{
    sim_map_del(&t->by_id, r->call_id, r);
    if (r->prev)
        r->prev->next = r->next;
    else
        t->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        t->tail = r->prev;
    t->n--;
    free(r);
}

/* The file (--recordings-dir) of call_id's recording. */
static void rec_path(const sim *s, const char *call_id, char *out, size_t n)
{
    snprintf(out, n, "%s/rec-%s.wav", s->recdir, call_id);
}

static void write_file(const sim *s, const sim_rec *r)
{
    char path[640];
    if (!s->recdir[0])
        return;
    rec_path(s, r->call_id, path, sizeof path);
    if (sim_wav_write(path, r->seconds) != 0)
        log_warn("sim", "cannot write recording rec-%s.wav", r->call_id);
}

static sim_rec *find(const sim *s, const char *call_id)
{
    return sim_map_get(&s->recs->by_id, call_id);
}

static sim_rec *add(sim *s, const char *call_id)
{
    sim_recs *t = s->recs;
    sim_rec *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    snprintf(r->call_id, sizeof r->call_id, "%s", call_id);
    if (sim_map_put(&t->by_id, r->call_id, r) != 0) {
        free(r);
        return NULL;
    }
    r->prev = t->tail;
    if (t->tail)
        t->tail->next = r;
    else
        t->head = r;
    t->tail = r;
    t->n++;
    /* The oldest go first, as old files would be cleaned off a disk. */
    while (t->n > SIM_MAX_RECORDINGS && t->head != r)
        unlink_rec(t, t->head);
    return r;
}

void sim_rec_start(sim *s, const char *call_id)
{
    sim_rec *r = find(s, call_id);
    if (!r && !(r = add(s, call_id))) {
        log_warn("sim", "out of memory: no recording for call %s", call_id);
        return;
    }
    r->active = true;
    r->seconds = 0;
    r->written_ms = sim_wall_ms();
    write_file(s, r);   /* exists, empty, from the start: a recording being written */
}

void sim_rec_stop(sim *s, const char *call_id, int seconds)
{
    sim_rec *r = find(s, call_id);
    if (!r && !(r = add(s, call_id))) {   /* evicted while the call went on */
        log_warn("sim", "out of memory: no recording for call %s", call_id);
        return;
    }
    r->active = false;
    /* At least one second of audio, so even a fast-mode call has content. */
    r->seconds = clamp_seconds(seconds > 0 ? seconds : 1);
    r->written_ms = sim_wall_ms();
    write_file(s, r);
}

/* ---------------------------------------------------------------- downloads */

/* Parses "bytes=a-b", "bytes=a-", "bytes=-n" against size. 1 = range set,
 * 0 = no usable Range header (serve whole), -1 = unsatisfiable. */
static int parse_range(const char *h, uint64_t size, uint64_t *off, uint64_t *len)
{
    if (!h || strncmp(h, "bytes=", 6) != 0)
        return 0;
    const char *p = h + 6;
    if (strchr(p, ','))
        return 0;   /* multipart ranges: serving the whole file is allowed */
    char *end;
    uint64_t a, b;
    if (*p == '-') {
        unsigned long long n = strtoull(p + 1, &end, 10);
        if (end == p + 1 || *end || n == 0)
            return -1;
        if (size == 0)
            return -1;
        a = n >= size ? 0 : size - n;
        b = size - 1;
    } else {
        if (*p < '0' || *p > '9')
            return 0;
        a = strtoull(p, &end, 10);
        if (*end != '-')
            return 0;
        const char *q = end + 1;
        if (*q == 0) {
            b = size ? size - 1 : 0;
        } else {
            b = strtoull(q, &end, 10);
            if (*end)
                return 0;
            if (b < a)
                return -1;
            if (b >= size)
                b = size - 1;
        }
        if (a >= size)
            return -1;
    }
    *off = a;
    *len = b - a + 1;
    return 1;
}

/* 200, 206 or 416 for a body of size bytes; false when r was answered 416. */
static bool pick_range(sim_req *r, uint64_t size, unsigned *status, uint64_t *off, uint64_t *len)
{
    *off = 0;
    *len = size;
    int rr = parse_range(r->range, size, off, len);
    if (rr < 0) {
        sim_reply_error(r, 416, "Requested range not satisfiable", NULL);
        snprintf(r->content_range, sizeof r->content_range, "bytes */%" PRIu64, size);
        return false;
    }
    *status = rr ? 206 : 200;
    return true;
}

static void set_content_range(sim_req *r, uint64_t off, uint64_t len, uint64_t size)
{
    if (r->status == 206)
        snprintf(r->content_range, sizeof r->content_range,
                 "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, off, off + len - 1, size);
}

static void serve_file(sim_req *r, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    unsigned status;
    uint64_t off, len;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        sim_reply_error(r, 404, "Recording file not found", NULL);
        return;
    }
    if (!pick_range(r, (uint64_t)st.st_size, &status, &off, &len)) {
        close(fd);
        return;
    }
    sim_reply_fd(r, status, fd, off, len);
    set_content_range(r, off, len, (uint64_t)st.st_size);
}

void sim_rec_download(sim *s, sim_req *r, const char *call_id)
{
    if (s->recdir[0]) {
        char path[640];
        rec_path(s, call_id, path, sizeof path);
        serve_file(r, path);
        return;
    }
    const sim_rec *rec = find(s, call_id);
    unsigned status;
    uint64_t off, len, size;
    if (!rec) {
        sim_reply_error(r, 404, "Recording file not found", NULL);
        return;
    }
    size = sim_wav_size(rec->seconds);
    if (pick_range(r, size, &status, &off, &len)) {
        sim_reply_wav(r, status, rec->seconds, off, len);
        set_content_range(r, off, len, size);
    }
}

void sim_rec_download_file(sim *s, sim_req *r, const char *filename)
{
    char call_id[SIM_CALL_ID_SIZE];
    size_t n = strlen(filename);
    if (s->recdir[0]) {   /* any WAV in the directory, as on Kaphila's disk */
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", s->recdir, filename);
        serve_file(r, path);
        return;
    }
    /* rec-<callId>.wav: the only files the sim makes. */
    if (n <= 8 || n - 8 >= sizeof call_id || strncmp(filename, "rec-", 4) != 0 ||
        strcmp(filename + n - 4, ".wav") != 0) {
        sim_reply_error(r, 404, "Recording file not found", NULL);
        return;
    }
    memcpy(call_id, filename + 4, n - 8);
    call_id[n - 8] = 0;
    sim_rec_download(s, r, call_id);
}

/* ---------------------------------------------------------------- files[] */

bool sim_rec_filename_ok(const char *f)
{
    size_t n = strlen(f);
    return n > 4 && n < 200 && strcmp(f + n - 4, ".wav") == 0 && !strchr(f, '/') &&
           !strstr(f, "..") && f[0] != '.';
}

static json_t *file_entry(const char *name, uint64_t size, int64_t written_ms)
{
    char created[32];
    sim_iso_ms(written_ms, created);
    return json_pack("{s:s, s:I, s:s}", "filename", name, "size", (json_int_t)size, "createdAt",
                     created);
}

json_t *sim_recs_files(const sim *s)
{
    json_t *files = json_array();
    size_t listed = 0;
    if (!files)
        return NULL;
    if (!s->recdir[0]) {
        /* Newest first: with many recordings, the ones a client is after. */
        for (const sim_rec *r = s->recs->tail; r && listed < SIM_MAX_LISTED_FILES; r = r->prev) {
            char name[SIM_CALL_ID_SIZE + 8];
            snprintf(name, sizeof name, "rec-%s.wav", r->call_id);
            json_array_append_new(files, file_entry(name, sim_wav_size(r->seconds), r->written_ms));
            listed++;
        }
        return files;
    }
    DIR *d = opendir(s->recdir);
    if (!d)
        return files;
    struct dirent *e;
    while ((e = readdir(d)) && listed < SIM_MAX_LISTED_FILES) {
        if (!sim_rec_filename_ok(e->d_name))
            continue;
        char path[1024];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", s->recdir, e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        json_array_append_new(files, file_entry(e->d_name, (uint64_t)st.st_size,
                                                (int64_t)st.st_mtime * 1000));
        listed++;
    }
    closedir(d);
    return files;
}
