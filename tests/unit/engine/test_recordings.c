/* Unit tests for the pure half of recordings (recordings_media.c): WAV
 * header parsing, the time window → sample bytes arithmetic, the header of
 * a cut window, duration rounding and the Range header. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "engine/recordings.h"

/* 8 kHz, 16-bit mono: 16 bytes per millisecond, 2 per frame. */
#define RATE 8000

static void le16(unsigned char *p, unsigned v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }
static void le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A canonical 44-byte PCM header (what Kaphila's simulator writes). */
static size_t pcm_header(unsigned char *h, unsigned channels, uint32_t rate, unsigned bits,
                         uint32_t data_len)
{
    unsigned align = channels * bits / 8;
    memcpy(h, "RIFF", 4);
    le32(h + 4, 36 + data_len);
    memcpy(h + 8, "WAVEfmt ", 8);
    le32(h + 16, 16);
    le16(h + 20, 1);
    le16(h + 22, channels);
    le32(h + 24, rate);
    le32(h + 28, rate * align);
    le16(h + 32, align);
    le16(h + 34, bits);
    memcpy(h + 36, "data", 4);
    le32(h + 40, data_len);
    return 44;
}

static void test_parse_canonical(void **state)
{
    (void)state;
    unsigned char h[44];
    rec_wav w;
    pcm_header(h, 1, RATE, 16, 16000);
    assert_int_equal(rec_wav_parse(h, sizeof h, 44 + 16000, &w), 0);
    assert_int_equal(w.format, 1);
    assert_int_equal(w.channels, 1);
    assert_int_equal(w.sample_rate, RATE);
    assert_int_equal(w.block_align, 2);
    assert_int_equal(w.bits, 16);
    assert_int_equal(w.fmt_off, 20);
    assert_int_equal(w.fmt_len, 16);
    assert_int_equal(w.data_off, 44);
    assert_int_equal(w.data_len, 16000);
    assert_int_equal(rec_wav_ms(&w, w.data_len), 1000);
}

static void test_parse_skips_other_chunks(void **state)
{
    (void)state;
    /* RIFF, fmt, an odd-sized LIST chunk (plus its pad byte), then data. */
    unsigned char h[128] = {0};
    unsigned char canon[44];
    rec_wav w;
    pcm_header(canon, 2, 16000, 16, 0);
    memcpy(h, canon, 36);                 /* RIFF + fmt */
    memcpy(h + 36, "LIST", 4);
    le32(h + 40, 5);                      /* 5 bytes + 1 pad */
    memcpy(h + 44, "INFOx", 5);
    memcpy(h + 50, "data", 4);
    le32(h + 54, 400);
    assert_int_equal(rec_wav_parse(h, 58, 58 + 400, &w), 0);
    assert_int_equal(w.channels, 2);
    assert_int_equal(w.block_align, 4);
    assert_int_equal(w.data_off, 58);
    assert_int_equal(w.data_len, 400);
}

static void test_parse_unfinished_sizes(void **state)
{
    (void)state;
    unsigned char h[44];
    rec_wav w;
    /* A writer that never patched its sizes: the file is the truth (whole
     * frames only). */
    pcm_header(h, 1, RATE, 16, 0);
    assert_int_equal(rec_wav_parse(h, sizeof h, 44 + 1001, &w), 0);
    assert_int_equal(w.data_len, 1000);
    pcm_header(h, 1, RATE, 16, 0xFFFFFFFFu);
    assert_int_equal(rec_wav_parse(h, sizeof h, 44 + 320, &w), 0);
    assert_int_equal(w.data_len, 320);
    /* A size beyond the file (truncated download): clipped. */
    pcm_header(h, 1, RATE, 16, 16000);
    assert_int_equal(rec_wav_parse(h, sizeof h, 44 + 100, &w), 0);
    assert_int_equal(w.data_len, 100);
    /* Header only: no audio. */
    pcm_header(h, 1, RATE, 16, 0);
    assert_int_equal(rec_wav_parse(h, sizeof h, 44, &w), 0);
    assert_int_equal(w.data_len, 0);
}

static void test_parse_rejects(void **state)
{
    (void)state;
    unsigned char h[44], bad[44];
    rec_wav w;
    pcm_header(h, 1, RATE, 16, 100);
    assert_int_equal(rec_wav_parse(h, 11, 144, &w), -1);          /* too short */
    memcpy(bad, h, 44);
    memcpy(bad, "RIFX", 4);
    assert_int_equal(rec_wav_parse(bad, 44, 144, &w), -1);        /* big-endian RIFF */
    memcpy(bad, h, 44);
    memcpy(bad + 8, "AVI ", 4);
    assert_int_equal(rec_wav_parse(bad, 44, 144, &w), -1);        /* not WAVE */
    memcpy(bad, h, 44);
    le16(bad + 32, 0);
    assert_int_equal(rec_wav_parse(bad, 44, 144, &w), -1);        /* block align 0 */
    memcpy(bad, h, 44);
    le32(bad + 24, 0);
    assert_int_equal(rec_wav_parse(bad, 44, 144, &w), -1);        /* rate 0 */
    memcpy(bad, h, 44);
    le32(bad + 16, 12);
    assert_int_equal(rec_wav_parse(bad, 44, 144, &w), -1);        /* fmt too small */
    /* data before fmt */
    memcpy(bad, h, 12);
    memcpy(bad + 12, "data", 4);
    le32(bad + 16, 0);
    assert_int_equal(rec_wav_parse(bad, 20, 20, &w), -1);
    /* data chunk not within the bytes given */
    assert_int_equal(rec_wav_parse(h, 40, 144, &w), -1);
    /* a chunk size that would run past everything */
    memcpy(bad, h, 36);
    memcpy(bad + 36, "junk", 4);
    le32(bad + 40, 0xFFFFFFF0u);
    assert_int_equal(rec_wav_parse(bad, 44, 144, &w), -1);
}

static rec_wav mono8k(uint64_t data_len)
{
    unsigned char h[44];
    rec_wav w;
    pcm_header(h, 1, RATE, 16, (uint32_t)data_len);
    assert_int_equal(rec_wav_parse(h, sizeof h, 44 + data_len, &w), 0);
    return w;
}

static void test_window_inside(void **state)
{
    (void)state;
    rec_wav w = mono8k(16 * 3000);        /* 3 s */
    uint64_t off, len;
    rec_wav_window(&w, 1000, 500, &off, &len);
    assert_int_equal(off, 44 + 16000);
    assert_int_equal(len, 8000);
    /* Sub-millisecond precision is lost to frames, never to half a frame. */
    rec_wav_window(&w, 1, 1, &off, &len);
    assert_int_equal(off, 44 + 16);
    assert_int_equal(len, 16);
    assert_int_equal((off - 44) % w.block_align, 0);
}

static void test_window_clipped(void **state)
{
    (void)state;
    rec_wav w = mono8k(16 * 1000);        /* 1 s */
    uint64_t off, len;
    rec_wav_window(&w, 600, 1000, &off, &len);      /* runs past the end */
    assert_int_equal(off, 44 + 600 * 16);
    assert_int_equal(len, 400 * 16);
    rec_wav_window(&w, 1500, 1000, &off, &len);     /* starts past the end */
    assert_int_equal(len, 0);
    assert_int_equal(off, 44 + 16000);
    rec_wav_window(&w, -200, 700, &off, &len);      /* negative start: from 0 */
    assert_int_equal(off, 44);
    assert_int_equal(len, 500 * 16);
    rec_wav_window(&w, 250, -1, &off, &len);        /* open: to the end */
    assert_int_equal(off, 44 + 250 * 16);
    assert_int_equal(len, 750 * 16);
    rec_wav_window(&w, 250, 0, &off, &len);         /* empty */
    assert_int_equal(len, 0);
    rec_wav_window(&w, 0, INT64_MAX, &off, &len);   /* huge: no overflow */
    assert_int_equal(off, 44);
    assert_int_equal(len, 16000);
}

static void test_window_stereo_frames(void **state)
{
    (void)state;
    unsigned char h[44];
    rec_wav w;
    uint64_t off, len;
    pcm_header(h, 2, 44100, 16, 4 * 44100);         /* 1 s of stereo */
    assert_int_equal(rec_wav_parse(h, sizeof h, 44 + 4 * 44100, &w), 0);
    rec_wav_window(&w, 333, 333, &off, &len);
    assert_int_equal((off - 44) % 4, 0);
    assert_int_equal(len % 4, 0);
    assert_int_equal(off, 44 + (uint64_t)(333 * 44100 / 1000) * 4);
}

static void test_header_round_trip(void **state)
{
    (void)state;
    unsigned char src[44], out[REC_WAV_OUT_HEADER_MAX];
    rec_wav w, back;
    size_t n;
    pcm_header(src, 1, RATE, 16, 32000);
    assert_int_equal(rec_wav_parse(src, sizeof src, 44 + 32000, &w), 0);
    n = rec_wav_header(src + w.fmt_off, w.fmt_len, 8000, out);
    assert_int_equal(n, 44);
    assert_memory_equal(out + 8, src + 8, 32);   /* same layout, same fmt */
    assert_int_equal(rd32(out + 4), 36 + 8000);
    assert_int_equal(rd32(out + 40), 8000);
    assert_int_equal(rec_wav_parse(out, n, n + 8000, &back), 0);
    assert_int_equal(back.data_len, 8000);
    assert_int_equal(back.sample_rate, RATE);
    assert_int_equal(back.channels, 1);
}

static void test_header_odd_and_extensible(void **state)
{
    (void)state;
    unsigned char fmt[40] = {0}, out[REC_WAV_OUT_HEADER_MAX];
    rec_wav w;
    size_t n;
    le16(fmt, 0xFFFE);
    le16(fmt + 2, 1);
    le32(fmt + 4, RATE);
    le32(fmt + 8, RATE);
    le16(fmt + 12, 1);
    le16(fmt + 14, 8);
    n = rec_wav_header(fmt, 40, 7, out);          /* 8-bit: an odd data length */
    assert_int_equal(n, 12 + 8 + 40 + 8);
    /* RIFF size counts the pad byte the caller appends. */
    assert_int_equal(rd32(out + 4), n - 8 + 7 + 1);
    assert_int_equal(rd32(out + n - 4), 7);
    assert_int_equal(rec_wav_parse(out, n, n + 8, &w), 0);
    assert_int_equal(w.format, 0xFFFE);
    assert_int_equal(w.data_len, 7);
    /* Refused: fmt sizes outside 16..40, sizes past 32 bits. */
    assert_int_equal(rec_wav_header(fmt, 14, 10, out), 0);
    assert_int_equal(rec_wav_header(fmt, 42, 10, out), 0);
    assert_int_equal(rec_wav_header(fmt, 16, 0xFFFFFFF0u, out), 0);
}

static void test_duration(void **state)
{
    (void)state;
    assert_int_equal(rec_duration_s(-5), 0);
    assert_int_equal(rec_duration_s(0), 0);
    assert_int_equal(rec_duration_s(499), 0);
    assert_int_equal(rec_duration_s(500), 1);
    assert_int_equal(rec_duration_s(1499), 1);
    assert_int_equal(rec_duration_s(1500), 2);
    assert_int_equal(rec_duration_s(INT64_MAX), INT32_MAX);
}

static void test_range(void **state)
{
    (void)state;
    uint64_t off = 99, len = 99;
    assert_int_equal(rec_range_parse("bytes=0-99", 1000, &off, &len), REC_RANGE_OK);
    assert_int_equal(off, 0);
    assert_int_equal(len, 100);
    assert_int_equal(rec_range_parse("bytes=100-", 1000, &off, &len), REC_RANGE_OK);
    assert_int_equal(off, 100);
    assert_int_equal(len, 900);
    assert_int_equal(rec_range_parse("bytes=-100", 1000, &off, &len), REC_RANGE_OK);
    assert_int_equal(off, 900);
    assert_int_equal(len, 100);
    assert_int_equal(rec_range_parse("bytes=-5000", 1000, &off, &len), REC_RANGE_OK);
    assert_int_equal(off, 0);
    assert_int_equal(len, 1000);
    assert_int_equal(rec_range_parse("bytes=990-5000", 1000, &off, &len), REC_RANGE_OK);
    assert_int_equal(off, 990);
    assert_int_equal(len, 10);
    assert_int_equal(rec_range_parse(" Bytes = 5-5 ", 1000, &off, &len), REC_RANGE_OK);
    assert_int_equal(off, 5);
    assert_int_equal(len, 1);
    assert_int_equal(rec_range_parse("bytes=999-99999999999999999999999", 1000, &off, &len),
                     REC_RANGE_OK);
    assert_int_equal(len, 1);
}

static void test_range_refused_or_ignored(void **state)
{
    (void)state;
    uint64_t off, len;
    assert_int_equal(rec_range_parse(NULL, 1000, &off, &len), REC_RANGE_NONE);
    assert_int_equal(rec_range_parse("", 1000, &off, &len), REC_RANGE_NONE);
    assert_int_equal(rec_range_parse("items=0-1", 1000, &off, &len), REC_RANGE_NONE);
    assert_int_equal(rec_range_parse("bytes=0-1,5-6", 1000, &off, &len), REC_RANGE_NONE);
    assert_int_equal(rec_range_parse("bytes=5-1", 1000, &off, &len), REC_RANGE_NONE);
    assert_int_equal(rec_range_parse("bytes=a-1", 1000, &off, &len), REC_RANGE_NONE);
    assert_int_equal(rec_range_parse("bytes=1-2x", 1000, &off, &len), REC_RANGE_NONE);
    assert_int_equal(rec_range_parse("bytes=-", 1000, &off, &len), REC_RANGE_NONE);
    assert_int_equal(rec_range_parse("bytes 0-1", 1000, &off, &len), REC_RANGE_NONE);
    assert_int_equal(rec_range_parse("bytes=1000-", 1000, &off, &len), REC_RANGE_UNSATISFIABLE);
    assert_int_equal(rec_range_parse("bytes=2000-3000", 1000, &off, &len), REC_RANGE_UNSATISFIABLE);
    assert_int_equal(rec_range_parse("bytes=-0", 1000, &off, &len), REC_RANGE_UNSATISFIABLE);
    assert_int_equal(rec_range_parse("bytes=0-", 0, &off, &len), REC_RANGE_UNSATISFIABLE);
    assert_int_equal(rec_range_parse("bytes=-10", 0, &off, &len), REC_RANGE_UNSATISFIABLE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_canonical),
        cmocka_unit_test(test_parse_skips_other_chunks),
        cmocka_unit_test(test_parse_unfinished_sizes),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_window_inside),
        cmocka_unit_test(test_window_clipped),
        cmocka_unit_test(test_window_stereo_frames),
        cmocka_unit_test(test_header_round_trip),
        cmocka_unit_test(test_header_odd_and_extensible),
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_range),
        cmocka_unit_test(test_range_refused_or_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
