/* fuzz_media — the recording media parsers: a WAV header from a file
 * Kaphila delivered (any bytes), the windows cut from it and the header
 * rewritten for them, and an HTTP Range header. Offsets must stay inside
 * the file and a rewritten header must parse back to the same layout. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "engine/recordings.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rec_wav w;
    uint64_t off, len;
    char range[128];
    /* The Range header: at most the first 100 bytes as text. */
    size_t rn = size < 100 ? size : 100;
    memcpy(range, data, rn);
    range[rn] = '\0';
    if (rec_range_parse(range, size, &off, &len) == REC_RANGE_OK && (off + len > size || len == 0))
        __builtin_trap();

    if (rec_wav_parse(data, size, size + (size & 7), &w) == 0) {
        if (w.data_off > size + (size & 7) || w.block_align == 0) __builtin_trap();
        int64_t total = rec_wav_ms(&w, w.data_len);
        rec_wav_window(&w, total / 3, total / 2, &off, &len);
        if (len && (off < w.data_off || off + len > w.data_off + w.data_len)) __builtin_trap();
        unsigned char hdr[REC_WAV_OUT_HEADER_MAX];
        size_t hn = w.fmt_off + w.fmt_len <= size
                        ? rec_wav_header(data + w.fmt_off, w.fmt_len, len, hdr) : 0;
        if (hn) {
            rec_wav back;
            if (rec_wav_parse(hdr, hn, hn + len, &back) != 0 || back.data_len != len ||
                back.data_off != hn || back.channels != w.channels)
                __builtin_trap();
        }
    }
    (void)rec_duration_s((int64_t)size * 1000);
    return 0;
}
