/* tests/fuzz_frame.c: fuzzing the frame decoder, the program reader and the dispatcher.
 *
 * LLVMFuzzerTestOneInput is a libFuzzer entry point (`make fuzz-libfuzzer CC=clang`). The first
 * input byte picks how the rest is used:
 *   0: raw bytes fed to a board that has a program loaded (framing, resync, NACKs);
 *   1: records, each sent as a *valid* frame (CRC right), so the dispatcher's payload parsing
 *      (LOAD, RUN, RESET, HELLO, unknown types) is reached. A record is [type, len:u16, ...]:
 *        len = 0xFFFF      send the previous frame again (a retransmission; no bytes follow);
 *        len & 0x8000      a payload of (len & 0x7FFF) copies of the one byte that follows, so a
 *                          few input bytes make frames of any length up to the protocol's 4096,
 *                          past SL_MAX_PAYLOAD and past the receive buffer;
 *        otherwise         len literal payload bytes (as many as the input has left);
 *      records stop once about 8 KiB of frames were sent (RECORD_BUDGET); after every RUN that
 *      the board answered with a recording (REC_SPIKES / REC_MEMBRANE, docs/protocol.md 3.1)
 *      the whole recording is read back with READs in chunks of a size the input picks;
 *   2: a program blob whose CRC field is fixed up, so the reader's deeper checks are reached;
 *   3: oversize COBS runs: [n:u16, code, fill] sends n non-zero bytes laid out as COBS blocks of
 *      `code` (0xFF: full 254-byte blocks), then a delimiter, then a valid PING.
 * Checked for every input (abort on failure, so libFuzzer saves the input):
 *   - every byte the board sends is part of an intact frame (decoded here with the COBS decoder
 *     and the CRC only, not with the receiver under test) with a payload <= SL_MAX_PAYLOAD;
 *   - every request frame gets exactly one answer: its response, or an OVERFLOW NACK when its
 *     payload is above SL_MAX_PAYLOAD;
 *   - a retransmitted frame gets byte for byte the answer the original got;
 *   - every OUTPUT with a recording carries record_total = n_steps x (the program's bitmap rows
 *     + 4 x the membrane layer's neurons), computed here, and a first chunk equal to the board's
 *     recording; every RECORD lies inside the recording and carries its bytes; a READ sweep
 *     reassembles exactly record_total bytes;
 *   - after a delimiter the board is in sync: the PING after a COBS run gets its PONG;
 *   - a program the reader accepts can be stepped.
 *
 * With -DSL_FUZZ_STANDALONE (`make fuzz`, ASan+UBSan) a main() first sweeps the boundaries
 * (PING payloads of every length 0 .. receive buffer + 8 in two fills, each retransmitted, and COBS
 * runs of every length 0 .. receive buffer + 8), then runs a bounded, seeded random campaign over
 * the same entry point: random bytes, valid frames with random, mutated or oversize payloads, COBS
 * runs and mutated valid programs. No crash, no sanitizer report, no hang (every loop is
 * bounded). Both builds print what the campaign reached (stdout standalone, stderr at exit with
 * libFuzzer). */
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

#define PROTO_MAX_RAW (SL_HEADER_BYTES + SL_PROTOCOL_MAX_PAYLOAD + SL_CRC_BYTES)
#define PROTO_MAX_WIRE (SL_COBS_MAX_ENCODED(PROTO_MAX_RAW) + 1u)

static sl_proto g_fz;
static uint8_t g_wire[PROTO_MAX_WIRE];
static uint8_t g_prog[SL_MAX_PROGRAM_BYTES];

/* What the campaign reached. */
static unsigned long g_inputs, g_resp_types[256], g_err_codes[256], g_programs_accepted;
static unsigned long g_oversize_frames, g_overflow_nacks, g_retransmissions, g_cobs_runs;
static unsigned long g_recordings, g_record_chunks, g_record_sweeps;

/* The independent checker of the board's output: bytes since the last delimiter, and what the
 * current send_frame() call received. */
