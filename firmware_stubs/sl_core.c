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
        if (L->record_type == SL_RECORD_POOL) /* no neurons: nothing varies */
            continue;
        for (i = 0; i < L->num_neurons; i++) {
            uint32_t e = L->state + i; /* the neuron's place in the state pool */
            int64_t thr = sl_get_i32(L->threshold + 4u * i);
            int64_t g = sl_ni_scaled(sg[SL_NI_GAIN],
                                     sl_ni_draw(sl_ni_prefix(chip->chip, SL_TAG_GAIN, k, i), 0u, 0u));
            c->ni_thr[e] = (int32_t)clamp64(deviate(chip, SL_TAG_THRESHOLD, sg[SL_NI_THRESHOLD], k, i,
                                                       thr), 1, INT32_MAX);
            c->ni_dmem[e] = (uint16_t)clamp64(deviate(chip, SL_TAG_DECAY_MEM, sg[SL_NI_LEAK], k, i,
                                                         sl_get_u16(L->decay_mem + 2u * i)), 0, 4096);
            c->ni_dsyn[e] = L->decay_syn ?
                (uint16_t)clamp64(deviate(chip, SL_TAG_DECAY_SYN, sg[SL_NI_LEAK], k, i,
                                          sl_get_u16(L->decay_syn + 2u * i)), 0, 4096) : 0u;
            c->ni_gain[e] = (int32_t)clamp64(65536 + g, 0, INT32_MAX);
            c->ni_amp[e] = (int32_t)((thr * (int64_t)sg[SL_NI_NOISE] + 32768) >> 16);
            c->ni_prefix[e] = sl_ni_prefix(chip->chip, SL_TAG_NOISE, k, i);
        }
    }
}

#define NI_THR(e) c->ni_thr[e]
#define NI_DMEM(e) c->ni_dmem[e]
#define NI_DSYN(e) c->ni_dsyn[e]
#else /* the model left out of this build: c->ni is always 0 */
#define NI_THR(e) 0
#define NI_DMEM(e) 0u
#define NI_DSYN(e) 0u
#endif

void sl_core_reset(sl_core *c, const sl_program *p)
{
    size_t n = p->total_neurons;
    memset(c->mem, 0, n * sizeof c->mem[0]);
    memset(c->syn, 0, n * sizeof c->syn[0]);
    memset(c->spk, 0, n * sizeof c->spk[0]);
#if SL_NONIDEAL
    c->ni = sl_nonideal_active();
    if (c->ni)
        apply_chip(c, p);
#else
    c->ni = 0;
#endif
    c->fresh = 1;
}

/* What a layer's input bytes hold: spikes 0/1, pool counts 0..225 (both: value = byte, events =
 * value), or graded int8 values (events = 1 per non-zero value; docs/fixed_point.md "Counters"). */
enum { IN_SPIKES = 0, IN_COUNTS = 1, IN_GRADED = 2 };

static int64_t in_value(uint8_t b, int kind)
{
    return kind == IN_GRADED ? (int64_t)sl_i8(b) : (int64_t)b;
}

static uint32_t in_events(uint8_t b, int kind)
{
    return kind == IN_GRADED ? (b != 0) : b;
}

/* Weighted sum of the non-zero inputs for neuron i, times 2^shift (exact). in == NULL: every
 * active input is 1 (spikes). */
static int64_t dense_sum(const uint8_t *w, uint32_t row_len, uint32_t i, const uint16_t *active,
                         uint32_t n_active, uint8_t shift, const uint8_t *in, int kind)
{
    const uint8_t *row = w + (size_t)i * row_len;
    int64_t acc = 0;
    uint32_t a;
    if (!in || kind == IN_SPIKES)
        for (a = 0; a < n_active; a++)
            acc += sl_i8(row[active[a]]);
    else
        for (a = 0; a < n_active; a++)
            acc += (int64_t)sl_i8(row[active[a]]) * in_value(in[active[a]], kind);
    return acc * ((int64_t)1 << shift);
}

/* The kernel taps [lo, hi) of a convolution output at map coordinate cy (or cx) that fall inside
 * the input (the rest read zero padding); start = cy * stride - padding. */
static void tap_range(int32_t start, int32_t k, int32_t size, int32_t *lo, int32_t *hi)
{
    *lo = start < 0 ? -start : 0;
    *hi = size - start < k ? size - start : k;
}

