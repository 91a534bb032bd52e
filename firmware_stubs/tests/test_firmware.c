/* tests/test_firmware.c: unit tests of the firmware: CRC, COBS vectors, framing and resync, the
 * program reader's every check, the neuron core against hand-computed trajectories
 * (docs/fixed_point.md), and the dispatcher (HELLO/PING/RESET/LOAD/RUN/errors, duplicate
 * suppression, NACKs, an output stream failing at every byte offset). Built with ASan+UBSan by
 * `make test`. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "board_output.h"
#include "harness.h"
#include "sl_cobs.h"
#include "sl_core.h"
#include "sl_crc.h"
#include "sl_frame.h"
#include "sl_le.h"
#include "sl_program.h"
#include "sl_proto.h"

#define V SL_PROTOCOL_VERSION /* the version of every frame a test sends */

/* ---- helpers ---------------------------------------------------------------------------------- */

typedef struct {
    uint8_t buf[1 << 16];
    size_t len;
    long fail_after; /* fail a write that would pass this many bytes in total; -1: never */
} sink_t;

static int sink_write(void *user, const uint8_t *data, size_t n)
{
    sink_t *s = (sink_t *)user;
    if (s->fail_after >= 0 && (long)(s->len + n) > s->fail_after)
        return -1;
    if (s->len + n > sizeof s->buf)
        return -1;
    memcpy(s->buf + s->len, data, n);
    s->len += n;
    return 0;
}

static sl_proto g_ctx; /* large: static, as on the board */
static sink_t g_sink;

static void board_init(void)
{
    sl_ostream out;
    out.write = sink_write;
    out.user = &g_sink;
    g_sink.len = 0;
    g_sink.fail_after = -1;
    sl_proto_init(&g_ctx, out, 0x12345678u);
}

/* Send one request frame; decode the first response frame into *resp (payload copied to rbuf). */
static uint8_t g_resp_payload[SL_MAX_WIRE]; /* larger than any payload the board may send */
static int request(uint8_t version, uint8_t type, uint16_t seq, const uint8_t *payload, size_t len,
                   sl_frame *resp)
{
    static uint8_t wire[SL_MAX_WIRE + 64];
    static sl_rx rx;
    size_t n = 0, i;
    if (sl_frame_encode(version, type, seq, payload, len, wire, sizeof wire, &n) != SL_OK)
        return -1;
    g_sink.len = 0;
    if (sl_proto_feed(&g_ctx, wire, n) != SL_OK)
        return -2;
    sl_rx_init(&rx);
    for (i = 0; i < g_sink.len; i++) {
        if (sl_rx_push(&rx, g_sink.buf[i], resp) == SL_RX_FRAME) {
            memcpy(g_resp_payload, resp->payload, resp->len);
            resp->payload = g_resp_payload;
            return 0;
        }
    }
    return -3;
}

/* A program builder written from docs/program_format.md, independent of the Python encoder. */
typedef struct {
    uint8_t neuron_type, reset, w_shift, rec_shift;
    uint16_t fan_in, n;
    const int8_t *w;
    const int32_t *bias, *thr;
    const uint16_t *dmem, *dsyn;
    const int8_t *rec_w;
    const int32_t *rec_gain;
} layer_def;

static uint32_t pad4(uint32_t x)
{
    return (x + 3u) & ~3u;
}

static size_t build_program(uint8_t *out, const layer_def *L, int nl)
{
    uint32_t off = 48, i;
    int k;
    memset(out, 0, 48);
    memcpy(out, "SLPG", 4);
    sl_put_u16(out + 4, 1);
    out[6] = 1;
    sl_put_u16(out + 16, (uint16_t)nl);
    sl_put_u16(out + 18, L[0].fan_in);
    sl_put_u16(out + 20, L[nl - 1].n);
    sl_put_u16(out + 22, 4);
    sl_put_u32(out + 24, 1000000u);
    memcpy(out + 32, "test", 4);
    for (k = 0; k < nl; k++) {
        const layer_def *d = &L[k];
        uint32_t start = off, N = d->n, M = d->fan_in;
        memset(out + off, 0, 16);
        out[off] = 1;
        out[off + 1] = d->neuron_type;
        out[off + 2] = d->reset;
        out[off + 3] = d->w_shift;
        sl_put_u16(out + off + 4, (uint16_t)M);
        sl_put_u16(out + off + 6, (uint16_t)N);
        out[off + 8] = d->rec_shift;
        off += 16;
        memset(out + off, 0, pad4(N * M));
        memcpy(out + off, d->w, N * M);
        off += pad4(N * M);
        for (i = 0; i < N; i++, off += 4)
            sl_put_u32(out + off, (uint32_t)d->bias[i]);
        for (i = 0; i < N; i++, off += 4)
            sl_put_u32(out + off, (uint32_t)d->thr[i]);
        memset(out + off, 0, pad4(2 * N));
        for (i = 0; i < N; i++)
            sl_put_u16(out + off + 2 * i, d->dmem[i]);
        off += pad4(2 * N);
        if (d->neuron_type == 2) {
            memset(out + off, 0, pad4(2 * N));
            for (i = 0; i < N; i++)
                sl_put_u16(out + off + 2 * i, d->dsyn[i]);
            off += pad4(2 * N);
        }
        if (d->neuron_type == 3) {
            memset(out + off, 0, pad4(N * N));
            memcpy(out + off, d->rec_w, N * N);
            off += pad4(N * N);
        }
        if (d->neuron_type == 4)
            for (i = 0; i < N; i++, off += 4)
                sl_put_u32(out + off, (uint32_t)d->rec_gain[i]);
        sl_put_u32(out + start + 12, off - start);
    }
    sl_put_u32(out + 8, off);
    sl_put_u32(out + 12, sl_crc32_update(sl_crc32_update(0, out, 12), out + 16, off - 16));
    return off;
}

static void refresh_crc(uint8_t *blob)
{
    uint32_t total = sl_get_u32(blob + 8);
    sl_put_u32(blob + 12, sl_crc32_update(sl_crc32_update(0, blob, 12), blob + 16, total - 16));
}

/* Runs the core over in[t][j] for T steps; returns U and S of layer `probe` per step. */
static void run_core(const uint8_t *blob, size_t n, const uint8_t *in, int T, int n_in, int probe,
                     int32_t *U, uint8_t *S)
{
    static sl_program p;
    static sl_core core;
    sl_diag d;
    uint8_t out[SL_MAX_NEURONS];
    int t, i;
    sl_diag_clear(&d);
    CHECK_EQ(sl_program_parse(blob, n, &p, &d), SL_OK);
    sl_core_reset(&core, &p);
    for (t = 0; t < T; t++) {
        sl_core_step(&core, &p, in + t * n_in, out, 0);
        for (i = 0; i < p.layers[probe].num_neurons; i++) {
            U[t * p.layers[probe].num_neurons + i] = SL_CORE_MEMBRANES(&core, &p, probe)[i];
            S[t * p.layers[probe].num_neurons + i] = SL_CORE_SPIKES(&core, &p, probe)[i];
        }
    }
}

/* ---- CRC and COBS ------------------------------------------------------------------------------ */

static void test_crc32(void)
{
    const uint8_t check[] = "123456789";
    CHECK_EQ(sl_crc32_update(0, check, 9), 0xCBF43926u);
    CHECK_EQ(sl_crc32_update(sl_crc32_update(0, check, 4), check + 4, 5), 0xCBF43926u);
    CHECK_EQ(sl_crc32_update(0, check, 0), 0u);
}

static int cobs_case(const uint8_t *raw, size_t n, const uint8_t *enc, size_t m)
{
    uint8_t out[600], back[600];
    size_t k = 0, j = 0;
    sl_bytes part;
    part.data = raw;
    part.len = n;
    if (sl_cobs_encode(&part, 1, out, sizeof out, &k) != SL_OK || k != m || memcmp(out, enc, m))
        return 0;
    if (sl_cobs_decode(out, k, back, sizeof back, &j) != SL_OK || j != n || memcmp(back, raw, n))
        return 0;
    return 1;
}

