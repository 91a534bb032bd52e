/* sl_crc.h: CRC-32/ISO-HDLC (the zlib CRC) for frames and programs. */
#ifndef SL_CRC_H
#define SL_CRC_H

#include <stddef.h>
#include <stdint.h>

/* Running form: crc = sl_crc32_update(0, a, na); crc = sl_crc32_update(crc, b, nb); ...
 * gives the CRC of a||b (the pre/post inversion is inside). sl_crc32_update(0, "123456789", 9)
 * is 0xCBF43926. */
uint32_t sl_crc32_update(uint32_t crc, const uint8_t *data, size_t n);

#endif
