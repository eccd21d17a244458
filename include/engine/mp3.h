/* mp3 — 16-bit PCM to MP3 with LAME (libmp3lame), for the recording media
 * Twilio serves at …/Recordings/{RE}.mp3.
 *
 * Two layers: an encoder handle fed PCM frames in chunks (what the bench
 * drives), and mp3_encode_wav, which streams a whole WAV file through one
 * (what the recordings' encoder thread runs). Constant bitrate, no
 * ID3 or Xing/Info tag: the file is plain MPEG audio frames, so its length
 * is its duration × bitrate and a byte range is a range of frames.
 *
 * Pure CPU and file I/O, no shared state: any thread, one handle per
 * thread. LAME's own tables are initialised inside lame_init, which is
 * thread-safe since LAME 3.100. A handle owns its output buffer; the
 * pointer a call returns is valid until the next call on the handle. */
#ifndef TWIGATE_MP3_H
#define TWIGATE_MP3_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mp3_enc mp3_enc;

/* PCM frames per encode call: a buffer of 4096 frames is ~0.5 s at 8 kHz,
 * small enough to check for cancellation often, large enough that LAME's
 * per-call overhead does not show. */
#define MP3_CHUNK_FRAMES 4096

/* An encoder for rate Hz, channels 1 or 2. The bitrate follows the input:
 * 32 kbit/s per channel up to 16 kHz (telephone audio: Twilio's own MP3s
 * are 8 kHz mono at 32 kbit/s), 64 above. NULL when LAME refuses the
 * parameters (a rate MP3 cannot carry) or memory is short. */
mp3_enc *mp3_enc_create(unsigned rate, unsigned channels);
void mp3_enc_destroy(mp3_enc *m);   /* accepts NULL */

/* Encodes frames (at most MP3_CHUNK_FRAMES) of interleaved native-endian
 * samples; *out gets the MP3 bytes produced so far (often none: LAME holds
 * a frame or two back). Returns their count, or -1 on a LAME error. */
long mp3_enc_pcm(mp3_enc *m, const int16_t *pcm, size_t frames, const unsigned char **out);
/* The last frames, padded with silence. Same return as mp3_enc_pcm. */
long mp3_enc_flush(mp3_enc *m, const unsigned char **out);

typedef enum {
    MP3_OK = 0,
    MP3_UNSUPPORTED,   /* not a 16-bit PCM WAV of 1–2 channels at a rate MP3 carries */
    MP3_IO,            /* reading the WAV or writing the MP3 failed */
    MP3_NOMEM,
    MP3_CANCELED,      /* *cancel became true */
} mp3_status;

/* Encodes the WAV open at in_fd (read with pread: its offset is not moved)
 * and writes the MP3 to out_fd from its current offset. Checks *cancel
 * (may be NULL) between chunks. *audio_ms (may be NULL) gets the length of
 * the audio encoded. */
__attribute__((warn_unused_result))
mp3_status mp3_encode_wav(int in_fd, int out_fd, const atomic_bool *cancel, int64_t *audio_ms);
const char *mp3_strerror(mp3_status s);

#endif
