/* sl_cobs.c: COBS encoder (over several input parts, so a frame's header, payload and CRC need
 * not be copied together first) and an in-place-capable decoder. */
#include "sl_cobs.h"

sl_status sl_cobs_encode(const sl_bytes *parts, size_t nparts, uint8_t *out, size_t cap,
                         size_t *out_len)
{
    size_t code_at = 0; /* where the current block's code byte goes */
    size_t w = 1;       /* next write position */
    uint8_t code = 1;   /* 1 + bytes in the current block */
    size_t p, i;

    if (cap < 1)
        return SL_ERR_NO_SPACE;
    for (p = 0; p < nparts; p++) {
        for (i = 0; i < parts[p].len; i++) {
            uint8_t b = parts[p].data[i];
            if (code == 0xFF) {
                /* The previous block holds 254 data bytes: close it (no implied zero). Done
                 * lazily, so data ending on a full block gets no extra empty block (standard
                 * COBS). */
                out[code_at] = code;
                code_at = w;
                if (w >= cap)
                    return SL_ERR_NO_SPACE;
                w++;
                code = 1;
            }
            if (b == 0) {
                out[code_at] = code;
                code_at = w;
                if (w >= cap)
                    return SL_ERR_NO_SPACE;
                w++;
                code = 1;
                continue;
            }
            if (w >= cap)
                return SL_ERR_NO_SPACE;
            out[w++] = b;
            code++;
        }
    }
    out[code_at] = code;
    *out_len = w;
    return SL_OK;
}

sl_status sl_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap, size_t *out_len)
{
    size_t r = 0, w = 0;

    while (r < n) {
        uint8_t code = in[r++];
        size_t k;
        if (code == 0)
            return SL_ERR_BAD_FRAMING;
        if (r + (size_t)(code - 1) > n)
            return SL_ERR_BAD_FRAMING;
        for (k = 1; k < code; k++) {
            uint8_t b = in[r++];
            if (b == 0)
                return SL_ERR_BAD_FRAMING;
            if (w >= cap)
                return SL_ERR_NO_SPACE;
            out[w++] = b; /* w < r always, so decoding in place never overwrites unread input */
        }
        if (code != 0xFF && r < n) {
            if (w >= cap)
                return SL_ERR_NO_SPACE;
            out[w++] = 0;
        }
    }
    *out_len = w;
    return SL_OK;
}
