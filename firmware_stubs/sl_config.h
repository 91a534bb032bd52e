/* sl_config.h: every build option of the spikeloop firmware, in one place.
 *
 * A board port overrides any of these with -D on the compiler command line (or by defining them
 * before this header is included). All memory is static: these numbers fix the RAM the firmware
 * uses, and every one of them is checked before use and reported to the host in INFO
 * (docs/protocol.md, section 5). */
#ifndef SL_CONFIG_H
#define SL_CONFIG_H

/* Largest frame payload this build accepts and sends (bytes, 64..4096). Costs about 3x this in
 * RAM (receive buffer, response buffer, response cache). */
#ifndef SL_MAX_PAYLOAD
#define SL_MAX_PAYLOAD 1024
#endif

/* Largest program (docs/program_format.md) the board stores, in bytes. The program lives in RAM
 * and weights are read from it in place. */
#ifndef SL_MAX_PROGRAM_BYTES
#define SL_MAX_PROGRAM_BYTES 131072u
#endif

/* Most layers in a program, most neurons in one layer, most neurons of all layers together (the
 * state memory is one pool of SL_MAX_NEURONS_TOTAL neurons; a pooling record's outputs take their
 * places in it too), largest fan-in of a layer (so also the most network inputs; a convolution's
 * window C_in*k*k too). The defaults are the `mcu` profile's limits (hw/profiles/mcu.json). */
#ifndef SL_MAX_LAYERS
#define SL_MAX_LAYERS 8
#endif
#ifndef SL_MAX_NEURONS
#define SL_MAX_NEURONS 4096
#endif
#ifndef SL_MAX_NEURONS_TOTAL
#define SL_MAX_NEURONS_TOTAL 4096
#endif
#ifndef SL_MAX_INPUTS
#define SL_MAX_INPUTS 4096
#endif
/* Largest per-layer weight shift and recurrent shift (docs/fixed_point.md, profile mcu). */
#ifndef SL_MAX_SHIFT
#define SL_MAX_SHIFT 20
#endif

/* The non-ideal chip this build emulates (docs/fixed_point.md, "Non-ideal chips"): its identity
 * (uint32, the seed of its fixed pattern) and the sigma of threshold, leak (decay constants),
 * per-neuron synaptic gain and membrane noise, each as floor(sigma * 2^16 + 0.5) in 0..65536.
 * All 0: the ideal chip. The host port can override them at boot (--chip, --sigma-q16); the board
 * never reports them to the host. */
#ifndef SL_NONIDEAL   /* 0: leave the model out (saves 20 bytes per neuron of SL_MAX_NEURONS_TOTAL) */
#define SL_NONIDEAL 1
#endif
#ifndef SL_CHIP_ID
#define SL_CHIP_ID 0u
#endif
#ifndef SL_SIGMA_THRESHOLD_Q16
#define SL_SIGMA_THRESHOLD_Q16 0u
#endif
#ifndef SL_SIGMA_LEAK_Q16
#define SL_SIGMA_LEAK_Q16 0u
#endif
#ifndef SL_SIGMA_GAIN_Q16
#define SL_SIGMA_GAIN_Q16 0u
#endif
#ifndef SL_SIGMA_NOISE_Q16
#define SL_SIGMA_NOISE_Q16 0u
#endif

/* Firmware version reported in INFO. */
#define SL_FW_VERSION_MAJOR 0
#define SL_FW_VERSION_MINOR 1
#define SL_FW_VERSION_PATCH 0

/* Serial protocol version this build speaks (docs/protocol.md). Overridable only to test the
 * version check; a real build must leave it alone. */
#ifndef SL_PROTOCOL_VERSION
#define SL_PROTOCOL_VERSION 2
#endif
#define SL_PROTOCOL_MIN_VERSION SL_PROTOCOL_VERSION

/* Largest recording of one RUN frame (layer spikes and one layer's membranes, docs/protocol.md
 * section 3.1), in bytes: one static buffer, reported in INFO. */
#ifndef SL_MAX_RECORD_BYTES
#define SL_MAX_RECORD_BYTES 16384u
#endif

/* Name of the port reported in INFO (at most 32 characters). */
#ifndef SL_BOARD_NAME
#define SL_BOARD_NAME "unnamed-port"
#endif

/* Build string whose CRC-32 is the INFO build_id. */
#ifndef SL_BUILD_STRING
#define SL_BUILD_STRING __DATE__ " " __TIME__
#endif

#if SL_MAX_PAYLOAD < 64 || SL_MAX_PAYLOAD > 4096
#error "SL_MAX_PAYLOAD must be in 64..4096 (docs/protocol.md)"
#endif
#if SL_MAX_NEURONS > SL_MAX_NEURONS_TOTAL
#error "SL_MAX_NEURONS (one layer) must not exceed SL_MAX_NEURONS_TOTAL (the state pool)"
#endif
#if SL_MAX_NEURONS > 65535 || SL_MAX_INPUTS > 65535 || SL_MAX_LAYERS > 255
#error "SL_MAX_NEURONS/SL_MAX_INPUTS must fit u16 and SL_MAX_LAYERS u8 (INFO fields)"
#endif

#endif