static uint8_t g_chk[2 * PROTO_MAX_WIRE];
static size_t g_chk_len;
static uint8_t g_out[2 * SL_MAX_WIRE];
static size_t g_out_len;
static unsigned g_out_frames;
static int g_out_last_type, g_out_last_code, g_out_last_seq;
static size_t g_last_payload_len;

/* The previous request frame and its answer (for retransmissions). */
static uint8_t g_last_req[PROTO_MAX_WIRE], g_last_out[2 * SL_MAX_WIRE];
static size_t g_last_req_len, g_last_out_len;

static void die(const char *why)
{
    fprintf(stderr, "fuzz: %s\n", why);
    abort();
}

/* The OUTPUT of a RUN that recorded (payload p, len n): its record_total and first chunk. The
 * offset of record_total is found by walking the spike encoding and the counters, and the
 * expected size is computed from the program's layer sizes, not from the board's buffer. */
static void check_output_record(const uint8_t *p, size_t n)
{
    const sl_program *prog = &g_fz.prog;
    uint32_t steps = sl_get_u16(p + 8), N = prog->num_outputs, o = 12, s, k, step = 0, total, chunk;
    uint32_t w = N <= 255u ? 1u : 2u;
    if (p[1] == SL_ENC_BITMAP) {
        o += steps * ((N + 7u) / 8u);
    } else {
        for (s = 0; s < steps; s++) {
            if (o + w > n)
                die("OUTPUT events truncated");
            o += w * (1u + (w == 1u ? p[o] : sl_get_u16(p + o)));
        }
    }
    if (p[0] & SL_RUN_COUNTERS)
        o += 1u + 8u * prog->num_layers;
    if (p[0] & SL_RUN_REC_SPIKES)
        for (k = 0; k < prog->num_layers; k++)
            step += (prog->layers[k].num_neurons + 7u) / 8u;
    if (p[0] & SL_RUN_REC_MEMBRANE) {
        if (p[10] >= prog->num_layers)
            die("OUTPUT of a recording names a layer the program lacks");
        step += 4u * prog->layers[p[10]].num_neurons;
    }
    if (o + 4u > n)
        die("OUTPUT of a recording has no record_total");
    total = sl_get_u32(p + o);
    chunk = (uint32_t)n - o - 4u;
    if (total != steps * step || total > SL_MAX_RECORD_BYTES || total != g_fz.record_len)
        die("OUTPUT record_total is not the size of the recording asked for");
    if (chunk > total || (chunk < total && n != SL_MAX_PAYLOAD))
        die("OUTPUT first chunk is not as long as fits");
    if (memcmp(p + o + 4u, g_fz.record, chunk) != 0)
        die("OUTPUT first chunk differs from the recording");
    g_recordings++;
}

/* A RECORD answer (payload p, len n) lies inside the board's recording and carries its bytes. */
static void check_record_chunk(const uint8_t *p, size_t n)
{
    uint32_t offset, total;
    if (n <= 12)
        die("RECORD without data");
    offset = sl_get_u32(p + 4);
    total = sl_get_u32(p + 8);
    if (total != g_fz.record_len || total > SL_MAX_RECORD_BYTES || offset >= total ||
        n - 12u > total - offset || sl_get_u32(p) != g_fz.record_first)
        die("RECORD outside the recording");
    if (memcmp(p + 12, g_fz.record + offset, n - 12u) != 0)
        die("RECORD bytes differ from the recording");
    g_record_chunks++;
}