static void test_cobs_vectors(void)
{
    /* The examples of Cheshire & Baker / Wikipedia's COBS article. */
    static const uint8_t r1[] = {0x00}, e1[] = {0x01, 0x01};
    static const uint8_t r2[] = {0x00, 0x00}, e2[] = {0x01, 0x01, 0x01};
    static const uint8_t r3[] = {0x00, 0x11, 0x00}, e3[] = {0x01, 0x02, 0x11, 0x01};
    static const uint8_t r4[] = {0x11, 0x22, 0x00, 0x33}, e4[] = {0x03, 0x11, 0x22, 0x02, 0x33};
    static const uint8_t r5[] = {0x11, 0x22, 0x33, 0x44}, e5[] = {0x05, 0x11, 0x22, 0x33, 0x44};
    static const uint8_t r6[] = {0x11, 0x00, 0x00, 0x00}, e6[] = {0x02, 0x11, 0x01, 0x01, 0x01};
    uint8_t raw[300], enc[300];
    int i;
    CHECK(cobs_case(r1, 1, e1, 2));
    CHECK(cobs_case(r2, 2, e2, 3));
    CHECK(cobs_case(r3, 3, e3, 4));
    CHECK(cobs_case(r4, 4, e4, 5));
    CHECK(cobs_case(r5, 4, e5, 5));
    CHECK(cobs_case(r6, 4, e6, 5));
    CHECK(cobs_case(raw, 0, (const uint8_t *)"\x01", 1));
    /* 01..FE (254 bytes) -> FF 01..FE */
    for (i = 0; i < 254; i++)
        raw[i] = (uint8_t)(i + 1);
    enc[0] = 0xFF;
    memcpy(enc + 1, raw, 254);
    CHECK(cobs_case(raw, 254, enc, 255));
    /* 00 01..FE -> 01 FF 01..FE */
    raw[0] = 0;
    for (i = 1; i < 255; i++)
        raw[i] = (uint8_t)i;
    enc[0] = 0x01;
    enc[1] = 0xFF;
    memcpy(enc + 2, raw + 1, 254);
    CHECK(cobs_case(raw, 255, enc, 256));
    /* 01..FF (255 bytes) -> FF 01..FE 02 FF */
    for (i = 0; i < 255; i++)
        raw[i] = (uint8_t)(i + 1);
    enc[0] = 0xFF;
    memcpy(enc + 1, raw, 254);
    enc[255] = 0x02;
    enc[256] = 0xFF;
    CHECK(cobs_case(raw, 255, enc, 257));
}

static void test_cobs_rejects(void)
{
    uint8_t out[16];
    size_t n = 0;
    static const uint8_t zero_inside[] = {0x03, 0x11, 0x00};
    static const uint8_t runs_past[] = {0x05, 0x11, 0x22};
    static const uint8_t zero_code[] = {0x00};
    CHECK_EQ(sl_cobs_decode(zero_inside, 3, out, sizeof out, &n), SL_ERR_BAD_FRAMING);
    CHECK_EQ(sl_cobs_decode(runs_past, 3, out, sizeof out, &n), SL_ERR_BAD_FRAMING);
    CHECK_EQ(sl_cobs_decode(zero_code, 1, out, sizeof out, &n), SL_ERR_BAD_FRAMING);
    CHECK_EQ(sl_cobs_decode(runs_past, 3, out, 1, &n), SL_ERR_BAD_FRAMING);
}

/* ---- frames ------------------------------------------------------------------------------------ */

static void test_frame_roundtrip_and_corruption(void)
{
    uint8_t payload[300], wire[400], copy[400];
    size_t n = 0, i, k;
    sl_frame f;
    sl_rx rx;
    for (i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 7);
    CHECK_EQ(sl_frame_encode(V, 0x05, 0xBEEF, payload, sizeof payload, wire, sizeof wire, &n), SL_OK);
    CHECK_EQ(wire[n - 1], 0);
    for (i = 0; i + 1 < n; i++)
        CHECK(wire[i] != 0);
    sl_rx_init(&rx);
    for (i = 0; i < n; i++) {
        sl_rx_event ev = sl_rx_push(&rx, wire[i], &f);
        CHECK_EQ(ev, i + 1 < n ? SL_RX_NONE : SL_RX_FRAME);
    }
    CHECK_EQ(f.version, V);
    CHECK_EQ(f.type, 0x05);
    CHECK_EQ(f.seq, 0xBEEF);
    CHECK_EQ(f.len, sizeof payload);
    CHECK(memcmp(f.payload, payload, sizeof payload) == 0);
    /* Every single-byte corruption of the encoded frame (except making it 0x00, which splits it)
     * is dropped, never delivered. */
    for (k = 0; k + 1 < n; k++) {
        int delivered = 0;
        memcpy(copy, wire, n);
        copy[k] ^= (uint8_t)(copy[k] == 0x5A ? 0xA5 : 0x5A);
        if (copy[k] == 0)
            continue;
        sl_rx_init(&rx);
        for (i = 0; i < n; i++)
            if (sl_rx_push(&rx, copy[i], &f) == SL_RX_FRAME)
                delivered = 1;
        CHECK(!delivered);
    }
}

static void test_rx_resync_and_overflow(void)
{
    uint8_t wire[64], big[SL_MAX_WIRE + 10];
    size_t n = 0, i;
    sl_frame f;
    sl_rx rx;
    int frames = 0, overflow = 0, empty = 0, bad = 0;
    static const uint8_t garbage[] = {0x13, 0x37, 0xFF, 0x02, 0x00, 0x00, 0x55};
    CHECK_EQ(sl_frame_encode(V, 0x02, 7, (const uint8_t *)"hi", 2, wire, sizeof wire, &n), SL_OK);
    sl_rx_init(&rx);
    for (i = 0; i < sizeof garbage; i++) {
        sl_rx_event ev = sl_rx_push(&rx, garbage[i], &f);
        bad += ev == SL_RX_BAD_FRAMING || ev == SL_RX_BAD_CRC;
        empty += ev == SL_RX_EMPTY;
    }
    /* The trailing 0x55 joins the next frame and spoils it; the delimiter resyncs. */
    for (i = 0; i < n; i++)
        if (sl_rx_push(&rx, wire[i], &f) != SL_RX_NONE)
            bad++;
    for (i = 0; i < n; i++)
        frames += sl_rx_push(&rx, wire[i], &f) == SL_RX_FRAME;
    CHECK_EQ(frames, 1);
    CHECK_EQ(empty, 1);
    CHECK_EQ(bad, 2);
    memset(big, 0x41, sizeof big);
    for (i = 0; i < sizeof big; i++)
        overflow += sl_rx_push(&rx, big[i], &f) != SL_RX_NONE;
    CHECK_EQ(overflow, 0);
    CHECK_EQ(sl_rx_push(&rx, 0, &f), SL_RX_OVERFLOW);
    frames = 0;
    for (i = 0; i < n; i++)
        frames += sl_rx_push(&rx, wire[i], &f) == SL_RX_FRAME;
    CHECK_EQ(frames, 1);
}


/* ---- frames above the payload limit (the receive buffer holds a few more decoded bytes) -------- */

/* Payload bytes beyond SL_MAX_PAYLOAD that a zero-filled frame can carry and still fit the receive
 * buffer (COBS needs one code byte per 254 bytes in the worst case, one in all for zeros): 5. */
#define RX_SLACK (SL_MAX_RAW / 254u + 1u)

/* A raw frame (header, `len` copies of `fill`, CRC) built by hand from docs/protocol.md, section 1
 * — not with sl_frame_encode, which refuses nothing below the protocol's 4096 bytes. */
static size_t raw_frame(uint8_t *raw, uint8_t type, uint16_t seq, size_t len, uint8_t fill)
{
    raw[0] = V;
    raw[1] = type;
    sl_put_u16(raw + 2, seq);
    sl_put_u16(raw + 4, (uint16_t)len);
    memset(raw + 6, fill, len);
    sl_put_u32(raw + 6 + len, sl_crc32_update(0, raw, 6 + len));
    return 10 + len;
}

static void test_rx_refuses_payload_above_max(void)
{
    /* Zero payloads cost COBS one byte in all, so frames of up to SL_MAX_PAYLOAD + RX_SLACK payload
     * bytes fit the receive buffer; all of them above SL_MAX_PAYLOAD must be dropped as OVERFLOW. */
    static uint8_t raw[SL_MAX_RAW + 16], enc[SL_MAX_WIRE + 32];
    size_t len, n, k, i;
    sl_frame f;
    sl_rx rx;
    for (len = SL_MAX_PAYLOAD - 1; len <= SL_MAX_PAYLOAD + RX_SLACK; len++) {
        sl_rx_event ev = SL_RX_NONE;
        sl_bytes part;
        n = raw_frame(raw, SL_MSG_PING, 3, len, 0);
        part.data = raw;
        part.len = n;
        CHECK_EQ(sl_cobs_encode(&part, 1, enc, sizeof enc, &k), SL_OK);
        CHECK(k <= sizeof rx.buf); /* reaches the decoder, not the wire-length overflow */
        enc[k++] = 0;
        sl_rx_init(&rx);
        for (i = 0; i < k; i++)
            ev = sl_rx_push(&rx, enc[i], &f);
        CHECK_EQ(ev, len <= SL_MAX_PAYLOAD ? SL_RX_FRAME : SL_RX_OVERFLOW);
        if (ev == SL_RX_FRAME)
            CHECK_EQ(f.len, len);
        CHECK_EQ(sl_frame_parse(raw, n, &f), len <= SL_MAX_PAYLOAD ? SL_OK : SL_ERR_OVERFLOW);
    }
}

/* Feed wire bytes; decode every frame the board sends (payloads copied). Returns the number of
 * frames, or -1 when the output holds bytes that are not an intact frame. */
#define MAX_OUT_FRAMES 4
static uint8_t g_out_payload[MAX_OUT_FRAMES][SL_MAX_WIRE];
static int exchange(const uint8_t *wire, size_t n, sl_frame *out)
{
    g_sink.len = 0;
    if (sl_proto_feed(&g_ctx, wire, n) != SL_OK)
        return -2;
    return decode_board_output(g_sink.buf, g_sink.len, out, g_out_payload, MAX_OUT_FRAMES);
}

