/* recordings_media.c — the pure parts of serving recordings: reading a WAV
 * header, turning a time window into sample bytes, writing the header of a
 * cut window, rounding durations, and the Range header. No I/O here, so
 * every case is a unit test (tests/unit/engine/test_recordings.c).
 *
 * Map: little-endian helpers; rec_wav_parse; window arithmetic;
 * rec_wav_header; rec_duration_s; rec_range_parse. */
#include "engine/recordings.h"

#include <limits.h>
#include <string.h>
#include <strings.h>

/* Sanity bounds on a fmt chunk: telephony audio is 8–48 kHz, at most a few
 * channels; a header outside these is damage, not audio we should cut. */
#define WAV_MAX_RATE        384000
#define WAV_MAX_BLOCK_ALIGN 256
/* Millisecond offsets are clamped here (≈ 3 years) so that ms × rate never
 * overflows 64 bits. */
#define WAV_MAX_MS 100000000000LL

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static unsigned le16(const unsigned char *p)
{
    return (unsigned)p[0] | (unsigned)p[1] << 8;
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

int rec_wav_parse(const unsigned char *p, size_t n, uint64_t file_size, rec_wav *out)
{
    size_t pos = 12;
    bool have_fmt = false;

    memset(out, 0, sizeof *out);
    if (n < 12 || memcmp(p, "RIFF", 4) != 0 || memcmp(p + 8, "WAVE", 4) != 0) return -1;
    while (pos + 8 <= n) {
        const unsigned char *id = p + pos;
        uint64_t size = le32(p + pos + 4);
        size_t body = pos + 8;
        if (memcmp(id, "fmt ", 4) == 0) {
            if (size < 16 || size > n - body) return -1;
            out->format = le16(p + body);
            out->channels = le16(p + body + 2);
            out->sample_rate = le32(p + body + 4);
            out->block_align = le16(p + body + 12);
            out->bits = le16(p + body + 14);
            out->fmt_off = body;
            out->fmt_len = (size_t)size;
            if (!out->channels || !out->sample_rate || out->sample_rate > WAV_MAX_RATE ||
                !out->block_align || out->block_align > WAV_MAX_BLOCK_ALIGN)
                return -1;
            have_fmt = true;
        } else if (memcmp(id, "data", 4) == 0) {
            uint64_t present = file_size > body ? file_size - body : 0;
            if (!have_fmt) return -1;
            out->data_off = body;
            /* A writer that never finalised its header leaves 0 or ~0 here;
             * the samples on disk are then the truth. */
            if (size == 0 || size == 0xFFFFFFFFu || size > present)
                out->data_len = present - present % out->block_align;
            else
                out->data_len = size;
            return 0;
        }
        /* Chunks are word aligned: an odd size is followed by a pad byte. */
        if (size > n) return -1;
        pos = body + (size_t)size + (size_t)(size & 1);
    }
    return -1;
}

int64_t rec_wav_ms(const rec_wav *w, uint64_t len)
{
    uint64_t frames = len / w->block_align;
    return (int64_t)(frames * 1000 / w->sample_rate);
}

static uint64_t ms_to_frames(const rec_wav *w, int64_t ms)
{
    if (ms <= 0) return 0;
    if (ms > WAV_MAX_MS) ms = WAV_MAX_MS;
    return (uint64_t)ms * w->sample_rate / 1000;
}

void rec_wav_window(const rec_wav *w, int64_t start_ms, int64_t len_ms, uint64_t *off,
                    uint64_t *len)
{
    uint64_t total = w->data_len / w->block_align;
    uint64_t s = ms_to_frames(w, start_ms);
    uint64_t e;
    if (s > total) s = total;
    if (len_ms < 0) {
        e = total;
    } else {
        int64_t from = start_ms > -WAV_MAX_MS ? start_ms : -WAV_MAX_MS;
        int64_t end_ms = from + (len_ms < WAV_MAX_MS ? len_ms : WAV_MAX_MS);
        e = ms_to_frames(w, end_ms);
        if (e > total) e = total;
        if (e < s) e = s;
    }
    *off = w->data_off + s * w->block_align;
    *len = (e - s) * w->block_align;
}

size_t rec_wav_header(const unsigned char *fmt, size_t fmt_len, uint64_t data_len,
                      unsigned char *out)
{
    size_t fmt_pad = fmt_len & 1;
    size_t hdr = 12 + 8 + fmt_len + fmt_pad + 8;
    uint64_t riff;
    if (fmt_len < 16 || fmt_len > 40) return 0;
    riff = (uint64_t)(hdr - 8) + data_len + (data_len & 1);
    if (riff > 0xFFFFFFFFu) return 0;
    memcpy(out, "RIFF", 4);
    put32(out + 4, (uint32_t)riff);
    memcpy(out + 8, "WAVEfmt ", 8);
    put32(out + 16, (uint32_t)fmt_len);
    memcpy(out + 20, fmt, fmt_len);
    if (fmt_pad) out[20 + fmt_len] = 0;
    memcpy(out + 20 + fmt_len + fmt_pad, "data", 4);
    put32(out + 24 + fmt_len + fmt_pad, (uint32_t)data_len);
    return hdr;
}

int rec_duration_s(int64_t ms)
{
    if (ms <= 0) return 0;
    if (ms > (int64_t)INT_MAX * 1000 - 500) return INT_MAX;
    return (int)((ms + 500) / 1000);
}

/* Decimal digits at *p into *v, saturating at UINT64_MAX; advances *p.
 * False when there is no digit. */
static bool digits(const char **p, uint64_t *v)
{
    const char *s = *p;
    uint64_t n = 0;
    while (*s >= '0' && *s <= '9') {
        unsigned d = (unsigned)(*s - '0');
        n = n > (UINT64_MAX - d) / 10 ? UINT64_MAX : n * 10 + d;
        s++;
    }
    if (s == *p) return false;
    *p = s;
    *v = n;
    return true;
}

static const char *skip_ws(const char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    return s;
}

rec_range rec_range_parse(const char *h, uint64_t size, uint64_t *off, uint64_t *len)
{
    const char *p;
    uint64_t a = 0, b = 0;
    bool have_b = false;

    if (!h) return REC_RANGE_NONE;
    p = skip_ws(h);
    /* The unit is case-insensitive; anything but bytes is ignored. */
    if (strncasecmp(p, "bytes", 5) != 0) return REC_RANGE_NONE;
    p = skip_ws(p + 5);
    if (*p != '=') return REC_RANGE_NONE;
    p = skip_ws(p + 1);
    /* Several ranges would need multipart/byteranges; the whole body is an
     * allowed answer to them. */
    if (strchr(p, ',')) return REC_RANGE_NONE;
    if (*p == '-') {
        p++;
        if (!digits(&p, &b) || *skip_ws(p)) return REC_RANGE_NONE;
        if (b == 0 || size == 0) return REC_RANGE_UNSATISFIABLE;
        *off = b >= size ? 0 : size - b;
        *len = size - *off;
        return REC_RANGE_OK;
    }
    if (!digits(&p, &a) || *p != '-') return REC_RANGE_NONE;
    p++;
    if (*p >= '0' && *p <= '9') {
        (void)digits(&p, &b);
        have_b = true;
    }
    if (*skip_ws(p)) return REC_RANGE_NONE;
    if (have_b && b < a) return REC_RANGE_NONE;   /* invalid spec: ignored, as RFC 9110 says */
    if (a >= size) return REC_RANGE_UNSATISFIABLE;
    if (!have_b || b >= size) b = size - 1;
    *off = a;
    *len = b - a + 1;
    return REC_RANGE_OK;
}
