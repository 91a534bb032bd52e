/* sl_le.h: little-endian loads and stores (byte by byte: no alignment or endianness assumed). */
#ifndef SL_LE_H
#define SL_LE_H

#include <stdint.h>

static inline uint16_t sl_get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t sl_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline int32_t sl_get_i32(const uint8_t *p)
{
    uint32_t u = sl_get_u32(p);
    /* Two's complement without relying on implementation-defined conversion. */
    return (u & 0x80000000u) ? (int32_t)(u - 0x80000000u) - (int32_t)0x7FFFFFFF - 1 : (int32_t)u;
}

static inline int16_t sl_get_i16(const uint8_t *p)
{
    uint16_t u = sl_get_u16(p);
    return (u & 0x8000u) ? (int16_t)((int32_t)u - 65536) : (int16_t)u;
}

static inline void sl_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

static inline void sl_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((v >> 8) & 0xFFu);
    p[2] = (uint8_t)((v >> 16) & 0xFFu);
    p[3] = (uint8_t)(v >> 24);
}

#endif
