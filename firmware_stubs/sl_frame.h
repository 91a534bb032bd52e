/* sl_frame.h: frames on the wire (docs/protocol.md, section 1): COBS(header payload crc32) 0x00,
 * and a byte-at-a-time receiver that resyncs after line noise. */
#ifndef SL_FRAME_H
#define SL_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "sl_cobs.h"
#include "sl_config.h"
#include "sl_status.h"

#define SL_HEADER_BYTES 6u
#define SL_CRC_BYTES 4u
#define SL_PROTOCOL_MAX_PAYLOAD 4096u
#define SL_SEQ_NACK 0xFFFFu

/* Largest raw frame and largest wire frame (COBS + delimiter) of this build. */
#define SL_MAX_RAW (SL_HEADER_BYTES + SL_MAX_PAYLOAD + SL_CRC_BYTES)
#define SL_MAX_WIRE (SL_COBS_MAX_ENCODED(SL_MAX_RAW) + 1u)

typedef struct {
    uint8_t version;
    uint8_t type;
    uint16_t seq;
    uint16_t len;
    const uint8_t *payload; /* len bytes; points into the receiver's buffer */
    uint32_t crc;           /* the frame's CRC (identifies a retransmission) */
} sl_frame;

/* Encode one frame (with its trailing 0x00) into out. */
SL_MUST_CHECK sl_status sl_frame_encode(uint8_t version, uint8_t type, uint16_t seq,
                                        const uint8_t *payload, size_t len, uint8_t *out,
                                        size_t cap, size_t *out_len);

/* Decode a raw (already COBS-decoded) frame: SL_ERR_BAD_FRAMING for a runt, SL_ERR_OVERFLOW for
 * more than SL_MAX_RAW bytes (a payload above SL_MAX_PAYLOAD), SL_ERR_BAD_CRC for a length field
 * that disagrees with n or a CRC mismatch. On success f->len <= SL_MAX_PAYLOAD and f->payload
 * points into raw. */
SL_MUST_CHECK sl_status sl_frame_parse(const uint8_t *raw, size_t n, sl_frame *f);

typedef enum {
    SL_RX_NONE = 0,    /* byte stored, frame not complete */
    SL_RX_FRAME,       /* a valid frame is in *f (valid until the next push) */
    SL_RX_EMPTY,       /* a lone delimiter: ignore */
    SL_RX_BAD_CRC,     /* a frame was dropped: CRC mismatch */
    SL_RX_BAD_FRAMING, /* a frame was dropped: COBS error or runt */
    SL_RX_OVERFLOW     /* a frame was dropped: longer than the buffer, or its payload decoded
                        * to more than SL_MAX_PAYLOAD bytes */
} sl_rx_event;

typedef struct {
    /* Encoded bytes, decoded in place. Sized for the worst-case COBS overhead, so it can hold a
     * well-compressing frame with a few payload bytes more than SL_MAX_PAYLOAD (1029 for 1024):
     * sl_frame_parse refuses those. */
    uint8_t buf[SL_MAX_WIRE];
    size_t len;
    int overflow; /* dropping bytes until the next delimiter */
} sl_rx;

void sl_rx_init(sl_rx *rx);
sl_rx_event sl_rx_push(sl_rx *rx, uint8_t byte, sl_frame *f);

#endif
