/* tests/board_output.h: decode what a board wrote (its output stream, captured in a buffer) into
 * frames, with an independent receiver; shared by the C tests. Needs sl_frame.h. */
#ifndef SL_TEST_BOARD_OUTPUT_H
#define SL_TEST_BOARD_OUTPUT_H

#include <string.h>

#include "sl_frame.h"

/* Decode every frame in buf[0..len): frame k goes to out[k], its payload copied into store[k].
 * Returns the number of frames, or -1 when the bytes hold anything but intact frames (a damaged
 * frame, a trailing partial one) or more than max frames. */
static int decode_board_output(const uint8_t *buf, size_t len, sl_frame *out,
                               uint8_t (*store)[SL_MAX_WIRE], int max)
{
    static sl_rx rx; /* static: the receive buffer is large for a test's stack */
    size_t i;
    int frames = 0;
    sl_rx_init(&rx);
    for (i = 0; i < len; i++) {
        sl_frame f;
        sl_rx_event ev = sl_rx_push(&rx, buf[i], &f);
        if (ev == SL_RX_NONE)
            continue;
        if (ev != SL_RX_FRAME || frames == max)
            return -1;
        memcpy(store[frames], f.payload, f.len);
        f.payload = store[frames];
        out[frames++] = f;
    }
    return rx.len == 0 ? frames : -1;
}

#endif
