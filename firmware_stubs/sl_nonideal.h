/* sl_nonideal.h: a seeded non-ideal chip (docs/fixed_point.md, "Non-ideal chips") — the chip
 * identity and the sigma of each quantity, set at build time (sl_config.h) or at boot
 * (sl_nonideal_configure, e.g. from the host port's command line), the counter-based generator,
 * and the integer rules that turn a program's nominal values into this chip's. The host never
 * learns the chip from the board: it is not part of any message. Same arithmetic as hw/nonideal.py. */
#ifndef SL_NONIDEAL_H
#define SL_NONIDEAL_H

#include <stdint.h>

#include "sl_config.h"

enum { SL_NI_THRESHOLD = 0, SL_NI_LEAK = 1, SL_NI_GAIN = 2, SL_NI_NOISE = 3, SL_NI_COUNT = 4 };
/* Quantity tags of the hash key (docs/fixed_point.md). */
enum { SL_TAG_THRESHOLD = 1, SL_TAG_DECAY_MEM = 2, SL_TAG_DECAY_SYN = 3, SL_TAG_GAIN = 4,
       SL_TAG_NOISE = 5 };

typedef struct {
    uint32_t chip;
    uint32_t sigma_q16[SL_NI_COUNT]; /* threshold, leak, gain, noise: floor(sigma * 2^16 + 0.5) */
} sl_chip_config;

/* Set this board's chip (boot time). sigma_q16 values above 65536 (sigma 1) are refused: returns
 * SL_ERR_BAD_INPUT-like nonzero; 0 on success. */
int sl_nonideal_configure(uint32_t chip, const uint32_t sigma_q16[SL_NI_COUNT]);
const sl_chip_config *sl_nonideal_chip(void);
/* Any sigma non-zero: the core applies the model. */
int sl_nonideal_active(void);

/* lowbias32: the bijective uint32 mix every draw is built from. */
uint32_t sl_hash32(uint32_t x);
/* hash32(hash32(chip) ^ (tag << 24 | layer << 16 | neuron)). */
uint32_t sl_ni_prefix(uint32_t chip, uint32_t tag, uint32_t layer, uint32_t neuron);
/* normal_q15(hash32(hash32(prefix ^ sample) ^ step)): approximately N(0, 1) in Q15. */
int32_t sl_ni_draw(uint32_t prefix, uint32_t sample, uint32_t step);
/* sigma * z in Q16: sign(z) * ((sigma_q16 * |z| + 2^14) >> 15). */
int64_t sl_ni_scaled(uint32_t sigma_q16, int32_t z);
/* v * g / 2^16, rounded half away from zero. */
int64_t sl_ni_mul_q16(int64_t v, int64_t g);
/* v * z / 2^15, rounded half away from zero (v >= 0). */
int64_t sl_ni_mul_q15(int64_t v, int32_t z);

#endif
