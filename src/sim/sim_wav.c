/* sim_wav — the simulator's recordings: 8 kHz, 16-bit, mono PCM WAV files
 * holding a deterministic tone, so a download can be compared byte for byte
 * with the file on disk. Integer arithmetic only: the bytes are the same on
 * every machine. */
#include "sim_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WAV_RATE   8000
#define WAV_HEADER 44
/* A 400 Hz triangle wave: 20 samples per period at 8 kHz. */
#define TONE_PERIOD 20
#define TONE_PEAK   8000

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

int sim_wav_write(const char *path, int seconds)
{
    int rc = -1;
    FILE *f = NULL;
    char tmp[600];
    unsigned char *chunk = NULL;

    if (seconds < 0)
        seconds = 0;
    if (seconds > SIM_WAV_MAX_SECONDS)
        seconds = SIM_WAV_MAX_SECONDS;
    uint32_t samples = (uint32_t)seconds * WAV_RATE;
    uint32_t data_len = samples * 2;

    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        goto out;
    f = fopen(tmp, "wb");
    if (!f)
        goto out;

    unsigned char h[WAV_HEADER];
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
    if (fwrite(h, 1, sizeof h, f) != sizeof h)
        goto out;

    chunk = malloc(WAV_RATE * 2);
    if (!chunk)
        goto out;
    for (uint32_t done = 0; done < samples;) {
        uint32_t n = samples - done < WAV_RATE ? samples - done : WAV_RATE;
        for (uint32_t i = 0; i < n; i++)
            put_le16(chunk + 2 * i, (uint16_t)tone_sample(done + i));
        if (fwrite(chunk, 2, n, f) != n)
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