static size_t wire_frame(uint8_t *wire, size_t cap, uint8_t type, uint16_t seq, size_t len,
                         uint8_t fill)
{
    static uint8_t raw[SL_MAX_WIRE + 64];
    size_t k = 0;
    sl_bytes part;
    part.data = raw;
    part.len = raw_frame(raw, type, seq, len, fill);
    if (sl_cobs_encode(&part, 1, wire, cap - 1, &k) != SL_OK)
        return 0;
    wire[k++] = 0;
    return k;
}

static int canary_intact(void)
{
    size_t i;
    for (i = 0; i < sizeof g_ctx.bitmap; i++)
        if (g_ctx.bitmap[i] != 0xA5)
            return 0;
    return 1;
}

static int is_overflow_nack(const sl_frame *f)
{
    return f->type == SL_MSG_ERROR && f->seq == SL_SEQ_NACK && f->len >= 6 &&
           f->payload[0] == SL_ERR_OVERFLOW;
}

static void test_oversize_ping_is_refused_and_writes_nothing(void)
{
    /* PINGs of 1024..1029 zero bytes: 1024 is echoed; 1025..1029 get one OVERFLOW NACK each, and
     * nothing is written past ctx->payload (bitmap, the next field, keeps its canary). */
    static uint8_t wire[SL_MAX_WIRE + 64];
    sl_frame r[MAX_OUT_FRAMES];
    size_t len, n;
    board_init();
    memset(g_ctx.bitmap, 0xA5, sizeof g_ctx.bitmap);
    for (len = SL_MAX_PAYLOAD; len <= SL_MAX_PAYLOAD + RX_SLACK; len++) {
        int got;
        n = wire_frame(wire, sizeof wire, SL_MSG_PING, (uint16_t)len, len, 0);
        CHECK(n > 0 && n <= sizeof g_ctx.rx.buf + 1);
        got = exchange(wire, n, r);
        CHECK_EQ(got, 1);
        if (got != 1)
            continue;
        if (len <= SL_MAX_PAYLOAD) {
            CHECK_EQ(r[0].type, 0x82);
            CHECK_EQ(r[0].len, len);
        } else {
            CHECK(is_overflow_nack(&r[0]));
            CHECK(r[0].len <= SL_MAX_PAYLOAD);
        }
        CHECK(canary_intact());
    }
    CHECK(sizeof g_ctx.payload == SL_MAX_PAYLOAD);
}

static void test_retransmission_after_oversize_frame(void)
{
    /* A request, an oversize frame, then the request again: the board must send the remembered
     * response byte for byte (not a cache the oversize frame overwrote), and the next request
     * must be answered normally. */
    static uint8_t wire[SL_MAX_WIRE + 64], first[256];
    sl_frame r[MAX_OUT_FRAMES];
    size_t n, first_len, big;
    static const uint8_t ping[] = "hello";
    board_init();
    CHECK_EQ(sl_frame_encode(V, SL_MSG_PING, 7, ping, 5, wire, sizeof wire, &n), SL_OK);
    CHECK_EQ(exchange(wire, n, r), 1);
    CHECK_EQ(r[0].type, 0x82);
    first_len = g_sink.len;
    memcpy(first, g_sink.buf, first_len);
    for (big = SL_MAX_PAYLOAD + 1; big <= SL_MAX_PAYLOAD + RX_SLACK; big++) {
        size_t m = wire_frame(wire, sizeof wire, SL_MSG_PING, 8, big, 0);
        CHECK(exchange(wire, m, r) == 1 && is_overflow_nack(&r[0]));
        CHECK_EQ(sl_frame_encode(V, SL_MSG_PING, 7, ping, 5, wire, sizeof wire, &n), SL_OK);
        CHECK_EQ(exchange(wire, n, r), 1);
        CHECK_EQ(g_sink.len, first_len);
        CHECK(memcmp(g_sink.buf, first, first_len) == 0);
    }
    CHECK_EQ(sl_frame_encode(V, SL_MSG_PING, 9, (const uint8_t *)"next", 4, wire, sizeof wire, &n),
             SL_OK);
    CHECK_EQ(exchange(wire, n, r), 1);
    CHECK_EQ(r[0].type, 0x82);
    CHECK_EQ(r[0].seq, 9);
    CHECK_EQ(r[0].len, 4);
    CHECK(memcmp(r[0].payload, "next", 4) == 0);
}

static void test_every_payload_length_up_to_rx_buffer(void)
{
    /* PING payloads of every length 0 .. sizeof(rx.buf) + 8, zero bytes (least COBS overhead) and
     * 0x5A bytes (most): exactly one answer each, a PONG echo up to SL_MAX_PAYLOAD and an OVERFLOW
     * NACK above; a retransmission gets the same bytes again. */
    static uint8_t wire[SL_MAX_WIRE + 64], first[SL_MAX_WIRE + 64];
    sl_frame r[MAX_OUT_FRAMES];
    size_t len, n, i, first_len, bad = 0;
    int fill;
    board_init();
    memset(g_ctx.bitmap, 0xA5, sizeof g_ctx.bitmap);
    for (fill = 0; fill < 2; fill++)
        for (len = 0; len <= sizeof g_ctx.rx.buf + 8; len++) {
            uint8_t b = fill ? 0x5A : 0x00;
            int ok;
            n = wire_frame(wire, sizeof wire, SL_MSG_PING, (uint16_t)(len + 1), len, b);
            if (exchange(wire, n, r) != 1) {
                bad++;
                continue;
            }
            first_len = g_sink.len;
            memcpy(first, g_sink.buf, first_len);
            if (len <= SL_MAX_PAYLOAD) {
                ok = r[0].type == 0x82 && r[0].seq == len + 1 && r[0].len == len;
                for (i = 0; ok && i < len; i++)
                    ok = r[0].payload[i] == b;
            } else {
                ok = is_overflow_nack(&r[0]);
            }
            bad += !ok;
            if (exchange(wire, n, r) != 1 || g_sink.len != first_len ||
                memcmp(g_sink.buf, first, first_len) != 0)
                bad++;
        }
    CHECK_EQ(bad, 0);
    CHECK(canary_intact());
}

/* ---- neuron core ------------------------------------------------------------------------------- */

static void test_decay_rounding(void)
{
    /* The examples of docs/fixed_point.md. */
    CHECK_EQ(sl_dec(1000, 410), 900);
    CHECK_EQ(sl_dec(-1000, 410), -900);
    CHECK_EQ(sl_dec(5, 2048), 3);
    CHECK_EQ(sl_dec(-5, 2048), -3);
    CHECK_EQ(sl_dec(1, 3000), 0);
    CHECK_EQ(sl_dec(-7, 2048), -4);
    CHECK_EQ(sl_dec(123456, 0), 123456);
    CHECK_EQ(sl_dec(-123456, 4096), 0);
    CHECK_EQ(sl_dec(-2147483647LL - 1, 0), -2147483647LL - 1);
    CHECK_EQ(sl_sat32(3000000000LL), 2147483647LL);
    CHECK_EQ(sl_sat32(-3000000000LL), -2147483647LL - 1);
}

static uint8_t g_blob[4096];

static void test_core_leaky_subtract_and_zero(void)
{
    /* 2 inputs -> 1 neuron, W = [3, 5] << 1, bias 1, theta 10, d = 410 (beta 0.9); hand-computed
     * from docs/fixed_point.md: U = 7, 23 (spike), 21+1-10 = 12 (spike), 11+1-10 = 2. */
    static const int8_t w[] = {3, 5};
    static const int32_t bias[] = {1}, thr[] = {10};
    static const uint16_t d[] = {410};
    static const uint8_t in[] = {1, 0, 1, 1, 0, 0, 0, 0};
    layer_def L = {1, 0, 1, 0, 2, 1, w, bias, thr, d, 0, 0, 0};
    int32_t U[4];
    uint8_t S[4];
    size_t n = build_program(g_blob, &L, 1);
    run_core(g_blob, n, in, 4, 2, 0, U, S);
    CHECK_EQ(U[0], 7); CHECK_EQ(U[1], 23); CHECK_EQ(U[2], 12); CHECK_EQ(U[3], 2);
    CHECK_EQ(S[0], 0); CHECK_EQ(S[1], 1); CHECK_EQ(S[2], 1); CHECK_EQ(S[3], 0);
    /* reset to zero: after the spike at t=2, U = X = 1, then dec(1) + 1 = 2. */
    L.reset = 1;
    n = build_program(g_blob, &L, 1);
    run_core(g_blob, n, in, 4, 2, 0, U, S);
    CHECK_EQ(U[0], 7); CHECK_EQ(U[1], 23); CHECK_EQ(U[2], 1); CHECK_EQ(U[3], 2);
    CHECK_EQ(S[2], 0);
}

static void test_core_negative_and_threshold_equality(void)
{
    /* W = [-7], d = 2048: U = -7, then dec(-7) = -3.5 -> -4 (half away from zero). A neuron with
     * U == theta does not spike (strict). */
    static const int8_t w[] = {-7, 10};
    static const int32_t bias[] = {0, 0}, thr[] = {5, 10};
    static const uint16_t d[] = {2048, 0};
    static const uint8_t in[] = {1, 0};
    layer_def L = {1, 0, 0, 0, 1, 2, w, bias, thr, d, 0, 0, 0};
    int32_t U[4];
    uint8_t S[4];
    size_t n = build_program(g_blob, &L, 1);
    run_core(g_blob, n, in, 2, 1, 0, U, S);
    CHECK_EQ(U[0], -7); CHECK_EQ(U[2], -4);
    CHECK_EQ(U[1], 10); CHECK_EQ(S[1], 0); /* 10 > 10 is false */
    CHECK_EQ(U[3], 10); CHECK_EQ(S[3], 0);
}

