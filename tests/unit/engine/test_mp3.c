/* Unit tests for mp3: a WAV streamed through LAME gives plain MPEG layer III
 * frames (sync, one rate and bitrate, ending on a frame boundary) whose
 * length is the audio's plus LAME's delay; formats MP3 cannot carry, or that
 * twigate does not read, are refused; a set cancel flag stops the encode. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/mp3.h"

static void le16(unsigned char *p, unsigned v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }
static void le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* A temporary WAV of ms milliseconds of a tone; returns its fd. */
static int wav_file(unsigned channels, uint32_t rate, unsigned bits, uint32_t ms)
{
    char path[] = "/tmp/test_mp3-XXXXXX";
    int fd = mkstemp(path);
    uint32_t frames = rate / 1000 * ms, data = frames * channels * (bits / 8);
    unsigned char h[44];
    assert_true(fd >= 0);
    unlink(path);
    memcpy(h, "RIFF", 4);
    le32(h + 4, 36 + data);
    memcpy(h + 8, "WAVEfmt ", 8);
    le32(h + 16, 16);
    le16(h + 20, 1);
    le16(h + 22, channels);
    le32(h + 24, rate);
    le32(h + 28, rate * channels * (bits / 8));
    le16(h + 32, channels * (bits / 8));
    le16(h + 34, bits);
    memcpy(h + 36, "data", 4);
    le32(h + 40, data);
    assert_int_equal(write(fd, h, sizeof h), sizeof h);
    unsigned char *pcm = calloc(1, data ? data : 1);
    assert_non_null(pcm);
    for (uint32_t i = 0; bits == 16 && i < frames * channels; i++)
        le16(pcm + 2 * i, (unsigned)(uint16_t)(int16_t)((i % 20) * 800 - 8000));
    assert_int_equal(write(fd, pcm, data), (ssize_t)data);
    free(pcm);
    return fd;
}

static int tmp_out(void)
{
    char path[] = "/tmp/test_mp3-out-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    return fd;
}

/* Walks the frames of an MPEG-2/2.5 layer III file; returns seconds. */
static double mp3_seconds(int fd, unsigned *rate_out, unsigned *kbps_out, long *frames_out)
{
    static const unsigned br2[] = {0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160};
    static const unsigned sr25[] = {11025, 12000, 8000}, sr2[] = {22050, 24000, 16000};
    off_t size = lseek(fd, 0, SEEK_END);
    unsigned char *b = malloc((size_t)size);
    long frames = 0;
    off_t pos = 0;
    unsigned rate = 0, kbps = 0;
    assert_non_null(b);
    assert_int_equal(pread(fd, b, (size_t)size, 0), size);
    while (pos < size) {
        assert_true(pos + 4 <= size);
        uint32_t h = (uint32_t)b[pos] << 24 | (uint32_t)b[pos + 1] << 16 | (uint32_t)b[pos + 2] << 8 | b[pos + 3];
        assert_int_equal(h >> 21, 0x7FF);            /* frame sync */
        unsigned ver = (h >> 19) & 3, layer = (h >> 17) & 3;
        assert_true(ver == 0 || ver == 2);          /* MPEG 2.5 or 2 */
        assert_int_equal(layer, 1);                 /* layer III */
        kbps = br2[(h >> 12) & 15];
        rate = (ver == 0 ? sr25 : sr2)[(h >> 10) & 3];
        pos += 72 * kbps * 1000 / rate + ((h >> 9) & 1);
        frames++;
    }
    assert_true(pos == size);
    free(b);
    *rate_out = rate;
    *kbps_out = kbps;
    *frames_out = frames;
    return frames * 576.0 / rate;
}

static void test_wav_to_frames(void **state)
{
    (void)state;
    int in = wav_file(1, 8000, 16, 2500), out = tmp_out();
    int64_t ms = -1;
    unsigned rate, kbps;
    long frames;
    assert_int_equal(mp3_encode_wav(in, out, NULL, &ms), MP3_OK);
    assert_int_equal(ms, 2500);
    double s = mp3_seconds(out, &rate, &kbps, &frames);
    assert_int_equal(rate, 8000);
    assert_int_equal(kbps, 32);
    /* LAME's delay and the padded last frame add under a quarter second. */
    assert_true(s >= 2.5 && s <= 2.75);
    close(in);
    close(out);

    in = wav_file(1, 16000, 16, 1000);
    out = tmp_out();
    assert_int_equal(mp3_encode_wav(in, out, NULL, &ms), MP3_OK);
    s = mp3_seconds(out, &rate, &kbps, &frames);
    assert_int_equal(rate, 16000);
    assert_true(s >= 1.0 && s <= 1.2);
    close(in);
    close(out);
}

static void test_empty_and_refused(void **state)
{
    (void)state;
    int in = wav_file(1, 8000, 16, 0), out = tmp_out();
    assert_int_equal(mp3_encode_wav(in, out, NULL, NULL), MP3_OK);   /* no audio: no frames */
    close(in);
    close(out);
    static const struct { unsigned ch, rate, bits; } bad[] = {
        {1, 8000, 8}, {3, 8000, 16}, {1, 96000, 16},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        in = wav_file(bad[i].ch, bad[i].rate, bad[i].bits, 100);
        out = tmp_out();
        assert_int_equal(mp3_encode_wav(in, out, NULL, NULL), MP3_UNSUPPORTED);
        close(in);
        close(out);
    }
    /* Not a WAV at all. */
    out = tmp_out();
    in = tmp_out();
    assert_int_equal(write(in, "ID3 not a wav", 13), 13);
    assert_int_equal(mp3_encode_wav(in, out, NULL, NULL), MP3_UNSUPPORTED);
    close(in);
    close(out);
    assert_null(mp3_enc_create(8000, 0));
    assert_string_equal(mp3_strerror(MP3_CANCELED), "canceled (twigate is stopping)");
}

static void test_cancel(void **state)
{
    (void)state;
    int in = wav_file(1, 8000, 16, 5000), out = tmp_out();
    atomic_bool cancel;
    atomic_init(&cancel, true);
    assert_int_equal(mp3_encode_wav(in, out, &cancel, NULL), MP3_CANCELED);
    close(in);
    close(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wav_to_frames),
        cmocka_unit_test(test_empty_and_refused),
        cmocka_unit_test(test_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
