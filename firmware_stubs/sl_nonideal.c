/* sl_nonideal.c: the non-ideal chip model of docs/fixed_point.md ("Non-ideal chips"), bit for bit
 * the rules of hw/nonideal.py. All arithmetic is on unsigned 32-bit words (the generator) and
 * exact int64 (the rules); negative numbers are never shifted. */
#include "sl_nonideal.h"

static sl_chip_config g_chip = {SL_CHIP_ID, {SL_SIGMA_THRESHOLD_Q16, SL_SIGMA_LEAK_Q16,
                                             SL_SIGMA_GAIN_Q16, SL_SIGMA_NOISE_Q16}};

int sl_nonideal_configure(uint32_t chip, const uint32_t sigma_q16[SL_NI_COUNT])
{
    int k;
    for (k = 0; k < SL_NI_COUNT; k++)
        if (sigma_q16[k] > 65536u)
            return 1;
    g_chip.chip = chip;
    for (k = 0; k < SL_NI_COUNT; k++)
        g_chip.sigma_q16[k] = sigma_q16[k];
    return 0;
}

const sl_chip_config *sl_nonideal_chip(void)
{
    return &g_chip;
}

int sl_nonideal_active(void)
{
    return (g_chip.sigma_q16[0] | g_chip.sigma_q16[1] | g_chip.sigma_q16[2] | g_chip.sigma_q16[3]) != 0u;
}

uint32_t sl_hash32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

uint32_t sl_ni_prefix(uint32_t chip, uint32_t tag, uint32_t layer, uint32_t neuron)
{
    return sl_hash32(sl_hash32(chip) ^ ((tag << 24) | (layer << 16) | neuron));
}

int32_t sl_ni_draw(uint32_t prefix, uint32_t sample, uint32_t step)
{
    uint32_t a = sl_hash32(sl_hash32(prefix ^ sample) ^ step);
    uint32_t b = sl_hash32(a ^ 0x9E3779B9u);
    int64_t s = (int64_t)(a & 0xFFFFu) + (int64_t)(a >> 16) + (int64_t)(b & 0xFFFFu) +
                (int64_t)(b >> 16) - 131070;
    int64_t m = ((s < 0 ? -s : s) * 56756 + 32768) >> 16;
    return (int32_t)(s < 0 ? -m : m);
}

int64_t sl_ni_scaled(uint32_t sigma_q16, int32_t z)
{
    int64_t az = z < 0 ? -(int64_t)z : (int64_t)z;
    int64_t m = ((int64_t)sigma_q16 * az + 16384) >> 15;
    return z < 0 ? -m : m;
}

int64_t sl_ni_mul_q16(int64_t v, int64_t g)
{
    int64_t av = v < 0 ? -v : v, ag = g < 0 ? -g : g;
    int64_t m = (av * ag + 32768) >> 16;
    return ((v < 0) != (g < 0)) ? -m : m;
}

int64_t sl_ni_mul_q15(int64_t v, int32_t z)
{
    int64_t az = z < 0 ? -(int64_t)z : (int64_t)z;
    int64_t m = (v * az + 16384) >> 15;
    return z < 0 ? -m : m;
}