/* One complete frame from the board: COBS-decode and check it with the primitives only. */
static void check_board_frame(const uint8_t *enc, size_t n)
{
    static uint8_t raw[2 * PROTO_MAX_WIRE];
    size_t m = 0, len;
    if (sl_cobs_decode(enc, n, raw, sizeof raw, &m) != SL_OK)
        die("the board sent bytes that are not COBS");
    if (m < SL_HEADER_BYTES + SL_CRC_BYTES)
        die("the board sent a runt frame");
    len = sl_get_u16(raw + 4);
    if (len + SL_HEADER_BYTES + SL_CRC_BYTES != m)
        die("the board sent a frame whose length field is wrong");
    if (sl_crc32_update(0, raw, m - SL_CRC_BYTES) != sl_get_u32(raw + m - SL_CRC_BYTES))
        die("the board sent a frame with a bad CRC");
    if (len > SL_MAX_PAYLOAD)
        die("the board sent a frame above its max payload");
    g_resp_types[raw[1]]++;
    g_out_frames++;
    g_out_last_type = raw[1];
    g_out_last_seq = sl_get_u16(raw + 2);
    g_last_payload_len = len;
    g_out_last_code = (raw[1] == SL_MSG_ERROR && len > 0) ? raw[SL_HEADER_BYTES] : -1;
    if (g_out_last_code >= 0)
        g_err_codes[g_out_last_code]++;
    if (raw[1] == SL_MSG_ERROR && g_out_last_seq == SL_SEQ_NACK && g_out_last_code == SL_ERR_OVERFLOW)
        g_overflow_nacks++;
    if (raw[1] == (SL_MSG_RUN | SL_MSG_RESPONSE) && len >= 12 &&
        (raw[SL_HEADER_BYTES] & (SL_RUN_REC_SPIKES | SL_RUN_REC_MEMBRANE)))
        check_output_record(raw + SL_HEADER_BYTES, len);
    if (raw[1] == (SL_MSG_READ | SL_MSG_RESPONSE))
        check_record_chunk(raw + SL_HEADER_BYTES, len);
}

static int checked_sink(void *user, const uint8_t *d, size_t n)
{
    size_t i;
    (void)user;
    for (i = 0; i < n; i++) {
        if (g_out_len < sizeof g_out)
            g_out[g_out_len++] = d[i];
        if (d[i] != 0) {
            if (g_chk_len == sizeof g_chk)
                die("the board sent an endless frame");
            g_chk[g_chk_len++] = d[i];
            continue;
        }
        if (g_chk_len == 0)
            die("the board sent an empty frame");
        check_board_frame(g_chk, g_chk_len);
        g_chk_len = 0;
    }
    return 0;
}

