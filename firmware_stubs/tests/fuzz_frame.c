/* tests/fuzz_frame.c: fuzzing the frame decoder, the program reader and the dispatcher.
 *
 * LLVMFuzzerTestOneInput is a libFuzzer entry point (`make fuzz-libfuzzer CC=clang`). The first
 * input byte picks how the rest is used:
 *   0: raw bytes fed to a board that has a program loaded (framing, resync, NACKs);
 *   1: records [type, len, payload...] each wrapped in a *valid* frame (CRC right), so the
 *      dispatcher's payload parsing (LOAD, RUN, RESET, HELLO, unknown types) is reached;
 *   2: a program blob whose CRC field is fixed up, so the reader's deeper checks are reached.
 * Every byte the board sends back must decode as an intact frame, or the run aborts.
 *
 * With -DSL_FUZZ_STANDALONE (`make fuzz`, ASan+UBSan) a main() runs a bounded, seeded random
 * campaign over the same entry point: random bytes, valid frames with random or mutated payloads,
 * and mutated valid programs. No crash, no sanitizer report, no hang (every loop is bounded). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sl_crc.h"
#include "sl_frame.h"
#include "sl_le.h"
#include "sl_program.h"
#include "sl_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static sl_proto g_fz;
static sl_rx g_check;
static unsigned long g_resp_types[256], g_err_codes[256], g_programs_accepted;
static uint8_t g_wire[SL_MAX_WIRE];
static uint8_t g_prog[SL_MAX_PROGRAM_BYTES];

static int checked_sink(void *user, const uint8_t *d, size_t n)
{
    size_t i;
    sl_frame f;
    (void)user;
    for (i = 0; i < n; i++) {
        sl_rx_event ev = sl_rx_push(&g_check, d[i], &f);
        if (ev != SL_RX_NONE && ev != SL_RX_FRAME) {
            fprintf(stderr, "fuzz: the board sent a damaged frame (event %d)\n", (int)ev);
            abort();
        }
        if (ev == SL_RX_FRAME && f.len > SL_MAX_PAYLOAD) {
            fprintf(stderr, "fuzz: the board sent a frame above its max payload\n");
            abort();
        }
        if (ev == SL_RX_FRAME) {
            g_resp_types[f.type]++;
            if (f.type == SL_MSG_ERROR && f.len > 0)
                g_err_codes[f.payload[0]]++;
        }
    }
    return 0;
}

/* A valid 2-layer program: 12 inputs -> 9 synaptic -> 3 rleaky-dense neurons. */
static size_t seed_program(uint8_t *out)
{
    uint32_t off = 48, start, i;
    memset(out, 0, 1024);
    memcpy(out, "SLPG", 4);
    sl_put_u16(out + 4, 1);
    out[6] = 1;
    sl_put_u16(out + 16, 2);
    sl_put_u16(out + 18, 12);
    sl_put_u16(out + 20, 3);
    sl_put_u16(out + 22, 8);
    /* layer 0: synaptic, 9 x 12 */
    start = off;
    out[off] = 1; out[off + 1] = 2; out[off + 3] = 2;
    sl_put_u16(out + off + 4, 12); sl_put_u16(out + off + 6, 9);
    off += 16;
    for (i = 0; i < 108; i++) out[off + i] = (uint8_t)(i * 37 + 11);
    off += 108;
    for (i = 0; i < 9; i++, off += 4) sl_put_u32(out + off, (uint32_t)(i * 5));
    for (i = 0; i < 9; i++, off += 4) sl_put_u32(out + off, 60u + i);
    for (i = 0; i < 9; i++) sl_put_u16(out + off + 2 * i, (uint16_t)(400 + 100 * i));
    off += 20;
    for (i = 0; i < 9; i++) sl_put_u16(out + off + 2 * i, (uint16_t)(900 + 50 * i));
    off += 20;
    sl_put_u32(out + start + 12, off - start);
    /* layer 1: rleaky dense, 3 x 9 */
    start = off;
    out[off] = 1; out[off + 1] = 3; out[off + 2] = 1; out[off + 3] = 3; out[off + 8] = 1;
    sl_put_u16(out + off + 4, 9); sl_put_u16(out + off + 6, 3);
    off += 16;
    for (i = 0; i < 27; i++) out[off + i] = (uint8_t)(i * 53 + 7);
    off += 28;
    for (i = 0; i < 3; i++, off += 4) sl_put_u32(out + off, (uint32_t)-3);
    for (i = 0; i < 3; i++, off += 4) sl_put_u32(out + off, 40u);
    for (i = 0; i < 3; i++) sl_put_u16(out + off + 2 * i, 300);
    off += 8;
    for (i = 0; i < 9; i++) out[off + i] = (uint8_t)(i * 29 + 3);
    off += 12;
    sl_put_u32(out + start + 12, off - start);
    sl_put_u32(out + 8, off);
    sl_put_u32(out + 12, sl_crc32_update(sl_crc32_update(0, out, 12), out + 16, off - 16));
    return off;
}