static void test_core_synaptic(void)
{
    /* W = [4], theta 5, d_alpha 2048, d_beta 1024, inputs 1, 1, 0:
     * I = 4, 6, 3;  V = U = 4, 9 (spike), dec(9)=7 + 3 = 10 - 5 = 5 (no spike: strict). */
    static const int8_t w[] = {4};
    static const int32_t bias[] = {0}, thr[] = {5};
    static const uint16_t dm[] = {1024}, ds[] = {2048};
    static const uint8_t in[] = {1, 1, 0};
    layer_def L = {2, 0, 0, 0, 1, 1, w, bias, thr, dm, ds, 0, 0};
    int32_t U[3];
    uint8_t S[3];
    size_t n = build_program(g_blob, &L, 1);
    run_core(g_blob, n, in, 3, 1, 0, U, S);
    CHECK_EQ(U[0], 4); CHECK_EQ(U[1], 9); CHECK_EQ(U[2], 5);
    CHECK_EQ(S[0], 0); CHECK_EQ(S[1], 1); CHECK_EQ(S[2], 0);
    /* zero reset: U = 0 at the step after the spike. */
    L.reset = 1;
    n = build_program(g_blob, &L, 1);
    run_core(g_blob, n, in, 3, 1, 0, U, S);
    CHECK_EQ(U[1], 9); CHECK_EQ(U[2], 0);
}

static void test_core_rleaky_and_counters(void)
{
    /* Dense recurrence: neuron 0 driven by the input (20 > 10) excites neuron 1 (15) one step
     * later; d = 4096 (no memory). U0 = 20, -10, 0; U1 = 0, 15, -10. */
    static const int8_t w[] = {20, 0}, rw[] = {0, 0, 15, 0};
    static const int32_t bias[] = {0, 0}, thr[] = {10, 10}, gain[] = {7};
    static const uint16_t d[] = {4096, 4096};
    static const uint8_t in[] = {1, 0, 0};
    static sl_program p;
    static sl_core core;
    layer_def L = {3, 0, 0, 0, 1, 2, w, bias, thr, d, 0, rw, 0};
    layer_def E = {4, 0, 0, 0, 1, 1, w, bias, thr, d, 0, 0, gain};
    int32_t U[6];
    uint8_t S[6], out[2];
    sl_counter c[1] = {{0, 0}};
    sl_diag dg;
    size_t n = build_program(g_blob, &L, 1);
    int t;
    run_core(g_blob, n, in, 3, 1, 0, U, S);
    CHECK_EQ(U[0], 20); CHECK_EQ(U[1], 0); CHECK_EQ(U[2], -10); CHECK_EQ(U[3], 15);
    CHECK_EQ(U[4], 0); CHECK_EQ(U[5], -10);
    CHECK_EQ(S[0], 1); CHECK_EQ(S[3], 1); CHECK_EQ(S[1] + S[2] + S[4] + S[5], 0);
    /* counters: 1 input spike x 2 neurons + recurrent R0 at t2 (x2) + R1 at t3 (x2) = 6 */
    sl_diag_clear(&dg);
    CHECK_EQ(sl_program_parse(g_blob, n, &p, &dg), SL_OK);
    sl_core_reset(&core, &p);
    for (t = 0; t < 3; t++)
        sl_core_step(&core, &p, in + t, out, c);
    CHECK_EQ(c[0].spikes, 2);
    CHECK_EQ(c[0].synops, 6);
    /* Elementwise recurrence, subtract: U = 20 (spike), 0 + 0 + 7 - 10 = -3, 0. */
    n = build_program(g_blob, &E, 1);
    run_core(g_blob, n, in, 3, 1, 0, U, S);
    CHECK_EQ(U[0], 20); CHECK_EQ(U[1], -3); CHECK_EQ(U[2], 0);
}

static void test_core_saturation(void)
{
    /* 127 << 20 plus bias INT32_MAX saturates X; U stays at INT32_MAX after subtracting theta. */
    static const int8_t w[] = {127};
    static const int32_t bias[] = {2147483647}, thr[] = {1};
    static const uint16_t d[] = {0};
    static const uint8_t in[] = {1, 1};
    layer_def L = {1, 0, 20, 0, 1, 1, w, bias, thr, d, 0, 0, 0};
    int32_t U[2];
    uint8_t S[2];
    size_t n = build_program(g_blob, &L, 1);
    run_core(g_blob, n, in, 2, 1, 0, U, S);
    CHECK_EQ(U[0], 2147483647LL); CHECK_EQ(U[1], 2147483647LL);
    CHECK_EQ(S[0], 1);
}

static void test_core_two_layers_same_step(void)
{
    /* No synaptic delay: layer 1 sees layer 0's spike of the same step. */
    static const int8_t w0[] = {20}, w1[] = {30};
    static const int32_t b[] = {0}, thr[] = {10};
    static const uint16_t d[] = {4096};
    static const uint8_t in[] = {1};
    layer_def L[2] = {{1, 1, 0, 0, 1, 1, w0, b, thr, d, 0, 0, 0}, {1, 1, 0, 0, 1, 1, w1, b, thr, d, 0, 0, 0}};
    int32_t U[1];
    uint8_t S[1];
    size_t n = build_program(g_blob, L, 2);
    run_core(g_blob, n, in, 1, 1, 1, U, S);
    CHECK_EQ(U[0], 30);
    CHECK_EQ(S[0], 1);
}

/* ---- program validation ------------------------------------------------------------------------ */

static int parse_detail(const uint8_t *blob, size_t n, sl_status *code)
{
    static sl_program p;
    sl_diag d;
    sl_diag_clear(&d);
    *code = sl_program_parse(blob, n, &p, &d);
    return d.detail;
}

static void test_program_checks(void)
{
    static const int8_t w[] = {1, 2, 3, 4};
    static const int32_t b[] = {0, 0}, thr[] = {5, 5}, bad_thr[] = {5, 0};
    static const uint16_t d[] = {100, 100}, bad_d[] = {100, 4097};
    layer_def L = {1, 0, 0, 0, 2, 2, w, b, thr, d, 0, 0, 0};
    uint8_t blob[512], copy[512];
    sl_status st;
    size_t n = build_program(blob, &L, 1);

    CHECK_EQ(parse_detail(blob, n, &st), 0);
    CHECK_EQ(st, SL_OK);
    CHECK_EQ(parse_detail(blob, 40, &st), SL_PCHECK_MAGIC);
    memcpy(copy, blob, n); copy[0] = 'X';
    CHECK_EQ(parse_detail(copy, n, &st), SL_PCHECK_MAGIC);
    memcpy(copy, blob, n); copy[4] = 2; refresh_crc(copy); /* version 2 reads version 1's records */
    CHECK_EQ(parse_detail(copy, n, &st), 0);
    memcpy(copy, blob, n); copy[4] = 3; refresh_crc(copy);
    CHECK_EQ(parse_detail(copy, n, &st), SL_PCHECK_VERSION);
    memcpy(copy, blob, n); copy[4] = 0; refresh_crc(copy);
    CHECK_EQ(parse_detail(copy, n, &st), SL_PCHECK_VERSION);
    CHECK_EQ(parse_detail(blob, n - 4, &st), SL_PCHECK_SIZE);
    memcpy(copy, blob, n); copy[60] ^= 1;
    CHECK_EQ(parse_detail(copy, n, &st), SL_PCHECK_CRC);
    memcpy(copy, blob, n); copy[6] = 2; refresh_crc(copy);
    CHECK_EQ(parse_detail(copy, n, &st), SL_PCHECK_PROFILE);
    memcpy(copy, blob, n); copy[7] = 1; refresh_crc(copy);
    CHECK_EQ(parse_detail(copy, n, &st), SL_PCHECK_PROFILE);
    memcpy(copy, blob, n); copy[48 + 1] = 5; refresh_crc(copy); /* neuron_type */
    CHECK_EQ(parse_detail(copy, n, &st), SL_PCHECK_RECORD);
    memcpy(copy, blob, n); copy[48 + 2] = 2; refresh_crc(copy); /* reset_mode */
    CHECK_EQ(parse_detail(copy, n, &st), SL_PCHECK_RECORD);
    memcpy(copy, blob, n); copy[48 + 12] += 4; refresh_crc(copy); /* record_size */
    CHECK_EQ(parse_detail(copy, n, &st), SL_PCHECK_RECORD);
    memcpy(copy, blob, n); copy[18] = 3; refresh_crc(copy); /* num_inputs != fan_in */
    CHECK_EQ(parse_detail(copy, n, &st), SL_PCHECK_CHAIN);
    memcpy(copy, blob, n); copy[20] = 3; refresh_crc(copy); /* num_outputs */
    CHECK_EQ(parse_detail(copy, n, &st), SL_PCHECK_CHAIN);
    memcpy(copy, blob, n); copy[48 + 3] = 21; refresh_crc(copy); /* w_shift */
    CHECK_EQ(parse_detail(copy, n, &st), SL_PCHECK_RANGE);
    memcpy(copy, blob, n); sl_put_u16(copy + 16, 0); refresh_crc(copy);
    CHECK_EQ(parse_detail(copy, n, &st), SL_PCHECK_RECORD);
    memcpy(copy, blob, n); sl_put_u16(copy + 16, SL_MAX_LAYERS + 1); refresh_crc(copy);
    parse_detail(copy, n, &st);
    CHECK_EQ(st, SL_ERR_PROGRAM_TOO_LARGE);
    L.thr = bad_thr;
    n = build_program(blob, &L, 1);
    CHECK_EQ(parse_detail(blob, n, &st), SL_PCHECK_RANGE);
    L.thr = thr;
    L.dmem = bad_d;
    n = build_program(blob, &L, 1);
    CHECK_EQ(parse_detail(blob, n, &st), SL_PCHECK_RANGE);
    /* A non-zero padding byte: 2 neurons x 2 inputs = 4 weight bytes, decay_mem of 4 bytes has no
     * padding; use 3 inputs -> 6 weight bytes + 2 padding. */
    {
        static const int8_t w3[] = {1, 2, 3, 4, 5, 6};
        layer_def P = {1, 0, 0, 0, 3, 2, w3, b, thr, d, 0, 0, 0};
        n = build_program(blob, &P, 1);
        CHECK_EQ(parse_detail(blob, n, &st), 0);
        blob[48 + 16 + 6] = 9;
        refresh_crc(blob);
        CHECK_EQ(parse_detail(blob, n, &st), SL_PCHECK_PROFILE);
    }
}

