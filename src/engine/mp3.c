/* mp3.c — LAME behind a small handle, and a WAV file streamed through it.
 *
 * Map: the handle (create: LAME's parameters and why; pcm; flush;
 * destroy); mp3_encode_wav (header, chunks read with pread, little-endian
 * samples to native, writes). */
#include "engine/mp3.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lame/lame.h>

#include "engine/recordings.h"

/* LAME's documented worst case for one call: 1.25 × samples + 7200 bytes. */
#define MP3_OUT_BYTES (MP3_CHUNK_FRAMES * 5 / 4 + 7200)

struct mp3_enc {
    lame_global_flags *gf;
    unsigned           channels;
    unsigned char      out[MP3_OUT_BYTES];
};

static bool mpeg_rate(unsigned rate)
{
    static const unsigned rates[] = {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100,
                                     48000};
    for (size_t i = 0; i < sizeof rates / sizeof rates[0]; i++)
        if (rates[i] == rate) return true;
    return false;
}

mp3_enc *mp3_enc_create(unsigned rate, unsigned channels)
{
    mp3_enc *m;
    if (channels < 1 || channels > 2 || rate == 0 || rate > 48000) return NULL;
    if (!(m = calloc(1, sizeof *m))) return NULL;
    m->channels = channels;
    if (!(m->gf = lame_init())) goto fail;
    lame_set_num_channels(m->gf, (int)channels);
    lame_set_in_samplerate(m->gf, (int)rate);
    /* Keep the rate when MPEG audio has it (telephone audio is 8 kHz, an
     * MPEG-2.5 rate); otherwise (0) LAME resamples to the nearest one. */
    lame_set_out_samplerate(m->gf, mpeg_rate(rate) ? (int)rate : 0);
    lame_set_mode(m->gf, channels == 1 ? MONO : JOINT_STEREO);
    lame_set_brate(m->gf, (int)(channels * (rate <= 16000 ? 32 : 64)));
    /* 5 is LAME's "good speed" preset; 2 (its "high quality") takes about
     * twice the CPU for no difference a listener of a phone call hears. */
    lame_set_quality(m->gf, 5);
    /* No Xing/Info frame (LAME would leave a placeholder to be rewritten
     * at the start of the file) and no ID3 tag: plain frames, streamable. */
    lame_set_bWriteVbrTag(m->gf, 0);
    lame_set_write_id3tag_automatic(m->gf, 0);
    if (lame_init_params(m->gf) < 0) goto fail;
    return m;
fail:
    mp3_enc_destroy(m);
    return NULL;
}

void mp3_enc_destroy(mp3_enc *m)
{
    if (!m) return;
    if (m->gf) lame_close(m->gf);
    free(m);
}

long mp3_enc_pcm(mp3_enc *m, const int16_t *pcm, size_t frames, const unsigned char **out)
{
    int n;
    if (frames > MP3_CHUNK_FRAMES) return -1;
    /* LAME's prototypes take non-const buffers but do not write them
     * (except in the mono-from-stereo case, which this handle never sets). */
    if (m->channels == 1)
        n = lame_encode_buffer(m->gf, pcm, NULL, (int)frames, m->out, (int)sizeof m->out);
    else
        n = lame_encode_buffer_interleaved(m->gf, (short *)(uintptr_t)pcm, (int)frames, m->out,
                                           (int)sizeof m->out);
    *out = m->out;
    return n < 0 ? -1 : n;
}

long mp3_enc_flush(mp3_enc *m, const unsigned char **out)
{
    int n = lame_encode_flush(m->gf, m->out, (int)sizeof m->out);
    *out = m->out;
    return n < 0 ? -1 : n;
}

static bool write_all(int fd, const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static bool pread_all(int fd, unsigned char *p, size_t n, uint64_t off, size_t *got)
{
    *got = 0;
    while (*got < n) {
        ssize_t r = pread(fd, p + *got, n - *got, (off_t)(off + *got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return false;
        if (r == 0) break;
        *got += (size_t)r;
    }
    return true;
}

mp3_status mp3_encode_wav(int in_fd, int out_fd, const atomic_bool *cancel, int64_t *audio_ms)
{
    unsigned char *hdr = NULL, *raw = NULL;
    int16_t *pcm = NULL;
    mp3_enc *m = NULL;
    struct stat st;
    rec_wav w;
    size_t got;
    uint64_t done = 0;
    mp3_status rc = MP3_IO;
    const unsigned char *out;
    long n;

    if (audio_ms) *audio_ms = 0;
    if (fstat(in_fd, &st) != 0) goto out;
    rc = MP3_NOMEM;
    if (!(hdr = malloc(REC_WAV_HEADER_MAX))) goto out;
    rc = MP3_IO;
    if (!pread_all(in_fd, hdr, REC_WAV_HEADER_MAX, 0, &got)) goto out;
    rc = MP3_UNSUPPORTED;
    /* PCM (1) or WAVE_FORMAT_EXTENSIBLE, whose sub-format twigate does not
     * read: 16-bit samples either way, which is what Kaphila records. */
    if (rec_wav_parse(hdr, got, (uint64_t)st.st_size, &w) != 0 ||
        (w.format != 1 && w.format != 0xFFFE) || w.bits != 16 || w.channels < 1 ||
        w.channels > 2 || w.block_align != 2 * w.channels)
        goto out;
    if (!(m = mp3_enc_create(w.sample_rate, w.channels))) goto out;
    rc = MP3_NOMEM;
    if (!(raw = malloc((size_t)MP3_CHUNK_FRAMES * w.block_align)) ||
        !(pcm = malloc((size_t)MP3_CHUNK_FRAMES * w.block_align)))
        goto out;
    while (done < w.data_len) {
        uint64_t left = w.data_len - done;
        size_t want = left < (uint64_t)MP3_CHUNK_FRAMES * w.block_align
                      ? (size_t)left : (size_t)MP3_CHUNK_FRAMES * w.block_align;
        size_t frames;
        if (cancel && atomic_load(cancel)) {
            rc = MP3_CANCELED;
            goto out;
        }
        rc = MP3_IO;
        if (!pread_all(in_fd, raw, want, w.data_off + done, &got)) goto out;
        frames = got / w.block_align;
        if (frames == 0) break;   /* the file shrank: encode what there was */
        for (size_t i = 0; i < frames * w.channels; i++)
            pcm[i] = (int16_t)(uint16_t)(raw[2 * i] | raw[2 * i + 1] << 8);
        if ((n = mp3_enc_pcm(m, pcm, frames, &out)) < 0) goto out;
        if (!write_all(out_fd, out, (size_t)n)) goto out;
        done += (uint64_t)frames * w.block_align;
    }
    rc = MP3_IO;
    if ((n = mp3_enc_flush(m, &out)) < 0 || !write_all(out_fd, out, (size_t)n)) goto out;
    if (audio_ms) *audio_ms = rec_wav_ms(&w, done);
    rc = MP3_OK;
out:
    mp3_enc_destroy(m);
    free(pcm);
    free(raw);
    free(hdr);
    return rc;
}

const char *mp3_strerror(mp3_status s)
{
    switch (s) {
    case MP3_OK:          return "ok";
    case MP3_UNSUPPORTED: return "not a 16-bit PCM WAV of 1 or 2 channels that MP3 can carry";
    case MP3_IO:          return "reading the WAV or writing the MP3 failed";
    case MP3_NOMEM:       return "out of memory";
    case MP3_CANCELED:    return "canceled (twigate is stopping)";
    }
    return "?";
}
