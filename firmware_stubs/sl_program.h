/* sl_program.h: reading and validating a device program (docs/program_format.md, version 1,
 * profile mcu) in place: layer descriptors point into the program bytes; nothing is copied. */
#ifndef SL_PROGRAM_H
#define SL_PROGRAM_H

#include <stddef.h>
#include <stdint.h>

#include "sl_config.h"
#include "sl_diag.h"
#include "sl_status.h"

#define SL_PROGRAM_FORMAT_VERSION 1u
#define SL_PROGRAM_HEADER_BYTES 48u
#define SL_LAYER_HEADER_BYTES 16u
#define SL_PROFILE_MCU 1u

enum { SL_NEURON_LEAKY = 1, SL_NEURON_SYNAPTIC = 2, SL_NEURON_RLEAKY_DENSE = 3,
       SL_NEURON_RLEAKY_ELEMENTWISE = 4 };
enum { SL_RESET_SUBTRACT = 0, SL_RESET_ZERO = 1 };

/* BAD_PROGRAM / PROGRAM_TOO_LARGE detail codes: the check number of the failed rule in
 * docs/program_format.md "Validation" (rule "6.7" is check 6); the message starts with the rule
 * id. */
enum { SL_PCHECK_MAGIC = 1, SL_PCHECK_VERSION = 2, SL_PCHECK_SIZE = 3, SL_PCHECK_CRC = 4,
       SL_PCHECK_PROFILE = 5, SL_PCHECK_RECORD = 6, SL_PCHECK_CHAIN = 7, SL_PCHECK_RANGE = 8 };

typedef struct {
    uint8_t neuron_type;
    uint8_t reset_mode;
    uint8_t w_shift;
    uint8_t rec_shift;
    uint16_t fan_in;      /* M */
    uint16_t num_neurons; /* N */
    const uint8_t *weights;     /* i8 [N*M] row-major */
    const uint8_t *bias;        /* i32 [N] */
    const uint8_t *threshold;   /* i32 [N] */
    const uint8_t *decay_mem;   /* u16 [N] */
    const uint8_t *decay_syn;   /* u16 [N] or NULL */
    const uint8_t *rec_weights; /* i8 [N*N] or NULL */
    const uint8_t *rec_gain;    /* i32 [N] or NULL */
} sl_layer;

typedef struct {
    uint16_t num_layers;
    uint16_t num_inputs;
    uint16_t num_outputs;
    uint16_t num_steps;
    sl_layer layers[SL_MAX_LAYERS];
} sl_program;

/* Validate blob[0..n) (every rule of docs/program_format.md "Validation", in table order) against
 * this build's capacities and fill *p. On failure *d holds the first failed rule: BAD_PROGRAM or,
 * for rules 6.2, 8.1, 8.5 and 8.6, PROGRAM_TOO_LARGE (value = the limit); detail = the check
 * number, the message starts with the rule id. blob must stay alive while *p is used. */
SL_MUST_CHECK sl_status sl_program_parse(const uint8_t *blob, size_t n, sl_program *p, sl_diag *d);

#endif