/* The rule id a refusal names: the first word of the message ("6.7 layer 0: ..."). */
static int refused_with(const uint8_t *blob, size_t n, sl_status code, const char *rule)
{
    static sl_program p;
    sl_diag d;
    size_t k = strlen(rule);
    sl_diag_clear(&d);
    return sl_program_parse(blob, n, &p, &d) == code && d.detail == rule[0] - '0' &&
           d.msg_len > k && memcmp(d.msg, rule, k) == 0 && d.msg[k] == ' ';
}

static void test_program_header_rules(void)
{
    /* The rules the firmware once skipped (Python refused these blobs, the board ran them), and
     * the rule ids in the messages (docs/program_format.md "Validation"). */
    static const int8_t w[] = {1};
    static const int32_t b[] = {0}, thr[] = {1};
    static const uint16_t d[] = {0};
    static uint8_t big[SL_MAX_PROGRAM_BYTES + 4];
    layer_def L = {1, 0, 0, 0, 1, 1, w, b, thr, d, 0, 0, 0};
    uint8_t blob[128], copy[128];
    size_t n = build_program(blob, &L, 1);
    sl_status st;

    CHECK_EQ(parse_detail(blob, n, &st), 0);
    memcpy(copy, blob, n); sl_put_u16(copy + 22, 0); refresh_crc(copy); /* num_steps */
    CHECK(refused_with(copy, n, SL_ERR_BAD_PROGRAM, "8.2"));
    memcpy(copy, blob, n); sl_put_u16(copy + 22, 1); refresh_crc(copy);
    CHECK_EQ(parse_detail(copy, n, &st), 0);
    memcpy(copy, blob, n); sl_put_u32(copy + 24, 0); refresh_crc(copy); /* dt_ns */
    CHECK(refused_with(copy, n, SL_ERR_BAD_PROGRAM, "8.3"));
    memcpy(copy, blob, n); memcpy(copy + 32, "ABCDEFGHIJKLMNO\x7f", 16); refresh_crc(copy);
    CHECK_EQ(parse_detail(copy, n, &st), 0); /* 16 characters, no NUL: valid */
    memcpy(copy, blob, n); copy[32] = 0x80; refresh_crc(copy);
    CHECK(refused_with(copy, n, SL_ERR_BAD_PROGRAM, "5.3"));
    memcpy(copy, blob, n); memcpy(copy + 32, "ab\0c", 4); refresh_crc(copy);
    CHECK(refused_with(copy, n, SL_ERR_BAD_PROGRAM, "5.3"));
    memcpy(copy, blob, n); copy[47] = 'x'; refresh_crc(copy); /* "test", NULs, then 'x' */
    CHECK(refused_with(copy, n, SL_ERR_BAD_PROGRAM, "5.3"));
    memcpy(copy, blob, n); copy[48 + 9] = 1; refresh_crc(copy); /* max_spikes */
    CHECK(refused_with(copy, n, SL_ERR_BAD_PROGRAM, "5.4"));
    memcpy(copy, blob, n); copy[48 + 11] = 1; refresh_crc(copy); /* record reserved */
    CHECK(refused_with(copy, n, SL_ERR_BAD_PROGRAM, "5.5"));
    memcpy(copy, blob, n); copy[48 + 3] = SL_MAX_SHIFT + 1; refresh_crc(copy);
    CHECK(refused_with(copy, n, SL_ERR_BAD_PROGRAM, "8.7"));
    CHECK(refused_with(blob, n - 4, SL_ERR_BAD_PROGRAM, "3.1"));
    /* total_size above the board's program memory: rule 8.1, PROGRAM_TOO_LARGE with the limit. */
    memcpy(big, blob, 48);
    sl_put_u32(big + 8, sizeof big);
    refresh_crc(big);
    {
        static sl_program p;
        sl_diag dg;
        sl_diag_clear(&dg);
        CHECK(refused_with(big, sizeof big, SL_ERR_PROGRAM_TOO_LARGE, "8.1"));
        CHECK_EQ(sl_program_parse(big, sizeof big, &p, &dg), SL_ERR_PROGRAM_TOO_LARGE);
        CHECK_EQ(dg.value, SL_MAX_PROGRAM_BYTES);
    }
}

/* A version-2 convolution record, by hand: input 1x3x3 spikes s = [[1,0,1],[0,1,0],[1,1,0]],
 * conv 1@2x2/s1/p0 with W = [[1,2],[3,4]] -> C = [[5,5],[9,4]]; then a 2x2 pool (stride 1) of C,
 * w_shift 1, leaky subtract, d = 4096, theta 20: max pool A = 9 << 1 = 18 (no spike), sum pool
 * A = 23 << 1 = 46 (spike). synops: the windows read 2 + 2 + 3 + 2 = 9 input spikes (C_out 1). */
static size_t conv_program(uint8_t *b, uint8_t pool, int graded)
{
    static const uint8_t w[4] = {1, 2, 3, 4};
    memset(b, 0, 96);
    memcpy(b, "SLPG", 4);
    sl_put_u16(b + 4, 2);
    b[6] = 1;
    b[7] = graded ? 1u : 0u;
    sl_put_u32(b + 8, 96);
    sl_put_u16(b + 16, 1);
    sl_put_u16(b + 18, 9);
    sl_put_u16(b + 20, 1);
    sl_put_u16(b + 22, 4);
    sl_put_u32(b + 24, 1000u);
    if (graded)
        sl_put_u32(b + 28, 0x3F800000u); /* input_scale 1.0f */
    b[48] = 2;     /* conv record */
    b[49] = 1;     /* leaky */
    b[51] = 1;     /* w_shift */
    sl_put_u16(b + 52, 9);
    sl_put_u16(b + 54, 1);
    sl_put_u32(b + 60, 48);
    sl_put_u16(b + 64, 1);  /* C_in, H, W, C_out */
    sl_put_u16(b + 66, 3);
    sl_put_u16(b + 68, 3);
    sl_put_u16(b + 70, 1);
    b[72] = 2;     /* kernel, stride, padding */
    b[73] = 1;
    b[75] = pool;  /* pool kind, pool_kernel, pool_stride */
    b[76] = 2;
    b[77] = 1;
    memcpy(b + 80, w, 4);
    sl_put_u32(b + 84, 0);   /* bias */
    sl_put_u32(b + 88, 20);  /* threshold */
    sl_put_u16(b + 92, 4096);
    refresh_crc(b);
    return 96;
}

static void test_core_conv_pool_and_graded(void)
{
    static uint8_t blob[96];
    static sl_program p;
    static sl_core core;
    static const uint8_t s[9] = {1, 0, 1, 0, 1, 0, 1, 1, 0};
    uint8_t out[1], gin[9];
    sl_counter ctr[1];
    sl_diag d;
    int i;
    for (i = 0; i < 2; i++) {
        sl_diag_clear(&d);
        CHECK_EQ(sl_program_parse(blob, conv_program(blob, (uint8_t)(i ? SL_POOL_SUM : SL_POOL_MAX), 0), &p, &d), SL_OK);
        CHECK_EQ(p.layers[0].geo.conv_h, 2);
        CHECK_EQ(p.layers[0].geo.out_h, 1);
        sl_core_reset(&core, &p);
        memset(ctr, 0, sizeof ctr);
        sl_core_step(&core, &p, s, out, ctr);
        CHECK_EQ(SL_CORE_MEMBRANES(&core, &p, 0)[0], i ? 46 : 18);
        CHECK_EQ(out[0], i ? 1 : 0);
        CHECK_EQ(ctr[0].synops, 9u);
        CHECK_EQ(ctr[0].spikes, i ? 1u : 0u);
    }
    /* graded: the same map times -3 where s is 1 -> C = [[-15,-15],[-27,-12]], max -12 -> A = -24;
     * events: 1 per non-zero value, still 9 */
    for (i = 0; i < 9; i++)
        gin[i] = s[i] ? (uint8_t)0xFD : 0u; /* int8 -3 */
    sl_diag_clear(&d);
    CHECK_EQ(sl_program_parse(blob, conv_program(blob, SL_POOL_MAX, 1), &p, &d), SL_OK);
    CHECK_EQ(p.graded_input, 1);
    sl_core_reset(&core, &p);
    memset(ctr, 0, sizeof ctr);
    sl_core_step(&core, &p, gin, out, ctr);
    CHECK_EQ(SL_CORE_MEMBRANES(&core, &p, 0)[0], -24);
    CHECK_EQ(ctr[0].synops, 9u);
}