static void feed(const uint8_t *p, size_t n)
{
    if (sl_proto_feed(&g_fz, p, n) != SL_OK)
        abort();
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
    sl_put_u32(out + 24, 1000000u);
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

/* Feed one wire frame after a flushing delimiter; it must get exactly one answer. */
static void exchange(const uint8_t *wire, size_t w)
{
    feed((const uint8_t *)"", 1); /* ends whatever came before (answers to it are checked too) */
    g_out_len = 0;
    g_out_frames = 0;
    feed(wire, w);
    if (g_out_frames != 1 || g_chk_len != 0)
        die("a request frame did not get exactly one answer");
}

static void send_frame(uint8_t type, uint16_t seq, const uint8_t *p, size_t n)
{
    size_t w = 0;
    if (sl_frame_encode(SL_PROTOCOL_VERSION, type, seq, p, n, g_wire, sizeof g_wire, &w) != SL_OK)
        die("could not encode a request");
    exchange(g_wire, w);
    if (n > SL_MAX_PAYLOAD) {
        g_oversize_frames++;
        if (g_out_last_type != SL_MSG_ERROR || g_out_last_seq != SL_SEQ_NACK ||
            g_out_last_code != SL_ERR_OVERFLOW)
            die("a frame above max_payload was not answered with an OVERFLOW NACK");
    }
    memcpy(g_last_req, g_wire, w);
    g_last_req_len = w;
    memcpy(g_last_out, g_out, g_out_len);
    g_last_out_len = g_out_len;
}

static void retransmit(void)
{
    if (g_last_req_len == 0)
        return;
    exchange(g_last_req, g_last_req_len);
    g_retransmissions++;
    if (g_out_len != g_last_out_len || memcmp(g_out, g_last_out, g_out_len) != 0)
        die("a retransmission got a different answer than the original");
}

static void board_with_program(void)
{
    static uint8_t p[12 + 1024];
    size_t n = seed_program(p + 12);
    sl_ostream out;
    out.write = checked_sink;
    out.user = 0;
    g_chk_len = 0;
    g_last_req_len = 0;
    sl_proto_init(&g_fz, out, 1);
    sl_put_u32(p, (uint32_t)n);
    sl_put_u32(p + 4, 0);
    sl_put_u32(p + 8, sl_crc32_update(0, p + 12, n));
    send_frame(SL_MSG_LOAD, 1, p, 12 + n);
    if (!g_fz.loaded)
        die("the seed program did not load");
}

/* Frame bytes one input may make the board process: fill records amplify (4 input bytes, up to
 * 4 KiB of frame), and inputs that run for milliseconds would slow the campaign down tenfold. */
#define RECORD_BUDGET (2u * SL_PROTOCOL_MAX_PAYLOAD)

/* Read the whole recording back in chunks of at most max_len (0: as many as fit). */
static void read_sweep(uint16_t *seq, uint16_t max_len)
{
    uint8_t p[6];
    uint32_t got = 0, total = g_fz.record_len;
    while (got < total) {
        sl_put_u32(p, got);
        sl_put_u16(p + 4, max_len);
        send_frame(SL_MSG_READ, (*seq)++, p, 6);
        if (g_out_last_type != (SL_MSG_READ | SL_MSG_RESPONSE))
            die("a READ inside the recording was refused");
        got += (uint32_t)g_last_payload_len - 12u;
    }
    if (got != total)
        die("READ chunks do not add up to record_total");
    g_record_sweeps++;
}

static void records(const uint8_t *data, size_t size)
{
    static uint8_t fill[SL_PROTOCOL_MAX_PAYLOAD];
    size_t r = 0, spent = 0;
    uint16_t seq = 100;
    while (r + 3 <= size && spent <= RECORD_BUDGET) {
        uint8_t type = data[r];
        size_t len = sl_get_u16(data + r + 1);
        r += 3;
        if (len == 0xFFFFu) {
            spent += g_last_req_len;
            retransmit();
            continue;
        }
        spent += (len & 0x7FFFu) + 16u;
        if (len & 0x8000u) {
            len &= 0x7FFFu;
            if (len > SL_PROTOCOL_MAX_PAYLOAD)
                len = SL_PROTOCOL_MAX_PAYLOAD;
            memset(fill, r < size ? data[r] : 0, len);
            r += r < size;
            send_frame(type, seq++, fill, len);
            continue;
        }
        if (len > size - r)
            len = size - r;
        if (len > SL_PROTOCOL_MAX_PAYLOAD)
            len = SL_PROTOCOL_MAX_PAYLOAD;
        send_frame(type, seq++, data + r, len);
        r += len;
        if (type == SL_MSG_RUN && g_out_last_type == (SL_MSG_RUN | SL_MSG_RESPONSE) &&
            g_fz.record_len > 0) {
            /* the chunk size: the byte after the frame (not consumed), 0 = as many as fit */
            uint16_t max_len = r < size ? (uint16_t)(data[r] * 4u) : 0;
            spent += g_fz.record_len + 16u * (g_fz.record_len / (max_len ? max_len : 1000u) + 1u);
            read_sweep(&seq, max_len);
        }
    }
}

static void cobs_run(const uint8_t *data, size_t size)
{
    static uint8_t run[8192];
    static const uint8_t ping[] = "sync";
    size_t n, i = 0;
    uint8_t code, fill;
    if (size < 4)
        return;
    n = sl_get_u16(data) % (sizeof run + 1);
    code = data[2] ? data[2] : 0xFF;
    fill = data[3] ? data[3] : 0x55;
    while (i < n) {
        size_t k;
        run[i++] = code;
        for (k = 1; k < code && i < n; k++)
            run[i++] = fill;
    }
    g_cobs_runs++;
    feed(run, n);
    feed((const uint8_t *)"", 1);
    send_frame(SL_MSG_PING, 0x5EC, ping, 4);
    if (g_out_last_type != 0x82 || g_out_last_seq != 0x5EC)
        die("the board did not answer the PING after a COBS run");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    g_inputs++;
    board_with_program();
    switch (data[0] % 4u) {
    case 0:
        feed(data + 1, size - 1);
        break;
    case 1:
        records(data + 1, size - 1);
        break;
    case 2: {
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
    default:
        cobs_run(data + 1, size - 1);
        break;
    }
    return 0;
}

static void print_stats(FILE *to)
{
    size_t i;
    fprintf(to, "responses:");
    for (i = 0; i < 256; i++)
        if (g_resp_types[i])
            fprintf(to, " 0x%02X=%lu", (unsigned)i, g_resp_types[i]);
    fprintf(to, "\nerror_codes:");
    for (i = 0; i < 256; i++)
        if (g_err_codes[i])
            fprintf(to, " %u=%lu", (unsigned)i, g_err_codes[i]);
    fprintf(to, "\nprograms_accepted: %lu\n", g_programs_accepted);
    fprintf(to, "oversize_frames: %lu\n", g_oversize_frames);
    fprintf(to, "overflow_nacks: %lu\n", g_overflow_nacks);
    fprintf(to, "retransmissions: %lu\n", g_retransmissions);
    fprintf(to, "cobs_runs: %lu\n", g_cobs_runs);
    fprintf(to, "recordings: %lu\n", g_recordings);
    fprintf(to, "record_chunks: %lu\n", g_record_chunks);
    fprintf(to, "record_sweeps: %lu\n", g_record_sweeps);
    fprintf(to, "inputs: %lu\n", g_inputs);
}

#ifndef SL_FUZZ_STANDALONE
int LLVMFuzzerInitialize(int *argc, char ***argv);
static void print_stats_at_exit(void)
{
    fprintf(stderr, "fuzz_frame stats\n");
    print_stats(stderr);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    atexit(print_stats_at_exit);
    return 0;
}
#else
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

/* A record of a frame of `len` copies of `fill` (len < 0x8000). */
static size_t fill_record(uint8_t *b, uint8_t type, size_t len, uint8_t fill)
{
    b[0] = type;
    sl_put_u16(b + 1, (uint16_t)(0x8000u | len));
    b[3] = fill;
    return 4;
}

static size_t gen_records(uint8_t *b, size_t cap)
{
    static const uint8_t types[] = {SL_MSG_HELLO, SL_MSG_PING, SL_MSG_RESET, SL_MSG_LOAD,
                                    SL_MSG_RUN, SL_MSG_RUN, SL_MSG_RUN, SL_MSG_READ,
                                    0x00, 0x7E, 0xFF};
    size_t n = 1, i;
    int recs = 1 + (int)(rnd() % 6u);
    b[0] = 1;
    while (recs-- > 0 && n + 3 + 600 < cap) {
        uint8_t type = types[rnd() % sizeof types];
        size_t len = 0;
        uint8_t *p = b + n + 3;
        if (rnd() % 8u == 0) { /* a retransmission of the previous frame */
            b[n] = type;
            sl_put_u16(b + n + 1, 0xFFFFu);
            n += 3;
            continue;
        }
        if (rnd() % 8u == 0) { /* a frame around or above max_payload and the receive buffer */
            size_t at = SL_MAX_PAYLOAD - 8u + rnd() % (sizeof g_fz.rx.buf - SL_MAX_PAYLOAD + 24u);
            if (rnd() % 8u == 0)
                at = rnd() % (SL_PROTOCOL_MAX_PAYLOAD + 1u);
            n += fill_record(b + n, type, at, (uint8_t)(rnd() % 3u == 0 ? 0 : rnd()));
            continue;
        }
        if (type == SL_MSG_RUN) {
            uint16_t steps = (uint16_t)(1 + rnd() % 40u);
            size_t data = (rnd() % 2u) ? steps * 2u : (size_t)(rnd() % 120u);
            uint8_t rec = (uint8_t)(rnd() % 4u) << 2; /* REC_SPIKES, REC_MEMBRANE */
            p[0] = (uint8_t)((rnd() % 4u) | rec | (rnd() % 16u == 0 ? 0x10u << (rnd() % 4u) : 0u));
            p[1] = (uint8_t)(rnd() % 3u == 0 ? 1 : 0);
            sl_put_u16(p + 2, (uint16_t)(rnd() % 3u == 0 ? rnd() : 1 + rnd() % 10u));
            sl_put_u32(p + 4, rnd() % 2u ? 0u : rnd() % 64u);
            sl_put_u16(p + 8, steps);
            /* mem_layer: 0 or 1 (the seed program's layers), sometimes 2 or any byte */
            p[10] = (uint8_t)(rnd() % 8u == 0 ? rnd() : ((rec & SL_RUN_REC_MEMBRANE) ? rnd() % 2u : 0u));
            p[11] = (uint8_t)(rnd() % 16u == 0 ? 1u : 0u);
            for (i = 0; i < data; i++)
                p[12 + i] = (uint8_t)(p[1] ? rnd() % 14u : rnd() & 0x0Fu);
            len = 12 + data; /* the READ sweep's chunk size is the next record's first byte */
        } else if (type == SL_MSG_READ) {
            sl_put_u32(p, rnd() % 2u ? rnd() % 2048u : rnd());
            sl_put_u16(p + 4, (uint16_t)(rnd() % 3u == 0 ? 0 : rnd() % 1100u));
            len = rnd() % 8u == 0 ? rnd() % 9u : 6u;
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

/* Every PING payload length and every COBS run length from 0 to the receive buffer + 8. */
static long boundary_sweep(void)
{
    size_t len, n;
    long inputs = 0;
    int v;
    for (v = 0; v < 2; v++)
        for (len = 0; len <= sizeof g_fz.rx.buf + 8u; len++, inputs++) {
            g_in[0] = 1;
            n = 1 + fill_record(g_in + 1, SL_MSG_PING, len, v ? 0x5A : 0x00);
            g_in[n++] = SL_MSG_PING; /* then the same frame again */
            sl_put_u16(g_in + n, 0xFFFFu);
            n += 2;
            LLVMFuzzerTestOneInput(g_in, n);
        }
    for (v = 0; v < 2; v++)
        for (len = 0; len <= sizeof g_fz.rx.buf + 8u; len++, inputs++) {
            g_in[0] = 3;
            sl_put_u16(g_in + 1, (uint16_t)len);
            g_in[3] = v ? 0xFF : 0x20;
            g_in[4] = 0x41;
            LLVMFuzzerTestOneInput(g_in, 5);
        }
    return inputs;
}

/* fuzz_frame [RUNS [SEED]]: the boundary sweep, then RUNS random inputs (default 20000) drawn
 * with SEED (default: the fixed seed of `make fuzz`). */
int main(int argc, char **argv)
{
    long runs = argc > 1 ? atol(argv[1]) : 20000, k, boundary;
    size_t n, i;
    if (argc > 2)
        g_rng ^= (uint64_t)strtoull(argv[2], 0, 10) * 0xD1B54A32D192ED03ull;
    if (g_rng == 0)
        g_rng = 1;
    boundary = boundary_sweep();
    for (k = 0; k < runs; k++) {
        switch (rnd() % 6u) {
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
                uint8_t type;
                uint16_t seq;
                for (i = 0; i < plen; i++)
                    payload[i] = (uint8_t)rnd();
                type = (uint8_t)(1 + rnd() % 6u); /* one draw per statement: the same inputs */
                seq = (uint16_t)rnd();            /* whatever order a compiler evaluates in */
                if (sl_frame_encode(SL_PROTOCOL_VERSION, type, seq, payload, plen, g_in + n, sizeof g_in - n, &w) ==
                    SL_OK)
                    n += w;
            }
            n = mutate(g_in + 1, n - 1, sizeof g_in - 1) + 1;
            break;
        }
        case 2:
        case 3:
            n = gen_records(g_in, sizeof g_in);
            break;
        case 4: /* a COBS run of random length, code and fill */
            g_in[0] = 3;
            sl_put_u16(g_in + 1, (uint16_t)(rnd() % (3u * sizeof g_fz.rx.buf)));
            g_in[3] = (uint8_t)rnd();
            g_in[4] = (uint8_t)rnd();
            n = 5;
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
    printf("boundary_inputs: %ld\n", boundary);
    /* What the campaign reached (the pytest wrapper checks these are not zero). */
    print_stats(stdout);
    return 0;
}
#endif
