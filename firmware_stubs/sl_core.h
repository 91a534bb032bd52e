/* sl_core.h: the neuron core — the `mcu` integer arithmetic of docs/fixed_point.md, one time
 * step of the whole layer chain at a time. Pure functions for the arithmetic (sl_dec, sl_sat32)
 * and a state struct that sl_core_step advances. */
#ifndef SL_CORE_H
#define SL_CORE_H

#include <stdint.h>

#include "sl_config.h"
#include "sl_program.h"
#include "sl_status.h"

typedef struct {
    int32_t mem[SL_MAX_LAYERS][SL_MAX_NEURONS]; /* U */
    int32_t syn[SL_MAX_LAYERS][SL_MAX_NEURONS]; /* I (synaptic layers) */
    uint8_t spk[SL_MAX_LAYERS][SL_MAX_NEURONS]; /* S of the last step = R of the next */
    uint16_t active[SL_MAX_INPUTS];             /* scratch: indices of the spikes feeding a layer */
    uint16_t rec_active[SL_MAX_NEURONS];        /* scratch: indices of R for recurrence */

    /* The non-ideal chip (sl_nonideal.h), filled from the program's nominal values at each state
     * reset while a chip model is active: effective threshold and decays, gain (Q16), noise
     * amplitude and noise key prefix per neuron. */
    int ni;                                      /* the model applies to the current sample */
#if SL_NONIDEAL
    int32_t ni_thr[SL_MAX_LAYERS][SL_MAX_NEURONS];
    uint16_t ni_dmem[SL_MAX_LAYERS][SL_MAX_NEURONS];
    uint16_t ni_dsyn[SL_MAX_LAYERS][SL_MAX_NEURONS];
    int32_t ni_gain[SL_MAX_LAYERS][SL_MAX_NEURONS];
    int32_t ni_amp[SL_MAX_LAYERS][SL_MAX_NEURONS];
    uint32_t ni_prefix[SL_MAX_LAYERS][SL_MAX_NEURONS];
#endif
    /* The noise counters: samples started since power-up (the next sample's number), the current
     * sample's number and its step (0-based); fresh: reset since the last step. */
    uint32_t samples_started, sample, t;
    int fresh;
} sl_core;

/* Per spiking layer, counts accumulated by sl_core_step (docs/fixed_point.md "Counters"). */
typedef struct {
    uint32_t spikes;
    uint32_t synops;
} sl_counter;

/* dec(x, d) = sign(x) * ((|x| * (4096 - d) + 2048) >> 12), d in [0, 4096]. */
int64_t sl_dec(int64_t x, uint16_t d);
/* Saturate to int32. */
int32_t sl_sat32(int64_t x);

/* All state (U, I, R) to 0: the start of a sample. With a non-ideal chip active, also (re)derives
 * the chip's parameters from the program (a pure function of the program's nominal values, the
 * chip and the neuron's place: applying it at every reset equals applying it once at load). */
void sl_core_reset(sl_core *c, const sl_program *p);

/* One time step. in: [p->num_inputs] spikes (0/1); out: [p->num_outputs] spikes of the last layer;
 * counters: [p->num_layers], added to (may be NULL). */
void sl_core_step(sl_core *c, const sl_program *p, const uint8_t *in, uint8_t *out,
                  sl_counter *counters);

#endif