static void test_program_too_many_neurons(void)
{
    static int8_t w[SL_MAX_NEURONS + 1];
    static int32_t b[SL_MAX_NEURONS + 1], thr[SL_MAX_NEURONS + 1];
    static uint16_t d[SL_MAX_NEURONS + 1];
    static uint8_t blob[16 * (SL_MAX_NEURONS + 1) + 4096];
    layer_def L = {1, 0, 0, 0, 1, SL_MAX_NEURONS + 1, w, b, thr, d, 0, 0, 0};
    sl_status st;
    int i;
    for (i = 0; i <= SL_MAX_NEURONS; i++)
        thr[i] = 1;
    size_t n = build_program(blob, &L, 1);
    CHECK_EQ(parse_detail(blob, n, &st), SL_PCHECK_RANGE);
    CHECK_EQ(st, SL_ERR_PROGRAM_TOO_LARGE);
}

/* ---- dispatcher -------------------------------------------------------------------------------- */

static const int8_t k_w[] = {20, 0, 0, 0, 20, 0};
static const int32_t k_b[] = {0, 0}, k_thr[] = {10, 10};
static const uint16_t k_d[] = {4096, 4096};

/* A 3-input, 2-output program: output i spikes when input i does (inputs 0, 1; input 2 unused). */
static size_t small_program(uint8_t *blob)
{
    layer_def L = {1, 1, 0, 0, 3, 2, k_w, k_b, k_thr, k_d, 0, 0, 0};
    return build_program(blob, &L, 1);
}

static int load(const uint8_t *blob, size_t n, sl_frame *resp)
{
    uint8_t p[12 + 512];
    sl_put_u32(p, (uint32_t)n);
    sl_put_u32(p + 4, 0);
    sl_put_u32(p + 8, sl_crc32_update(0, blob, n));
    memcpy(p + 12, blob, n);
    return request(V, SL_MSG_LOAD, 10, p, 12 + n, resp);
}

