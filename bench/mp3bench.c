/* mp3bench — how fast twigate encodes recording media to MP3: seconds of
 * audio per CPU second of mp3_encode_wav (src/mp3.c, LAME), the function
 * the rec-mp3 thread runs, on a generated WAV like Kaphila's (8 kHz mono
 * 16-bit; a 400 Hz tone under noise, so LAME has something to code).
 *
 *   mp3bench [seconds of audio (600)] [rate (8000)] [channels (1)]
 *
 * Prints one line: audio_s=… cpu_s=… ratio=… mp3_bytes=…  Built and run by
 * bench/run.sh (BENCH_ONLY=mp3) against the build's libtwigate.a. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/mp3.h"

static void put16(unsigned char *p, unsigned v) { p[0] = v & 255; p[1] = (v >> 8) & 255; }
static void put32(unsigned char *p, uint32_t v) { put16(p, v & 0xFFFF); put16(p + 2, v >> 16); }

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long secs = argc > 1 ? atol(argv[1]) : 600;
    unsigned rate = argc > 2 ? (unsigned)atoi(argv[2]) : 8000;
    unsigned ch = argc > 3 ? (unsigned)atoi(argv[3]) : 1;
    uint64_t frames = (uint64_t)secs * rate, data = frames * 2 * ch;
    char in_path[] = "/tmp/mp3bench-in-XXXXXX", out_path[] = "/tmp/mp3bench-out-XXXXXX";
    int in = mkstemp(in_path), out = mkstemp(out_path), rc = 1;
    unsigned char hdr[44], buf[8192];
    uint32_t noise = 12345;
    int64_t ms = 0;
    if (secs <= 0 || secs > 86400 || !rate || ch < 1 || ch > 2 || in < 0 || out < 0) {
        fprintf(stderr, "usage: mp3bench [seconds 1..86400] [rate] [channels 1|2]\n");
        goto done;
    }
    memcpy(hdr, "RIFF", 4); put32(hdr + 4, (uint32_t)(36 + data)); memcpy(hdr + 8, "WAVEfmt ", 8);
    put32(hdr + 16, 16); put16(hdr + 20, 1); put16(hdr + 22, ch); put32(hdr + 24, rate);
    put32(hdr + 28, rate * 2 * ch); put16(hdr + 32, 2 * ch); put16(hdr + 34, 16);
    memcpy(hdr + 36, "data", 4); put32(hdr + 40, (uint32_t)data);
    if (write(in, hdr, sizeof hdr) != (ssize_t)sizeof hdr) goto done;
    for (uint64_t f = 0; f < frames;) {
        size_t n = 0;
        for (; n + 2 * ch <= sizeof buf && f < frames; f++) {
            /* 400 Hz triangle (as the simulator records) plus white noise. */
            long phase = (long)(f * 400 % rate) * 4 * 8000 / (long)rate;
            long tri = phase < 16000 ? phase - 8000 : 24000 - phase;
            noise = noise * 1103515245u + 12345u;
            long s = tri / 2 + (long)((noise >> 16) & 0x1FFF) - 4096;
            for (unsigned c = 0; c < ch; c++, n += 2) put16(buf + n, (unsigned)(uint16_t)(int16_t)s);
        }
        if (write(in, buf, n) != (ssize_t)n) goto done;
    }
    double t0 = cpu_s();
    mp3_status st = mp3_encode_wav(in, out, NULL, &ms);
    double t1 = cpu_s();
    if (st != MP3_OK) {
        fprintf(stderr, "mp3bench: %s\n", mp3_strerror(st));
        goto done;
    }
    printf("audio_s=%.1f cpu_s=%.3f ratio=%.0f mp3_bytes=%lld rate=%u channels=%u\n",
           (double)ms / 1000.0, t1 - t0, (double)ms / 1000.0 / (t1 - t0),
           (long long)lseek(out, 0, SEEK_END), rate, ch);
    rc = 0;
done:
    if (in >= 0) { close(in); unlink(in_path); }
    if (out >= 0) { close(out); unlink(out_path); }
    return rc;
}
