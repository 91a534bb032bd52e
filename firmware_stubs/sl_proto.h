/* sl_proto.h: the board side of the serial protocol (docs/protocol.md): feeds received bytes
 * through the frame receiver, dispatches requests (HELLO, PING, RESET, LOAD, RUN, READ), suppresses
 * duplicates, and writes responses through an output stream callback — so the same code runs on a
 * memory buffer in tests, on a pty in the host port and on a UART on a board. */
#ifndef SL_PROTO_H
#define SL_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "sl_config.h"
#include "sl_core.h"
#include "sl_diag.h"
#include "sl_frame.h"
#include "sl_program.h"
#include "sl_status.h"

enum {
    SL_MSG_HELLO = 0x01, SL_MSG_PING = 0x02, SL_MSG_RESET = 0x03, SL_MSG_LOAD = 0x04,
    SL_MSG_RUN = 0x05, SL_MSG_READ = 0x06, SL_MSG_RESPONSE = 0x80, SL_MSG_ERROR = 0xFF
};
enum { SL_RUN_BEGIN = 0x01, SL_RUN_COUNTERS = 0x02, SL_RUN_REC_SPIKES = 0x04, SL_RUN_REC_MEMBRANE = 0x08 };
/* RUN input encodings: spikes (0, 1; also OUTPUT's), graded int8 values (2, 3). */
enum { SL_ENC_BITMAP = 0, SL_ENC_EVENTS = 1, SL_ENC_VALUES = 2, SL_ENC_HELD = 3 };

/* Output stream: write all n bytes, return 0 on success (non-zero: the link is gone). */
typedef struct {
    int (*write)(void *user, const uint8_t *data, size_t n);
    void *user;
} sl_ostream;

typedef struct {
    sl_ostream out;
    sl_rx rx;
    uint32_t boot_id;
    uint32_t build_id;
    uint32_t requests; /* request frames handled since init (duplicates included) */

    /* Duplicate suppression: the last request's seq and CRC, and the response sent for it. */
    int have_last;
    uint16_t last_seq;
    uint32_t last_crc;
    uint8_t tx[SL_MAX_WIRE];
    size_t tx_len;
    uint8_t nack[64];

    uint8_t payload[SL_MAX_PAYLOAD]; /* the response payload being built */
    uint8_t bitmap[SL_MAX_PAYLOAD];  /* scratch: output spikes of a RUN as a bitmap */

    /* The program: LOAD chunks land here; layer descriptors point into it. */
    uint32_t program_words[SL_MAX_PROGRAM_BYTES / 4u]; /* 4-aligned storage */
    int loading;
    uint32_t load_total, load_received, load_crc;
    int loaded;
    uint32_t program_crc;
    sl_program prog;

    sl_core core;
    uint32_t step; /* steps run since the last BEGIN/LOAD/RESET */
    uint8_t in_spk[SL_MAX_INPUTS];   /* one step's input: spikes 0/1, or int8 values (graded) */
    uint8_t out_spk[SL_MAX_NEURONS];
    sl_counter counters[SL_MAX_LAYERS];
    sl_diag diag;

    /* The recording of the last RUN that asked for one (docs/protocol.md section 3.1), read in
     * chunks by OUTPUT and READ; record_len 0: none. */
    uint8_t record[SL_MAX_RECORD_BYTES];
    uint32_t record_len;
    uint32_t record_first; /* first_step of the RUN that made it */
} sl_proto;

/* Cold start (as after power-up): no program, empty caches. */
void sl_proto_init(sl_proto *ctx, sl_ostream out, uint32_t boot_id);

/* Feed received bytes; responses are written to ctx->out as frames complete. Returns SL_ERR_IO
 * when the output stream failed, SL_OK otherwise (protocol errors are answered on the wire). */
SL_MUST_CHECK sl_status sl_proto_feed(sl_proto *ctx, const uint8_t *data, size_t n);

#endif
