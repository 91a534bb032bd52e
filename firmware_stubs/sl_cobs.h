/* sl_cobs.h: Consistent Overhead Byte Stuffing (no 0x00 in the output; docs/protocol.md). */
#ifndef SL_COBS_H
#define SL_COBS_H

#include <stddef.h>
#include <stdint.h>

#include "sl_status.h"

/* Worst-case encoded size of n raw bytes (without the 0x00 delimiter). */
#define SL_COBS_MAX_ENCODED(n) ((n) + (n) / 254u + 1u)

typedef struct {
    const uint8_t *data;
    size_t len;
} sl_bytes;

/* Encode the concatenation of parts[0..nparts) into out (capacity cap), without a delimiter.
 * SL_ERR_NO_SPACE when out is too small. */
SL_MUST_CHECK sl_status sl_cobs_encode(const sl_bytes *parts, size_t nparts, uint8_t *out,
                                       size_t cap, size_t *out_len);

/* Decode n encoded bytes (no delimiter) into out (capacity cap). out may equal in (in place).
 * SL_ERR_BAD_FRAMING for a 0x00 byte or a code running past the end; SL_ERR_NO_SPACE when out
 * is too small. */
SL_MUST_CHECK sl_status sl_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap,
                                       size_t *out_len);

#endif
