/* sl_core.c: the `mcu` profile's arithmetic, exactly as docs/fixed_point.md states it. Every
 * intermediate is int64 (the doc bounds them by 48 bits); shifts of possibly negative numbers are
 * written as multiplications, and the decay's rounding works on |x|, so nothing depends on C's
 * implementation-defined right shift of negative values. */
#include "sl_core.h"

#include <string.h>

#include "sl_le.h"

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

void sl_core_reset(sl_core *c, const sl_program *p)
{
    uint16_t k;
    for (k = 0; k < p->num_layers; k++) {
        size_t n = p->layers[k].num_neurons;
        memset(c->mem[k], 0, n * sizeof c->mem[k][0]);
        memset(c->syn[k], 0, n * sizeof c->syn[k][0]);
        memset(c->spk[k], 0, n * sizeof c->spk[k][0]);
    }
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
        int32_t X = sl_sat32(A + sl_get_i32(L->bias + 4u * i));
        int32_t theta = sl_get_i32(L->threshold + 4u * i);
        uint16_t dmem = sl_get_u16(L->decay_mem + 2u * i);
        int R = S[i];
        int64_t V;

        switch (L->neuron_type) {
        case SL_NEURON_LEAKY:
            if (L->reset_mode == SL_RESET_SUBTRACT)
                U[i] = sl_sat32(sl_dec(U[i], dmem) + X - (R ? (int64_t)theta : 0));
            else
                U[i] = R ? X : sl_sat32(sl_dec(U[i], dmem) + X);
            break;
        case SL_NEURON_SYNAPTIC:
            I[i] = sl_sat32(sl_dec(I[i], sl_get_u16(L->decay_syn + 2u * i)) + X);
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
    /* Spikes after all neurons are updated: the recurrence above read the previous step's R. */
    for (i = 0; i < N; i++) {
        S[i] = U[i] > sl_get_i32(L->threshold + 4u * i) ? 1u : 0u;
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
    for (k = 0; k < p->num_layers; k++) {
        layer_step(c, &p->layers[k], k, x, counters ? &counters[k] : 0);
        x = c->spk[k];
    }
    memcpy(out, c->spk[p->num_layers - 1], p->num_outputs);
}