static void send_frame(uint8_t type, uint16_t seq, const uint8_t *p, size_t n)
{
    size_t w = 0;
    if (sl_frame_encode(SL_PROTOCOL_VERSION, type, seq, p, n, g_wire, sizeof g_wire, &w) != SL_OK)
        return;
    if (sl_proto_feed(&g_fz, g_wire, w) != SL_OK)
        abort();
}

static void board_with_program(void)
{
    static uint8_t p[12 + 1024];
    size_t n = seed_program(p + 12);
    sl_ostream out;
    out.write = checked_sink;
    out.user = 0;
    sl_rx_init(&g_check);
    sl_proto_init(&g_fz, out, 1);
    sl_put_u32(p, (uint32_t)n);
    sl_put_u32(p + 4, 0);
    sl_put_u32(p + 8, sl_crc32_update(0, p + 12, n));
    send_frame(SL_MSG_LOAD, 1, p, 12 + n);
    if (!g_fz.loaded) {
        fprintf(stderr, "fuzz: the seed program did not load\n");
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    board_with_program();
    switch (data[0] % 3u) {
    case 0:
        if (sl_proto_feed(&g_fz, data + 1, size - 1) != SL_OK)
            abort();
        break;
    case 1: {
        size_t r = 1;
        uint16_t seq = 100;
        while (r + 3 <= size) {
            uint8_t type = data[r];
            size_t len = sl_get_u16(data + r + 1);
            r += 3;
            if (len > size - r)
                len = size - r;
            if (len > SL_MAX_PAYLOAD)
                len = SL_MAX_PAYLOAD;
            send_frame(type, seq++, data + r, len);
            r += len;
        }
        break;
    }
    default: {
        static sl_program p;
        sl_diag d;
        size_t n = size - 1;
        if (n > sizeof g_prog)
            n = sizeof g_prog;
        memcpy(g_prog, data + 1, n);
        if (n >= 16)
            sl_put_u32(g_prog + 12,
                       sl_crc32_update(sl_crc32_update(0, g_prog, 12), g_prog + 16, n - 16));
        sl_diag_clear(&d);
        if (sl_program_parse(g_prog, n, &p, &d) == SL_OK) {
            g_programs_accepted++;
            /* A blob the reader accepts must be runnable: step it once. */
            static sl_core core;
            static uint8_t in[SL_MAX_INPUTS], out[SL_MAX_NEURONS];
            sl_core_reset(&core, &p);
            memset(in, 1, p.num_inputs);
            sl_core_step(&core, &p, in, out, 0);
        }
        break;
    }
    }
    return 0;
}

#ifdef SL_FUZZ_STANDALONE
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

static uint8_t g_in[8192];

/* Flip, overwrite, insert or delete a few bytes. */
static size_t mutate(uint8_t *b, size_t n, size_t cap)
{
    int k, edits = 1 + (int)(rnd() % 4u);
    for (k = 0; k < edits && n > 0; k++) {
        size_t at = rnd() % n;
        switch (rnd() % 4u) {
        case 0: b[at] ^= (uint8_t)(1u << (rnd() % 8u)); break;
        case 1: b[at] = (uint8_t)rnd(); break;
        case 2:
            if (n < cap) { memmove(b + at + 1, b + at, n - at); b[at] = (uint8_t)rnd(); n++; }
            break;
        default: memmove(b + at, b + at + 1, n - at - 1); n--; break;
        }
    }
    return n;
}

static size_t gen_records(uint8_t *b, size_t cap)
{
    static const uint8_t types[] = {SL_MSG_HELLO, SL_MSG_PING, SL_MSG_RESET, SL_MSG_LOAD,
                                    SL_MSG_RUN, SL_MSG_RUN, SL_MSG_RUN, 0x00, 0x7E, 0xFF};
    size_t n = 1, i;
    int recs = 1 + (int)(rnd() % 6u);
    b[0] = 1;
    while (recs-- > 0 && n + 3 + 600 < cap) {
        uint8_t type = types[rnd() % sizeof types];
        size_t len = 0;
        uint8_t *p = b + n + 3;
        if (type == SL_MSG_RUN) {
            uint16_t steps = (uint16_t)(1 + rnd() % 40u);
            size_t data = (rnd() % 2u) ? steps * 2u : (size_t)(rnd() % 120u);
            p[0] = (uint8_t)(rnd() % 4u);
            p[1] = (uint8_t)(rnd() % 3u == 0 ? 1 : 0);
            sl_put_u16(p + 2, (uint16_t)(rnd() % 3u == 0 ? rnd() : 1 + rnd() % 10u));
            sl_put_u32(p + 4, rnd() % 2u ? 0u : rnd() % 64u);
            sl_put_u16(p + 8, steps);
            for (i = 0; i < data; i++)
                p[10 + i] = (uint8_t)(p[1] ? rnd() % 14u : rnd() & 0x0Fu);
            len = 10 + data;
        } else if (type == SL_MSG_LOAD) {
            static uint8_t prog[1024];
            size_t pn = seed_program(prog), off = rnd() % 3u == 0 ? 0 : rnd() % pn,
                   chunk = rnd() % (pn - off + 1);
            if (chunk > 500)
                chunk = 500;
            sl_put_u32(p, (uint32_t)(rnd() % 4u == 0 ? rnd() : pn));
            sl_put_u32(p + 4, (uint32_t)off);
            sl_put_u32(p + 8, sl_crc32_update(0, prog, pn) ^ (rnd() % 4u == 0 ? 1u : 0u));
            memcpy(p + 12, prog + off, chunk);
            len = 12 + chunk;
        } else {
            len = rnd() % 40u;
            for (i = 0; i < len; i++)
                p[i] = (uint8_t)(rnd() % 3u);
        }
        if (rnd() % 5u == 0)
            len = mutate(p, len, 600);
        b[n] = type;
        sl_put_u16(b + n + 1, (uint16_t)len);
        n += 3 + len;
    }
    return n;
}

int main(int argc, char **argv)
{
    long runs = argc > 1 ? atol(argv[1]) : 20000, k;
    size_t n, i;
    for (k = 0; k < runs; k++) {
        switch (rnd() % 5u) {
        case 0: /* random bytes on the line */
            n = 1 + rnd() % 1500u;
            g_in[0] = 0;
            for (i = 1; i < n; i++)
                g_in[i] = (uint8_t)(rnd() % 4u == 0 ? 0 : rnd());
            break;
        case 1: /* valid frames on the line, then damaged */
        {
            size_t w = 0;
            uint8_t payload[64];
            n = 1;
            g_in[0] = 0;
            while (n + 200 < sizeof g_in && rnd() % 4u) {
                size_t plen = rnd() % sizeof payload;
                for (i = 0; i < plen; i++)
                    payload[i] = (uint8_t)rnd();
                if (sl_frame_encode(1, (uint8_t)(1 + rnd() % 5u), (uint16_t)rnd(), payload, plen,
                                    g_in + n, sizeof g_in - n, &w) == SL_OK)
                    n += w;
            }
            n = mutate(g_in + 1, n - 1, sizeof g_in - 1) + 1;
            break;
        }
        case 2:
        case 3:
            n = gen_records(g_in, sizeof g_in);
            break;
        default: /* mutated valid program */
            g_in[0] = 2;
            n = 1 + seed_program(g_in + 1);
            n = 1 + mutate(g_in + 1, n - 1, sizeof g_in - 1);
            break;
        }
        LLVMFuzzerTestOneInput(g_in, n);
    }
    printf("fuzz_frame: %ld inputs, no crash\n", runs);
    /* What the campaign reached (the pytest wrapper checks these are not zero). */
    printf("responses:");
    for (i = 0; i < 256; i++)
        if (g_resp_types[i])
            printf(" 0x%02X=%lu", (unsigned)i, g_resp_types[i]);
    printf("\nerror_codes:");
    for (i = 0; i < 256; i++)
        if (g_err_codes[i])
            printf(" %u=%lu", (unsigned)i, g_err_codes[i]);
    printf("\nprograms_accepted: %lu\n", g_programs_accepted);
    return 0;
}
#endif
