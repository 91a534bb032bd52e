/* sl_frame.c: frame encoding, parsing and the resyncing receiver. */
#include "sl_frame.h"

#include "sl_crc.h"
#include "sl_le.h"

sl_status sl_frame_encode(uint8_t version, uint8_t type, uint16_t seq, const uint8_t *payload,
                          size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
    uint8_t header[SL_HEADER_BYTES];
    uint8_t crc_le[SL_CRC_BYTES];
    sl_bytes parts[3];
    uint32_t crc;
    size_t n = 0;
    sl_status st;

    if (len > SL_PROTOCOL_MAX_PAYLOAD)
        return SL_ERR_NO_SPACE;
    header[0] = version;
    header[1] = type;
    sl_put_u16(header + 2, seq);
    sl_put_u16(header + 4, (uint16_t)len);
    crc = sl_crc32_update(0, header, SL_HEADER_BYTES);
    crc = sl_crc32_update(crc, payload, len);
    sl_put_u32(crc_le, crc);
    parts[0].data = header;
    parts[0].len = SL_HEADER_BYTES;
    parts[1].data = payload;
    parts[1].len = len;
    parts[2].data = crc_le;
    parts[2].len = SL_CRC_BYTES;
    if (cap < 1)
        return SL_ERR_NO_SPACE;
    st = sl_cobs_encode(parts, 3, out, cap - 1, &n);
    if (st != SL_OK)
        return st;
    out[n++] = 0;
    *out_len = n;
    return SL_OK;
}

sl_status sl_frame_parse(const uint8_t *raw, size_t n, sl_frame *f)
{
    uint16_t len;
    uint32_t crc;

    if (n < SL_HEADER_BYTES + SL_CRC_BYTES)
        return SL_ERR_BAD_FRAMING;
    /* The receive buffer is sized for the worst-case COBS overhead, so a frame that compresses
     * well can decode to a few bytes more than SL_MAX_RAW (5 for SL_MAX_PAYLOAD 1024): refuse it
     * here, before any handler sees a payload longer than the buffers it is copied into. */
    if (n > SL_MAX_RAW)
        return SL_ERR_OVERFLOW;
    len = sl_get_u16(raw + 4);
    if ((size_t)len + SL_HEADER_BYTES + SL_CRC_BYTES != n)
        return SL_ERR_BAD_CRC; /* a corrupted length field reads as a damaged frame */
    crc = sl_crc32_update(0, raw, n - SL_CRC_BYTES);
    if (crc != sl_get_u32(raw + n - SL_CRC_BYTES))
        return SL_ERR_BAD_CRC;
    f->version = raw[0];
    f->type = raw[1];
    f->seq = sl_get_u16(raw + 2);
    f->len = len;
    f->payload = raw + SL_HEADER_BYTES;
    f->crc = crc;
    return SL_OK;
}

void sl_rx_init(sl_rx *rx)
{
    rx->len = 0;
    rx->overflow = 0;
}

sl_rx_event sl_rx_push(sl_rx *rx, uint8_t byte, sl_frame *f)
{
    size_t n = 0;
    sl_status st;

    if (byte != 0) {
        if (rx->overflow)
            return SL_RX_NONE;
        if (rx->len >= sizeof rx->buf) {
            rx->overflow = 1;
            rx->len = 0;
            return SL_RX_NONE;
        }
        rx->buf[rx->len++] = byte;
        return SL_RX_NONE;
    }
    /* Delimiter: whatever was collected is one frame (or garbage). */
    if (rx->overflow) {
        rx->overflow = 0;
        rx->len = 0;
        return SL_RX_OVERFLOW;
    }
    if (rx->len == 0)
        return SL_RX_EMPTY;
    st = sl_cobs_decode(rx->buf, rx->len, rx->buf, sizeof rx->buf, &n);
    rx->len = 0;
    if (st != SL_OK)
        return SL_RX_BAD_FRAMING;
    st = sl_frame_parse(rx->buf, n, f);
    if (st == SL_ERR_BAD_CRC)
        return SL_RX_BAD_CRC;
    if (st == SL_ERR_OVERFLOW)
        return SL_RX_OVERFLOW;
    if (st != SL_OK)
        return SL_RX_BAD_FRAMING;
    return SL_RX_FRAME;
}