/* C[o, cy, cx] of docs/fixed_point.md (exact): the C_in*k*k inputs of one output, gathered. */
static int64_t conv_at(const sl_layer *L, const uint8_t *in, int kind, uint32_t o, uint32_t cy,
                       uint32_t cx)
{
    const sl_geometry *G = &L->geo;
    int32_t k = G->kernel, y0 = (int32_t)(cy * G->stride) - G->padding,
            x0 = (int32_t)(cx * G->stride) - G->padding, ylo, yhi, xlo, xhi, ky, kx;
    uint32_t ch;
    int64_t acc = 0;
    tap_range(y0, k, G->in_h, &ylo, &yhi);
    tap_range(x0, k, G->in_w, &xlo, &xhi);
    for (ch = 0; ch < G->in_c; ch++)
        for (ky = ylo; ky < yhi; ky++) {
            const uint8_t *s = in + ((size_t)ch * G->in_h + (uint32_t)(y0 + ky)) * G->in_w + x0;
            const uint8_t *w = L->weights + (((size_t)o * G->in_c + ch) * (uint32_t)k + (uint32_t)ky) *
                                                (uint32_t)k;
            if (kind == IN_GRADED) {
                for (kx = xlo; kx < xhi; kx++)
                    if (s[kx])
                        acc += (int64_t)sl_i8(w[kx]) * sl_i8(s[kx]);
            } else {
                for (kx = xlo; kx < xhi; kx++)
                    if (s[kx])
                        acc += (int64_t)sl_i8(w[kx]) * s[kx];
            }
        }
    return acc;
}

/* A of the convolution neuron (o, y, x) of the output map: C, or the max / sum of C over its
 * pooling window, times 2^w_shift (exact). */
static int64_t conv_input(const sl_layer *L, const uint8_t *in, int kind, uint32_t o, uint32_t y,
                          uint32_t x)
{
    const sl_geometry *G = &L->geo;
    uint32_t dy, dx;
    int64_t acc = 0;
    if (G->pool == SL_POOL_NONE) {
        acc = conv_at(L, in, kind, o, y, x);
    } else {
        for (dy = 0; dy < G->pool_kernel; dy++)
            for (dx = 0; dx < G->pool_kernel; dx++) {
                int64_t v = conv_at(L, in, kind, o, y * G->pool_stride + dy, x * G->pool_stride + dx);
                if (G->pool == SL_POOL_SUM)
                    acc += v;
                else if ((dy == 0 && dx == 0) || v > acc)
                    acc = v;
            }
    }
    return acc * ((int64_t)1 << L->w_shift);
}

/* Whether convolution-map row (or column) y lies inside at least one pooling window of an output
 * map of n_out rows (always without a pool). */
static int map_used(const sl_geometry *G, uint32_t y, uint32_t n_out)
{
    uint32_t w;
    if (G->pool == SL_POOL_NONE)
        return 1;
    w = y / G->pool_stride; /* the last window starting at or before y */
    if (w > n_out - 1u)
        w = n_out - 1u;
    return y - w * G->pool_stride < G->pool_kernel;
}

/* A convolution record's synaptic events of one step: over every used position of the
 * convolution map, the events of the inputs its kernel reads, times C_out (docs/fixed_point.md). */
static uint32_t conv_events(const sl_layer *L, const uint8_t *in, int kind)
{
    const sl_geometry *G = &L->geo;
    int32_t k = G->kernel, ylo, yhi, xlo, xhi, ky, kx;
    uint32_t cy, cx, ch, total = 0;
    for (cy = 0; cy < G->conv_h; cy++) {
        int32_t y0 = (int32_t)(cy * G->stride) - G->padding;
        if (!map_used(G, cy, G->out_h))
            continue;
        tap_range(y0, k, G->in_h, &ylo, &yhi);
        for (cx = 0; cx < G->conv_w; cx++) {
            int32_t x0 = (int32_t)(cx * G->stride) - G->padding;
            uint32_t e = 0;
            if (!map_used(G, cx, G->out_w))
                continue;
            tap_range(x0, k, G->in_w, &xlo, &xhi);
            for (ch = 0; ch < G->in_c; ch++)
                for (ky = ylo; ky < yhi; ky++) {
                    const uint8_t *s = in + ((size_t)ch * G->in_h + (uint32_t)(y0 + ky)) * G->in_w + x0;
                    for (kx = xlo; kx < xhi; kx++)
                        e += in_events(s[kx], kind);
                }
            total += e * G->out_c;
        }
    }
    return total;
}

/* A pooling record: per channel, the OR (max) or count (sum) of the input spikes over each
 * window, into out [C*Ho*Wo]. */
static void pool_step(const sl_layer *L, const uint8_t *in, uint8_t *out)
{
    const sl_geometry *G = &L->geo;
    uint32_t ch, y, x, dy, dx, i = 0;
    for (ch = 0; ch < G->out_c; ch++)
        for (y = 0; y < G->out_h; y++)
            for (x = 0; x < G->out_w; x++, i++) {
                uint32_t acc = 0;
                for (dy = 0; dy < G->pool_kernel; dy++) {
                    const uint8_t *s = in + ((size_t)ch * G->in_h + y * G->pool_stride + dy) * G->in_w +
                                       x * G->pool_stride;
                    for (dx = 0; dx < G->pool_kernel; dx++)
                        acc += s[dx] != 0;
                }
                out[i] = (uint8_t)(G->pool == SL_POOL_SUM ? acc : (acc != 0));
            }
}

