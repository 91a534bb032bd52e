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

/* All state (U, I, R) to 0: the start of a sample. */
void sl_core_reset(sl_core *c, const sl_program *p);

/* One time step. in: [p->num_inputs] spikes (0/1); out: [p->num_outputs] spikes of the last layer;
 * counters: [p->num_layers], added to (may be NULL). */
void sl_core_step(sl_core *c, const sl_program *p, const uint8_t *in, uint8_t *out,
                  sl_counter *counters);

#endif