static void test_hello_ping_unknown_version(void)
{
    sl_frame r;
    static const uint8_t hello[] = {2, 2}, hello_v1[] = {1, 1}, hello_v1_3[] = {1, 3},
                         hello_v3[] = {3, 4}, hello_bad[] = {3, 1};
    board_init();
    CHECK_EQ(request(V, SL_MSG_HELLO, 1, hello, 2, &r), 0);
    CHECK_EQ(r.type, 0x81);
    CHECK_EQ(r.seq, 1);
    CHECK_EQ(r.version, 2);
    CHECK_EQ(r.payload[0], 2); /* chosen */
    CHECK_EQ(r.payload[1], 2); /* board's lowest */
    CHECK_EQ(r.payload[7], 2); /* board's highest */
    CHECK_EQ(r.payload[5], 1); /* profile mcu */
    CHECK_EQ(r.payload[6], 0); /* nothing loaded */
    CHECK_EQ(sl_get_u16(r.payload + 8), SL_MAX_PAYLOAD);
    CHECK_EQ(sl_get_u32(r.payload + 10), SL_MAX_PROGRAM_BYTES);
    CHECK_EQ(sl_get_u32(r.payload + 24), 0x12345678u);
    CHECK_EQ(sl_get_u32(r.payload + 32), SL_MAX_RECORD_BYTES);
    CHECK_EQ(r.payload[36], strlen("host-posix"));
    CHECK_EQ(r.len, 37 + strlen("host-posix"));
    CHECK(memcmp(r.payload + 37, "host-posix", 10) == 0);
    CHECK_EQ(request(V, SL_MSG_PING, 2, (const uint8_t *)"a\0b", 3, &r), 0);
    CHECK_EQ(r.type, 0x82);
    CHECK_EQ(r.len, 3);
    CHECK(memcmp(r.payload, "a\0b", 3) == 0);
    CHECK_EQ(request(V, 0x3C, 3, 0, 0, &r), 0);
    CHECK_EQ(r.type, 0xFF);
    CHECK_EQ(r.payload[0], SL_ERR_UNKNOWN_TYPE);
    CHECK_EQ(r.payload[1], 0x3C);
    /* A v1 host: its PING (header 1) and its HELLO (header 1, range 1..1) are refused naming the
     * board's versions, in a frame of the board's version. */
    CHECK_EQ(request(1, SL_MSG_PING, 4, 0, 0, &r), 0);
    CHECK_EQ(r.type, 0xFF);
    CHECK_EQ(r.version, 2);
    CHECK_EQ(r.payload[0], SL_ERR_VERSION_MISMATCH);
    CHECK_EQ(r.payload[1], 2);
    CHECK_EQ(sl_get_u32(r.payload + 2), 0x0202u);
    CHECK_EQ(request(1, SL_MSG_HELLO, 5, hello_v1, 2, &r), 0);
    CHECK_EQ(r.type, 0xFF);
    CHECK_EQ(r.version, 2);
    CHECK_EQ(r.payload[0], SL_ERR_VERSION_MISMATCH);
    CHECK_EQ(r.payload[1], 2);
    CHECK_EQ(sl_get_u32(r.payload + 2), 0x0202u);
    /* A host speaking 1..3 sends HELLO in any header version: the board chooses 2. */
    CHECK_EQ(request(3, SL_MSG_HELLO, 6, hello_v1_3, 2, &r), 0);
    CHECK_EQ(r.type, 0x81);
    CHECK_EQ(r.version, 2);
    CHECK_EQ(r.payload[0], 2);
    /* Only newer versions, or an empty range: refused. */
    CHECK_EQ(request(3, SL_MSG_HELLO, 7, hello_v3, 2, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_VERSION_MISMATCH);
    CHECK_EQ(request(V, SL_MSG_HELLO, 8, hello_bad, 2, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_VERSION_MISMATCH);
    CHECK_EQ(request(V, SL_MSG_HELLO, 9, hello, 1, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_BAD_LENGTH);
}

/* A v2 RUN header (docs/protocol.md section 3) at run[0..12). */
static void run_header(uint8_t *run, uint8_t flags, uint8_t enc, uint16_t T, uint32_t first,
                       uint16_t n_steps, uint8_t mem_layer)
{
    run[0] = flags;
    run[1] = enc;
    sl_put_u16(run + 2, T);
    sl_put_u32(run + 4, first);
    sl_put_u16(run + 8, n_steps);
    run[10] = mem_layer;
    run[11] = 0;
}

static void test_load_run_and_duplicates(void)
{
    uint8_t blob[256], run[32];
    sl_frame r;
    size_t n;
    board_init();
    n = small_program(blob);
    run_header(run, SL_RUN_BEGIN | SL_RUN_COUNTERS, SL_ENC_BITMAP, 2, 0, 3, 0);
    /* T = 2, 3 steps: sample 0 steps 0-1, sample 1 step 0 */
    run[12] = 0x01;          /* input 0 */
    run[13] = 0x03;          /* inputs 0, 1 */
    run[14] = 0x02;          /* input 1 */
    CHECK_EQ(request(V, SL_MSG_RUN, 20, run, 15, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_NOT_LOADED);
    CHECK_EQ(load(blob, n, &r), 0);
    CHECK_EQ(r.type, 0x84);
    CHECK_EQ(sl_get_u32(r.payload), n);
    CHECK_EQ(r.payload[4], 1);
    CHECK_EQ(request(V, SL_MSG_RUN, 21, run, 15, &r), 0);
    CHECK_EQ(r.type, 0x85);
    CHECK_EQ(r.payload[0], SL_RUN_COUNTERS);
    CHECK_EQ(sl_get_u32(r.payload + 4), 0);
    CHECK_EQ(sl_get_u16(r.payload + 8), 3);
    /* reset-to-zero neurons with d = 4096 copy their input: outputs = inputs 0..1. 3 steps x 1
     * byte bitmap = 3 bytes; events would be 3 counts + 4 indices = 7: bitmap chosen. */
    CHECK_EQ(r.payload[1], SL_ENC_BITMAP);
    CHECK_EQ(r.payload[12], 0x01);
    CHECK_EQ(r.payload[13], 0x03);
    CHECK_EQ(r.payload[14], 0x02);
    CHECK_EQ(r.payload[15], 1); /* one layer of counters */
    CHECK_EQ(sl_get_u32(r.payload + 16), 4);     /* spikes */
    CHECK_EQ(sl_get_u32(r.payload + 20), 4 * 2); /* synops: 4 input spikes x 2 neurons */
    CHECK_EQ(r.len, 24);
    /* The same frame again (a retransmission): the same answer, not executed twice... */
    {
        uint8_t first[64];
        size_t first_len = g_sink.len;
        memcpy(first, g_sink.buf, first_len);
        CHECK_EQ(request(V, SL_MSG_RUN, 21, run, 15, &r), 0);
        CHECK_EQ(g_sink.len, first_len);
        CHECK(memcmp(g_sink.buf, first, first_len) == 0);
    }
    /* ...so the board's step counter is 3: a continuation at step 3 is accepted, at 6 refused. */
    run_header(run, 0, SL_ENC_BITMAP, 2, 6, 1, 0);
    CHECK_EQ(request(V, SL_MSG_RUN, 22, run, 13, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_BAD_STEP);
    CHECK_EQ(sl_get_u32(r.payload + 2), 3);
    sl_put_u32(run + 4, 3);
    run[12] = 0x02; /* sample 1, step 1 */
    CHECK_EQ(request(V, SL_MSG_RUN, 23, run, 13, &r), 0);
    CHECK_EQ(r.type, 0x85);
    CHECK_EQ(r.payload[12], 0x02);
    /* Address events in: step with inputs {0, 2}: count 2, indices 0, 2. */
    run_header(run, SL_RUN_BEGIN, SL_ENC_EVENTS, 2, 0, 1, 0);
    run[12] = 2; run[13] = 0; run[14] = 2;
    CHECK_EQ(request(V, SL_MSG_RUN, 24, run, 15, &r), 0);
    CHECK_EQ(r.type, 0x85);
    CHECK_EQ(r.payload[12], 0x01);
    /* Bad events: index out of range, not increasing, bitmap bit beyond input 2. */
    run[13] = 3; run[14] = 4;
    CHECK_EQ(request(V, SL_MSG_RUN, 25, run, 15, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_BAD_INPUT);
    run[13] = 2; run[14] = 1;
    CHECK_EQ(request(V, SL_MSG_RUN, 26, run, 15, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_BAD_INPUT);
    run[1] = SL_ENC_BITMAP;
    run[12] = 0x08;
    CHECK_EQ(request(V, SL_MSG_RUN, 27, run, 13, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_BAD_INPUT);
    CHECK_EQ(request(V, SL_MSG_RUN, 28, run, 14, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_BAD_LENGTH);
    CHECK_EQ(request(V, SL_MSG_RUN, 29, run, 11, &r), 0); /* under the 12-byte header */
    CHECK_EQ(r.payload[0], SL_ERR_BAD_LENGTH);
    /* RESET mode 1 unloads. */
    CHECK_EQ(request(V, SL_MSG_RESET, 30, (const uint8_t *)"\x01", 1, &r), 0);
    CHECK_EQ(r.type, 0x83);
    run[12] = 0x01;
    CHECK_EQ(request(V, SL_MSG_RUN, 31, run, 13, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_NOT_LOADED);
}

/* A READ of the recording; returns the request() status. */
static int read_record(uint16_t seq, uint32_t offset, uint16_t max_len, sl_frame *r)
{
    uint8_t p[6];
    sl_put_u32(p, offset);
    sl_put_u16(p + 4, max_len);
    return request(V, SL_MSG_READ, seq, p, 6, r);
}

static void test_run_recording_and_read(void)
{
    /* The 3-2 program (outputs copy inputs 0, 1; U = the input drive 20 or 0): 3 steps with
     * REC_SPIKES | REC_MEMBRANE of layer 0 record per step 1 bitmap byte + 2 x i32 = 9 bytes. */
    uint8_t blob[256], run[32], p[8];
    sl_frame r;
    size_t n;
    uint32_t s;
    static const uint8_t in[3] = {0x01, 0x03, 0x02};
    board_init();
    n = small_program(blob);
    CHECK_EQ(load(blob, n, &r), 0);
    run_header(run, SL_RUN_BEGIN | SL_RUN_COUNTERS | SL_RUN_REC_SPIKES | SL_RUN_REC_MEMBRANE,
               SL_ENC_BITMAP, 2, 0, 3, 0);
    memcpy(run + 12, in, 3);
    CHECK_EQ(request(V, SL_MSG_RUN, 40, run, 15, &r), 0);
    CHECK_EQ(r.type, 0x85);
    CHECK_EQ(r.payload[0], SL_RUN_COUNTERS | SL_RUN_REC_SPIKES | SL_RUN_REC_MEMBRANE);
    CHECK_EQ(r.payload[10], 0);
    /* 12 header + 3 bitmap + 9 counters + record_total + 27 record bytes inline */
    CHECK_EQ(r.len, 12 + 3 + 9 + 4 + 27);
    CHECK_EQ(sl_get_u32(r.payload + 24), 27);
    for (s = 0; s < 3; s++) {
        const uint8_t *q = r.payload + 28 + 9 * s;
        CHECK_EQ(q[0], in[s]);
        CHECK_EQ((int32_t)sl_get_u32(q + 1), (in[s] & 1) ? 20 : 0);
        CHECK_EQ((int32_t)sl_get_u32(q + 5), (in[s] & 2) ? 20 : 0);
    }
    /* READ: chunks of any size from any offset, the same bytes as inline. */
    {
        uint8_t inline_rec[27];
        memcpy(inline_rec, r.payload + 28, 27);
        CHECK_EQ(read_record(41, 5, 4, &r), 0);
        CHECK_EQ(r.type, 0x86);
        CHECK_EQ(r.len, 12 + 4);
        CHECK_EQ(sl_get_u32(r.payload), 0);      /* first_step of the RUN */
        CHECK_EQ(sl_get_u32(r.payload + 4), 5);  /* offset */
        CHECK_EQ(sl_get_u32(r.payload + 8), 27); /* total */
        CHECK(memcmp(r.payload + 12, inline_rec + 5, 4) == 0);
        CHECK_EQ(read_record(42, 20, 0, &r), 0);
        CHECK_EQ(r.len, 12 + 7);
        CHECK(memcmp(r.payload + 12, inline_rec + 20, 7) == 0);
    }
    CHECK_EQ(read_record(43, 27, 0, &r), 0); /* past the end */
    CHECK_EQ(r.payload[0], SL_ERR_BAD_OFFSET);
    CHECK_EQ(sl_get_u32(r.payload + 2), 27);
    sl_put_u32(p, 0);
    CHECK_EQ(request(V, SL_MSG_READ, 44, p, 5, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_BAD_LENGTH);
    /* mem_layer out of range, mem_layer without REC_MEMBRANE, reserved byte, unknown flag. */
    run_header(run, SL_RUN_BEGIN | SL_RUN_REC_MEMBRANE, SL_ENC_BITMAP, 2, 0, 3, 1);
    CHECK_EQ(request(V, SL_MSG_RUN, 45, run, 15, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_BAD_INPUT);
    run_header(run, SL_RUN_BEGIN, SL_ENC_BITMAP, 2, 0, 3, 1);
    CHECK_EQ(request(V, SL_MSG_RUN, 46, run, 15, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_BAD_INPUT);
    run_header(run, SL_RUN_BEGIN, SL_ENC_BITMAP, 2, 0, 3, 0);
    run[11] = 1;
    CHECK_EQ(request(V, SL_MSG_RUN, 47, run, 15, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_BAD_INPUT);
    run_header(run, SL_RUN_BEGIN | 0x10, SL_ENC_BITMAP, 2, 0, 3, 0);
    CHECK_EQ(request(V, SL_MSG_RUN, 48, run, 15, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_BAD_INPUT);
    /* ...refused RUNs leave the recording readable. */
    CHECK_EQ(read_record(49, 0, 0, &r), 0);
    CHECK_EQ(r.type, 0x86);
    /* A RUN that records nothing ends the recording; so does RESET. */
    run_header(run, SL_RUN_BEGIN, SL_ENC_BITMAP, 2, 0, 1, 0);
    CHECK_EQ(request(V, SL_MSG_RUN, 51, run, 13, &r), 0);
    CHECK_EQ(r.type, 0x85);
    CHECK_EQ(r.len, 13);
    CHECK_EQ(read_record(52, 0, 0, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_BAD_OFFSET);
    CHECK_EQ(sl_get_u32(r.payload + 2), 0);
    run_header(run, SL_RUN_BEGIN | SL_RUN_REC_SPIKES, SL_ENC_BITMAP, 2, 0, 1, 0);
    CHECK_EQ(request(V, SL_MSG_RUN, 53, run, 13, &r), 0);
    CHECK_EQ(read_record(54, 0, 0, &r), 0);
    CHECK_EQ(r.type, 0x86);
    CHECK_EQ(request(V, SL_MSG_RESET, 55, (const uint8_t *)"\x00", 1, &r), 0);
    CHECK_EQ(read_record(56, 0, 0, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_BAD_OFFSET);
}

static void test_recording_split_over_read_chunks(void)
{
    /* A recording longer than a frame: OUTPUT carries the first max_payload - (OUTPUT so far)
     * bytes, READs the rest in chunks of at most max_payload - 12; reassembled, every step holds
     * the spikes and membranes of that step. 2 layers of 2 neurons, membranes of layer 1. */
    static const int8_t w2[] = {20, 0, 0, 20};
    static const int32_t b2[] = {0, 0}, t2[] = {10, 10};
    static uint8_t blob[512], run[12 + 4096], rec[SL_MAX_RECORD_BYTES];
    layer_def L[2] = {{1, 1, 0, 0, 3, 2, k_w, k_b, k_thr, k_d, 0, 0, 0},
                      {1, 1, 0, 0, 2, 2, w2, b2, t2, k_d, 0, 0, 0}};
    uint32_t step_bytes = 1 + 1 + 8, steps = (SL_MAX_PAYLOAD - 12u - 4u) / 1u, total, got, s;
    sl_frame r;
    size_t n = build_program(blob, L, 2);
    uint16_t seq = 60;
    int bad = 0;
    board_init();
    CHECK_EQ(load(blob, n, &r), 0);
    CHECK_EQ(r.payload[4], 1);
    if (steps > SL_MAX_RECORD_BYTES / step_bytes)
        steps = SL_MAX_RECORD_BYTES / step_bytes;
    run_header(run, SL_RUN_BEGIN | SL_RUN_REC_SPIKES | SL_RUN_REC_MEMBRANE, SL_ENC_BITMAP, 5, 0,
               (uint16_t)steps, 1);
    for (s = 0; s < steps; s++)
        run[12 + s] = (uint8_t)((s * 7u + s / 3u) % 4u); /* inputs 0, 1 in every combination */
    CHECK_EQ(request(V, SL_MSG_RUN, seq++, run, 12 + steps, &r), 0);
    CHECK_EQ(r.type, 0x85);
    total = steps * step_bytes;
    {
        uint32_t head = 12 + (r.payload[1] == SL_ENC_BITMAP ? steps : 0);
        CHECK_EQ(r.payload[1], SL_ENC_BITMAP);
        CHECK_EQ(sl_get_u32(r.payload + head), total);
        got = r.len - head - 4;
        CHECK_EQ(r.len, SL_MAX_PAYLOAD < head + 4 + total ? SL_MAX_PAYLOAD : head + 4 + total);
        memcpy(rec, r.payload + head + 4, got);
    }
    while (got < total) {
        CHECK_EQ(read_record(seq++, got, 0, &r), 0);
        if (r.type != 0x86 || r.len <= 12 || sl_get_u32(r.payload + 4) != got) {
            bad++;
            break;
        }
        CHECK(r.len <= SL_MAX_PAYLOAD);
        memcpy(rec + got, r.payload + 12, r.len - 12u);
        got += r.len - 12u;
    }
    CHECK_EQ(got, total);
    for (s = 0; s < steps; s++) {
        const uint8_t *q = rec + s * step_bytes;
        uint8_t x = run[12 + s];
        /* layer 0 copies inputs 0, 1; layer 1 copies layer 0 (both reset to zero, d = 4096) */
        bad += q[0] != x || q[1] != x;
        bad += (int32_t)sl_get_u32(q + 2) != ((x & 1) ? 20 : 0);
        bad += (int32_t)sl_get_u32(q + 6) != ((x & 2) ? 20 : 0);
    }
    CHECK_EQ(bad, 0);
}

static void test_load_errors(void)
{
    uint8_t blob[256], p[300];
    sl_frame r;
    size_t n;
    uint32_t crc;
    board_init();
    n = small_program(blob);
    crc = sl_crc32_update(0, blob, n);
    /* too large */
    sl_put_u32(p, SL_MAX_PROGRAM_BYTES + 4u);
    sl_put_u32(p + 4, 0);
    sl_put_u32(p + 8, 0);
    CHECK_EQ(request(V, SL_MSG_LOAD, 1, p, 12, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_PROGRAM_TOO_LARGE);
    CHECK_EQ(sl_get_u32(r.payload + 2), SL_MAX_PROGRAM_BYTES);
    /* two chunks, the second out of order */
    sl_put_u32(p, (uint32_t)n);
    sl_put_u32(p + 8, crc);
    memcpy(p + 12, blob, 40);
    CHECK_EQ(request(V, SL_MSG_LOAD, 2, p, 52, &r), 0);
    CHECK_EQ(r.type, 0x84);
    CHECK_EQ(r.payload[4], 0);
    sl_put_u32(p + 4, 44);
    CHECK_EQ(request(V, SL_MSG_LOAD, 3, p, 52, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_BAD_OFFSET);
    CHECK_EQ(sl_get_u32(r.payload + 2), 40);
    /* in order: completes */
    sl_put_u32(p + 4, 40);
    memcpy(p + 12, blob + 40, n - 40);
    CHECK_EQ(request(V, SL_MSG_LOAD, 4, p, 12 + n - 40, &r), 0);
    CHECK_EQ(r.payload[4], 1);
    /* whole-program checksum mismatch: the declared CRC is wrong */
    sl_put_u32(p, (uint32_t)n);
    sl_put_u32(p + 4, 0);
    sl_put_u32(p + 8, crc ^ 1u);
    memcpy(p + 12, blob, n);
    CHECK_EQ(request(V, SL_MSG_LOAD, 5, p, 12 + n, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_CHECKSUM_MISMATCH);
    CHECK_EQ(sl_get_u32(r.payload + 2), crc);
    /* a program that does not parse (bad magic, transport CRC right) */
    blob[0] = 'X';
    CHECK_EQ(load(blob, n, &r), 0);
    CHECK_EQ(r.payload[0], SL_ERR_BAD_PROGRAM);
    CHECK_EQ(r.payload[1], SL_PCHECK_MAGIC);
}

static void test_nack_on_damaged_frame(void)
{
    uint8_t wire[64];
    size_t n = 0;
    sl_frame r;
    sl_rx rx;
    size_t i;
    int got = 0;
    board_init();
    CHECK_EQ(sl_frame_encode(V, SL_MSG_PING, 9, (const uint8_t *)"xyz", 3, wire, sizeof wire, &n), SL_OK);
    wire[3] ^= 0x40;
    g_sink.len = 0;
    CHECK_EQ(sl_proto_feed(&g_ctx, wire, n), SL_OK);
    sl_rx_init(&rx);
    for (i = 0; i < g_sink.len; i++)
        if (sl_rx_push(&rx, g_sink.buf[i], &r) == SL_RX_FRAME) {
            got++;
            CHECK_EQ(r.type, 0xFF);
            CHECK_EQ(r.seq, 0xFFFF);
            CHECK(r.payload[0] == SL_ERR_BAD_CRC || r.payload[0] == SL_ERR_BAD_FRAMING);
        }
    CHECK_EQ(got, 1);
    /* A lone delimiter is ignored silently. */
    g_sink.len = 0;
    CHECK_EQ(sl_proto_feed(&g_ctx, (const uint8_t *)"\0", 1), SL_OK);
    CHECK_EQ(g_sink.len, 0);
}

static void test_stream_failing_at_every_offset(void)
{
    /* The output stream fails after k bytes, for every k within a response: the feed reports
     * SL_ERR_IO, and the board answers the next request normally. */
    uint8_t wire[128];
    size_t n = 0, full;
    long k;
    sl_frame r;
    static const uint8_t hello[] = {V, V};
    board_init();
    CHECK_EQ(request(V, SL_MSG_HELLO, 1, hello, 2, &r), 0);
    full = g_sink.len;
    CHECK(full > 40);
    for (k = 0; k < (long)full; k++) {
        board_init();
        CHECK_EQ(sl_frame_encode(V, SL_MSG_HELLO, 1, hello, 2, wire, sizeof wire, &n), SL_OK);
        g_sink.fail_after = k;
        CHECK_EQ(sl_proto_feed(&g_ctx, wire, n), SL_ERR_IO);
        g_sink.fail_after = -1;
        CHECK_EQ(request(V, SL_MSG_PING, 2, (const uint8_t *)"ok", 2, &r), 0);
        CHECK_EQ(r.type, 0x82);
    }
}

int main(void)
{
    RUN_TEST(test_crc32);
    RUN_TEST(test_cobs_vectors);
    RUN_TEST(test_cobs_rejects);
    RUN_TEST(test_frame_roundtrip_and_corruption);
    RUN_TEST(test_rx_resync_and_overflow);
    RUN_TEST(test_rx_refuses_payload_above_max);
    RUN_TEST(test_oversize_ping_is_refused_and_writes_nothing);
    RUN_TEST(test_retransmission_after_oversize_frame);
    RUN_TEST(test_every_payload_length_up_to_rx_buffer);
    RUN_TEST(test_decay_rounding);
    RUN_TEST(test_core_leaky_subtract_and_zero);
    RUN_TEST(test_core_negative_and_threshold_equality);
    RUN_TEST(test_core_synaptic);
    RUN_TEST(test_core_rleaky_and_counters);
    RUN_TEST(test_core_saturation);
    RUN_TEST(test_core_two_layers_same_step);
    RUN_TEST(test_program_checks);
    RUN_TEST(test_core_conv_pool_and_graded);
    RUN_TEST(test_program_header_rules);
    RUN_TEST(test_program_too_many_neurons);
    RUN_TEST(test_hello_ping_unknown_version);
    RUN_TEST(test_load_run_and_duplicates);
    RUN_TEST(test_run_recording_and_read);
    RUN_TEST(test_recording_split_over_read_chunks);
    RUN_TEST(test_load_errors);
    RUN_TEST(test_nack_on_damaged_frame);
    RUN_TEST(test_stream_failing_at_every_offset);
    printf("%d checks, %d failed\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
