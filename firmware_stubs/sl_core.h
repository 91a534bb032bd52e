/* sl_core.h: the neuron core — the `mcu` integer arithmetic of docs/fixed_point.md, one time
 * step of the whole layer chain at a time (dense, convolution and pooling records; spike or graded
 * int8 network input). Pure functions for the arithmetic (sl_dec, sl_sat32)
 * and a state struct that sl_core_step advances. */
#ifndef SL_CORE_H
#define SL_CORE_H

#include <stdint.h>

#include "sl_config.h"
#include "sl_program.h"
#include "sl_status.h"

/* The neuron state lives in one pool of SL_MAX_NEURONS_TOTAL entries: layer k's neuron i is entry
 * p->layers[k].state + i (the layers' num_neurons in program order; a pooling record's outputs
 * take entries of spk too, as counts). */
typedef struct {
    int32_t mem[SL_MAX_NEURONS_TOTAL]; /* U */
    int32_t syn[SL_MAX_NEURONS_TOTAL]; /* I (synaptic layers) */
    uint8_t spk[SL_MAX_NEURONS_TOTAL]; /* S of the last step = R of the next; pooling: outputs */
    uint16_t active[SL_MAX_INPUTS];    /* scratch: indices of the non-zero inputs of a dense layer */
    uint16_t rec_active[SL_MAX_NEURONS]; /* scratch: indices of R for recurrence */

    /* The non-ideal chip (sl_nonideal.h), filled from the program's nominal values at each state
     * reset while a chip model is active: effective threshold and decays, gain (Q16), noise
     * amplitude and noise key prefix per neuron (same pool indices). */
    int ni;                                      /* the model applies to the current sample */
#if SL_NONIDEAL
    int32_t ni_thr[SL_MAX_NEURONS_TOTAL];
    uint16_t ni_dmem[SL_MAX_NEURONS_TOTAL];
    uint16_t ni_dsyn[SL_MAX_NEURONS_TOTAL];
    int32_t ni_gain[SL_MAX_NEURONS_TOTAL];
    int32_t ni_amp[SL_MAX_NEURONS_TOTAL];
    uint32_t ni_prefix[SL_MAX_NEURONS_TOTAL];
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

/* One time step. in: [p->num_inputs] spikes (0/1), or with p->graded_input int8 values (their
 * bytes); out: [p->num_outputs] spikes of the last layer; counters: [p->num_layers], added to (may
 * be NULL; a pooling record counts 0). */
void sl_core_step(sl_core *c, const sl_program *p, const uint8_t *in, uint8_t *out,
                  sl_counter *counters);

/* Layer k's spikes (a pooling record: its outputs) and membranes, [num_neurons] each. */
#define SL_CORE_SPIKES(c, p, k) ((c)->spk + (p)->layers[k].state)
#define SL_CORE_MEMBRANES(c, p, k) ((c)->mem + (p)->layers[k].state)

#endif