static void layer_step(sl_core *c, const sl_layer *L, uint16_t k, const uint8_t *in, int kind,
                       sl_counter *counter)
{
    uint32_t N = L->num_neurons, M = L->fan_in, n_active = 0, n_rec = 0, i, spikes = 0, events = 0;
    uint32_t base = L->state, o = 0, y = 0, x = 0;
    int32_t *U = c->mem + base, *I = c->syn + base;
    uint8_t *S = c->spk + base; /* holds R on entry, S on exit */
    const int conv = L->record_type == SL_RECORD_CONV;

    if (L->record_type == SL_RECORD_POOL) {
        pool_step(L, in, S);
        return; /* 0 spikes, 0 synops */
    }
    if (!conv)
        for (i = 0; i < M; i++)
            if (in[i]) {
                c->active[n_active++] = (uint16_t)i;
                events += in_events(in[i], kind);
            }
    if (L->neuron_type == SL_NEURON_RLEAKY_DENSE || L->neuron_type == SL_NEURON_RLEAKY_ELEMENTWISE)
        for (i = 0; i < N; i++)
            if (S[i])
                c->rec_active[n_rec++] = (uint16_t)i;

    for (i = 0; i < N; i++) {
        int64_t A = conv ? conv_input(L, in, kind, o, y, x)
                         : dense_sum(L->weights, M, i, c->active, n_active, L->w_shift, in, kind);
        int32_t X, theta = c->ni ? NI_THR(base + i) : sl_get_i32(L->threshold + 4u * i);
        uint16_t dmem = c->ni ? NI_DMEM(base + i) : sl_get_u16(L->decay_mem + 2u * i);
        uint16_t dsyn = L->decay_syn ? (c->ni ? NI_DSYN(base + i) : sl_get_u16(L->decay_syn + 2u * i)) : 0u;
        int R = S[i];
        int64_t V;
        if (conv && ++x == L->geo.out_w) { /* the next neuron's (o, y, x) */
            x = 0;
            if (++y == L->geo.out_h) {
                y = 0;
                o++;
            }
        }
#if SL_NONIDEAL
        if (c->ni)
            /* the neuron's synaptic gain, on sat_40(A) so that the product stays in int64 */
            A = sl_ni_mul_q16(clamp64(A, -((int64_t)1 << 39), ((int64_t)1 << 39) - 1), c->ni_gain[base + i]);
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
                Q = dense_sum(L->rec_weights, N, i, c->rec_active, n_rec, L->rec_shift, 0, IN_SPIKES);
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
                            sl_ni_mul_q15(c->ni_amp[base + i], sl_ni_draw(c->ni_prefix[base + i], c->sample, c->t)));
#endif
    /* Spikes after all neurons are updated: the recurrence above read the previous step's R. */
    for (i = 0; i < N; i++) {
        S[i] = U[i] > (c->ni ? NI_THR(base + i) : sl_get_i32(L->threshold + 4u * i)) ? 1u : 0u;
        spikes += S[i];
    }
    if (counter) {
        counter->spikes += spikes;
        counter->synops += conv ? conv_events(L, in, kind) : events * N;
        if (L->neuron_type == SL_NEURON_RLEAKY_DENSE)
            counter->synops += n_rec * N;
        else if (L->neuron_type == SL_NEURON_RLEAKY_ELEMENTWISE)
            counter->synops += n_rec;
    }
    (void)k;
}

void sl_core_step(sl_core *c, const sl_program *p, const uint8_t *in, uint8_t *out,
                  sl_counter *counters)
{
    uint16_t k;
    const uint8_t *x = in;
    int kind = p->graded_input ? IN_GRADED : IN_SPIKES;
    if (c->fresh) { /* the first step of a sample: number it (the noise counter) */
        c->sample = c->samples_started++;
        c->t = 0;
        c->fresh = 0;
    } else {
        c->t++;
    }
    for (k = 0; k < p->num_layers; k++) {
        const sl_layer *L = &p->layers[k];
        layer_step(c, L, k, x, kind, counters ? &counters[k] : 0);
        x = c->spk + L->state;
        kind = L->record_type == SL_RECORD_POOL && L->geo.pool == SL_POOL_SUM ? IN_COUNTS : IN_SPIKES;
    }
    memcpy(out, c->spk + p->layers[p->num_layers - 1].state, p->num_outputs);
}
