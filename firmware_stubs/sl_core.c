/* sl_core.c: the `mcu` profile's arithmetic, exactly as docs/fixed_point.md states it. Every
 * intermediate is int64 (the doc bounds them by 48 bits); shifts of possibly negative numbers are
 * written as multiplications, and the decay's rounding works on |x|, so nothing depends on C's
 * implementation-defined right shift of negative values. */
#include "sl_core.h"

#include <string.h>

#include "sl_le.h"
#include "sl_nonideal.h"

int64_t sl_dec(int64_t x, uint16_t d)
{
    int64_t ax = x < 0 ? -x : x;
    int64_t r = (ax * (int64_t)(4096 - (int32_t)d) + 2048) >> 12; /* ax >= 0: floor */
    return x < 0 ? -r : r;
}

int32_t sl_sat32(int64_t x)
{
    if (x > (int64_t)INT32_MAX)
        return INT32_MAX;
    if (x < (int64_t)INT32_MIN)
        return INT32_MIN;
    return (int32_t)x;
}

static int sl_i8(uint8_t b)
{
    return (int)b - ((b & 0x80u) ? 256 : 0);
}

#if SL_NONIDEAL
static int64_t clamp64(int64_t x, int64_t lo, int64_t hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

/* v + round(v * sigma * z) for the neuron's fixed-pattern draw of quantity `tag`. */
static int64_t deviate(const sl_chip_config *chip, uint32_t tag, uint32_t sigma, uint16_t k,
                       uint32_t i, int64_t v)
{
    int32_t z = sl_ni_draw(sl_ni_prefix(chip->chip, tag, k, i), 0u, 0u);
    return v + sl_ni_mul_q16(v, sl_ni_scaled(sigma, z));
}

/* The chip's parameters of every neuron (docs/fixed_point.md, "Non-ideal chips"). */
static void apply_chip(sl_core *c, const sl_program *p)
{
    const sl_chip_config *chip = sl_nonideal_chip();
    const uint32_t *sg = chip->sigma_q16;
    uint16_t k;
    for (k = 0; k < p->num_layers; k++) {
        const sl_layer *L = &p->layers[k];
        uint32_t i;
        for (i = 0; i < L->num_neurons; i++) {
            int64_t thr = sl_get_i32(L->threshold + 4u * i);
            int64_t g = sl_ni_scaled(sg[SL_NI_GAIN],
                                     sl_ni_draw(sl_ni_prefix(chip->chip, SL_TAG_GAIN, k, i), 0u, 0u));
            c->ni_thr[k][i] = (int32_t)clamp64(deviate(chip, SL_TAG_THRESHOLD, sg[SL_NI_THRESHOLD], k, i,
                                                       thr), 1, INT32_MAX);
            c->ni_dmem[k][i] = (uint16_t)clamp64(deviate(chip, SL_TAG_DECAY_MEM, sg[SL_NI_LEAK], k, i,
                                                         sl_get_u16(L->decay_mem + 2u * i)), 0, 4096);
            c->ni_dsyn[k][i] = L->decay_syn ?
                (uint16_t)clamp64(deviate(chip, SL_TAG_DECAY_SYN, sg[SL_NI_LEAK], k, i,
                                          sl_get_u16(L->decay_syn + 2u * i)), 0, 4096) : 0u;
            c->ni_gain[k][i] = (int32_t)clamp64(65536 + g, 0, INT32_MAX);
            c->ni_amp[k][i] = (int32_t)((thr * (int64_t)sg[SL_NI_NOISE] + 32768) >> 16);
            c->ni_prefix[k][i] = sl_ni_prefix(chip->chip, SL_TAG_NOISE, k, i);
        }
    }
}

#define NI_THR(k, i) c->ni_thr[k][i]
#define NI_DMEM(k, i) c->ni_dmem[k][i]
#define NI_DSYN(k, i) c->ni_dsyn[k][i]
#else /* the model left out of this build: c->ni is always 0 */
#define NI_THR(k, i) 0
#define NI_DMEM(k, i) 0u
#define NI_DSYN(k, i) 0u
#endif

void sl_core_reset(sl_core *c, const sl_program *p)
{
    uint16_t k;
    for (k = 0; k < p->num_layers; k++) {
        size_t n = p->layers[k].num_neurons;
        memset(c->mem[k], 0, n * sizeof c->mem[k][0]);
        memset(c->syn[k], 0, n * sizeof c->syn[k][0]);
        memset(c->spk[k], 0, n * sizeof c->spk[k][0]);
    }
#if SL_NONIDEAL
    c->ni = sl_nonideal_active();
    if (c->ni)
        apply_chip(c, p);
#else
    c->ni = 0;
#endif
    c->fresh = 1;
}

/* Weighted sum of the active inputs for neuron i, times 2^shift (exact). */
static int64_t dense_sum(const uint8_t *w, uint32_t row_len, uint32_t i, const uint16_t *active,
                         uint32_t n_active, uint8_t shift)
{
    const uint8_t *row = w + (size_t)i * row_len;
    int64_t acc = 0;
    uint32_t a;
    for (a = 0; a < n_active; a++)
        acc += sl_i8(row[active[a]]);
    return acc * ((int64_t)1 << shift);
}

static void layer_step(sl_core *c, const sl_layer *L, uint16_t k, const uint8_t *in,
                       sl_counter *counter)
{
    uint32_t N = L->num_neurons, M = L->fan_in, n_active = 0, n_rec = 0, i, spikes = 0;
    int32_t *U = c->mem[k], *I = c->syn[k];
    uint8_t *S = c->spk[k]; /* holds R on entry, S on exit */

    for (i = 0; i < M; i++)
        if (in[i])
            c->active[n_active++] = (uint16_t)i;
    if (L->neuron_type == SL_NEURON_RLEAKY_DENSE || L->neuron_type == SL_NEURON_RLEAKY_ELEMENTWISE)
        for (i = 0; i < N; i++)
            if (S[i])
                c->rec_active[n_rec++] = (uint16_t)i;

    for (i = 0; i < N; i++) {
        int64_t A = dense_sum(L->weights, M, i, c->active, n_active, L->w_shift);
        int32_t X, theta = c->ni ? NI_THR(k, i) : sl_get_i32(L->threshold + 4u * i);
        uint16_t dmem = c->ni ? NI_DMEM(k, i) : sl_get_u16(L->decay_mem + 2u * i);
        uint16_t dsyn = L->decay_syn ? (c->ni ? NI_DSYN(k, i) : sl_get_u16(L->decay_syn + 2u * i)) : 0u;
        int R = S[i];
        int64_t V;
#if SL_NONIDEAL
        if (c->ni)
            A = sl_ni_mul_q16(A, c->ni_gain[k][i]); /* the neuron's synaptic gain */
#endif
        X = sl_sat32(A + sl_get_i32(L->bias + 4u * i));

        switch (L->neuron_type) {
        case SL_NEURON_LEAKY:
            if (L->reset_mode == SL_RESET_SUBTRACT)
                U[i] = sl_sat32(sl_dec(U[i], dmem) + X - (R ? (int64_t)theta : 0));
            else
                U[i] = R ? X : sl_sat32(sl_dec(U[i], dmem) + X);
            break;
        case SL_NEURON_SYNAPTIC:
            I[i] = sl_sat32(sl_dec(I[i], dsyn) + X);
            V = sl_dec(U[i], dmem) + I[i];
            if (L->reset_mode == SL_RESET_SUBTRACT)
                U[i] = sl_sat32(V - (R ? (int64_t)theta : 0));
            else
                U[i] = R ? 0 : sl_sat32(V);
            break;
        default: /* rleaky, dense or elementwise recurrence from R */
        {
            int64_t Q;
            if (L->neuron_type == SL_NEURON_RLEAKY_DENSE)
                Q = dense_sum(L->rec_weights, N, i, c->rec_active, n_rec, L->rec_shift);
            else
                Q = R ? (int64_t)sl_get_i32(L->rec_gain + 4u * i) : 0;
            V = sl_dec(U[i], dmem) + X + Q;
            if (L->reset_mode == SL_RESET_SUBTRACT)
                U[i] = sl_sat32(V - (R ? (int64_t)theta : 0));
            else
                U[i] = R ? 0 : sl_sat32(V);
            break;
        }
        }
    }
#if SL_NONIDEAL
    if (c->ni) /* membrane noise of this (sample, step), before the spike test */
        for (i = 0; i < N; i++)
            U[i] = sl_sat32((int64_t)U[i] +
                            sl_ni_mul_q15(c->ni_amp[k][i], sl_ni_draw(c->ni_prefix[k][i], c->sample, c->t)));
#endif
    /* Spikes after all neurons are updated: the recurrence above read the previous step's R. */
    for (i = 0; i < N; i++) {
        S[i] = U[i] > (c->ni ? NI_THR(k, i) : sl_get_i32(L->threshold + 4u * i)) ? 1u : 0u;
        spikes += S[i];
    }
    if (counter) {
        counter->spikes += spikes;
        counter->synops += n_active * N;
        if (L->neuron_type == SL_NEURON_RLEAKY_DENSE)
            counter->synops += n_rec * N;
        else if (L->neuron_type == SL_NEURON_RLEAKY_ELEMENTWISE)
            counter->synops += n_rec;
    }
}

void sl_core_step(sl_core *c, const sl_program *p, const uint8_t *in, uint8_t *out,
                  sl_counter *counters)
{
    uint16_t k;
    const uint8_t *x = in;
    if (c->fresh) { /* the first step of a sample: number it (the noise counter) */
        c->sample = c->samples_started++;
        c->t = 0;
        c->fresh = 0;
    } else {
        c->t++;
    }
    for (k = 0; k < p->num_layers; k++) {
        layer_step(c, &p->layers[k], k, x, counters ? &counters[k] : 0);
        x = c->spk[k];
    }
    memcpy(out, c->spk[p->num_layers - 1], p->num_outputs);
}
