/* sl_program.h: reading and validating a device program (docs/program_format.md, versions 1 and
 * 2: dense, convolution and pooling records, spike or graded int8 input; profile mcu) in place:
 * layer descriptors point into the program bytes; nothing is copied. */
#ifndef SL_PROGRAM_H
#define SL_PROGRAM_H

#include <stddef.h>
#include <stdint.h>

#include "sl_config.h"
#include "sl_diag.h"
#include "sl_status.h"

#define SL_PROGRAM_FORMAT_VERSION 2u     /* the newest version read (1 and 2 are) */
#define SL_PROGRAM_FORMAT_MIN_VERSION 1u
#define SL_PROGRAM_HEADER_BYTES 48u
#define SL_LAYER_HEADER_BYTES 16u
#define SL_GEOMETRY_BYTES 16u
#define SL_PROFILE_MCU 1u
#define SL_PROGRAM_FLAG_GRADED_INPUT 0x01u /* header flags bit 0 (version 2) */
#define SL_MAX_POOL_KERNEL 15u

enum { SL_RECORD_DENSE = 1, SL_RECORD_CONV = 2, SL_RECORD_POOL = 3 };
enum { SL_POOL_NONE = 0, SL_POOL_MAX = 1, SL_POOL_SUM = 2 };

enum { SL_NEURON_LEAKY = 1, SL_NEURON_SYNAPTIC = 2, SL_NEURON_RLEAKY_DENSE = 3,
       SL_NEURON_RLEAKY_ELEMENTWISE = 4 };
enum { SL_RESET_SUBTRACT = 0, SL_RESET_ZERO = 1 };

/* BAD_PROGRAM / PROGRAM_TOO_LARGE detail codes: the check number of the failed rule in
 * docs/program_format.md "Validation" (rule "6.7" is check 6); the message starts with the rule
 * id. */
enum { SL_PCHECK_MAGIC = 1, SL_PCHECK_VERSION = 2, SL_PCHECK_SIZE = 3, SL_PCHECK_CRC = 4,
       SL_PCHECK_PROFILE = 5, SL_PCHECK_RECORD = 6, SL_PCHECK_CHAIN = 7, SL_PCHECK_RANGE = 8 };

/* The map geometry of a convolution or pooling record (docs/program_format.md, "Version 2"), with
 * the derived map sizes: convolution map conv_h x conv_w (a pooling record: in_h x in_w), output
 * map out_h x out_w. */
typedef struct {
    uint16_t in_c, in_h, in_w, out_c;
    uint8_t kernel, stride, padding, pool, pool_kernel, pool_stride;
    uint16_t conv_h, conv_w, out_h, out_w;
} sl_geometry;

typedef struct {
    uint8_t record_type;  /* SL_RECORD_* */
    uint8_t neuron_type;  /* 0 for a pooling record */
    uint8_t reset_mode;
    uint8_t w_shift;
    uint8_t rec_shift;
    uint16_t fan_in;      /* M */
    uint16_t num_neurons; /* N */
    uint32_t state;       /* index of neuron 0 in the core's state pool (sum of earlier N) */
    sl_geometry geo;      /* record types 2 and 3 */
    const uint8_t *weights;     /* i8 [N*M] row-major; conv: [C_out][C_in][k][k]; pool: NULL */
    const uint8_t *bias;        /* i32 [N] */
    const uint8_t *threshold;   /* i32 [N] */
    const uint8_t *decay_mem;   /* u16 [N] */
    const uint8_t *decay_syn;   /* u16 [N] or NULL */
    const uint8_t *rec_weights; /* i8 [N*N] or NULL */
    const uint8_t *rec_gain;    /* i32 [N] or NULL */
} sl_layer;

typedef struct {
    uint16_t version;
    uint8_t graded_input;      /* GRADED_INPUT: the network input is int8 values, not spikes */
    uint32_t input_scale_bits; /* float32 bits of input_scale (graded input), else 0 */
    uint32_t total_neurons;    /* sum of num_neurons over the records (the state pool used) */
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
