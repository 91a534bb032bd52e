/* sl_proto.c: request dispatcher of the board (docs/protocol.md, sections 3 and 4). */
#include "sl_proto.h"

#include <string.h>

#include "sl_crc.h"
#include "sl_le.h"

#define RUN_HEADER 12u
#define RECORD_HEADER 12u
#define READ_PAYLOAD 6u

static uint8_t *program_bytes(sl_proto *ctx)
{
    return (uint8_t *)ctx->program_words;
}

void sl_proto_init(sl_proto *ctx, sl_ostream out, uint32_t boot_id)
{
    static const char build[] = SL_BUILD_STRING;
    ctx->out = out;
    sl_rx_init(&ctx->rx);
    ctx->boot_id = boot_id;
    ctx->build_id = sl_crc32_update(0, (const uint8_t *)build, sizeof build - 1u);
    ctx->requests = 0;
    ctx->have_last = 0;
    ctx->tx_len = 0;
    ctx->loading = 0;
    ctx->loaded = 0;
    ctx->program_crc = 0;
    ctx->step = 0;
    ctx->record_len = 0;
    ctx->record_first = 0;
    sl_diag_clear(&ctx->diag);
}

/* ---- responses ---------------------------------------------------------------------------- */

static sl_status send_bytes(sl_proto *ctx, const uint8_t *p, size_t n)
{
    return ctx->out.write(ctx->out.user, p, n) == 0 ? SL_OK : SL_ERR_IO;
}

static size_t error_payload(uint8_t *p, const sl_diag *d)
{
    p[0] = (uint8_t)d->code;
    p[1] = d->detail;
    sl_put_u32(p + 2, d->value);
    memcpy(p + 6, d->msg, d->msg_len);
    return 6u + d->msg_len;
}

static sl_status fail(sl_proto *ctx, sl_status code, uint8_t detail, uint32_t value,
                      const char *a, int has_n, uint32_t n, const char *b)
{
    sl_diag_clear(&ctx->diag);
    return sl_diag_set(&ctx->diag, code, detail, value, a, has_n, n, b);
}

/* Encode a response into the cache buffer (remembered for duplicate suppression) and send it.
 * The cache is marked invalid while tx is rewritten, so a failed encode (which may leave tx half
 * written) can never be replayed to a retransmission; the request then gets an ERROR (OVERFLOW,
 * detail 2) instead of no answer. */
static sl_status respond(sl_proto *ctx, const sl_frame *req, uint8_t type, size_t len)
{
    size_t n = 0;
    sl_status st;

    ctx->have_last = 0;
    ctx->tx_len = 0;
    st = sl_frame_encode(SL_PROTOCOL_VERSION, type, req->seq, ctx->payload, len, ctx->tx,
                         sizeof ctx->tx, &n);
    if (st != SL_OK) {
        /* Not reachable in a correct build: payloads are at most SL_MAX_PAYLOAD (the frame
         * decoder and every handler ensure it) and tx is sized for that. */
        (void)fail(ctx, SL_ERR_OVERFLOW, 2, (uint32_t)len, "response of ", 1, (uint32_t)len,
                   " bytes does not fit a frame");
        st = sl_frame_encode(SL_PROTOCOL_VERSION, SL_MSG_ERROR, req->seq, ctx->payload,
                             error_payload(ctx->payload, &ctx->diag), ctx->tx, sizeof ctx->tx, &n);
        if (st != SL_OK)
            return st;
    }
    ctx->tx_len = n;
    ctx->have_last = 1;
    ctx->last_seq = req->seq;
    ctx->last_crc = req->crc;
    return send_bytes(ctx, ctx->tx, ctx->tx_len);
}

static sl_status respond_error(sl_proto *ctx, const sl_frame *req)
{
    return respond(ctx, req, SL_MSG_ERROR, error_payload(ctx->payload, &ctx->diag));
}

/* NACK for a frame that did not arrive intact: seq 0xFFFF, never cached. */
static sl_status nack(sl_proto *ctx, sl_status code, const char *msg)
{
    uint8_t p[6 + SL_DIAG_MSG_MAX];
    size_t n = 0;
    sl_diag d;
    sl_diag_clear(&d);
    (void)sl_diag_set(&d, code, 0, 0, msg, 0, 0, 0);
    if (sl_frame_encode(SL_PROTOCOL_VERSION, SL_MSG_ERROR, SL_SEQ_NACK, p, error_payload(p, &d),
                        ctx->nack, sizeof ctx->nack, &n) != SL_OK)
        return SL_ERR_NO_SPACE;
    return send_bytes(ctx, ctx->nack, n);
}

/* ---- requests: each returns the payload length of its response, or sets ctx->diag ------- */

static sl_status do_hello(sl_proto *ctx, const sl_frame *f, size_t *len)
{
    static const char name[] = SL_BOARD_NAME;
    uint8_t *p = ctx->payload;
    size_t name_len = sizeof name - 1u;

    ctx->record_len = 0; /* every HELLO, LOAD and RESET ends a recording */
    if (f->len != 2)
        return fail(ctx, SL_ERR_BAD_LENGTH, SL_MSG_HELLO, f->len, "HELLO payload must be 2 bytes",
                    0, 0, 0);
    /* The highest version both speak (docs/protocol.md section 2); this build speaks
     * SL_PROTOCOL_MIN_VERSION..SL_PROTOCOL_VERSION and every frame it sends carries
     * SL_PROTOCOL_VERSION, so with one version spoken the choice is that version or none. */
    if (f->payload[0] > f->payload[1] || SL_PROTOCOL_VERSION < f->payload[0] ||
        SL_PROTOCOL_VERSION > f->payload[1])
        return fail(ctx, SL_ERR_VERSION_MISMATCH, SL_PROTOCOL_VERSION,
                    (uint32_t)SL_PROTOCOL_MIN_VERSION | ((uint32_t)SL_PROTOCOL_VERSION << 8),
                    "board speaks protocol ", 1, SL_PROTOCOL_VERSION, 0);
    if (name_len > 32u)
        name_len = 32u;
    p[0] = SL_PROTOCOL_VERSION;
    p[1] = SL_PROTOCOL_MIN_VERSION;
    p[2] = SL_FW_VERSION_MAJOR;
    p[3] = SL_FW_VERSION_MINOR;
    p[4] = SL_FW_VERSION_PATCH;
    p[5] = SL_PROFILE_MCU;
    p[6] = ctx->loaded ? 1u : 0u;
    p[7] = SL_PROTOCOL_VERSION;
    sl_put_u16(p + 8, SL_MAX_PAYLOAD);
    sl_put_u32(p + 10, SL_MAX_PROGRAM_BYTES);
    sl_put_u16(p + 14, SL_MAX_LAYERS);
    sl_put_u16(p + 16, SL_MAX_NEURONS);
    sl_put_u16(p + 18, SL_MAX_INPUTS);
    sl_put_u32(p + 20, ctx->build_id);
    sl_put_u32(p + 24, ctx->boot_id);
    sl_put_u32(p + 28, ctx->loaded ? ctx->program_crc : 0u);
    sl_put_u32(p + 32, SL_MAX_RECORD_BYTES);
    p[36] = (uint8_t)name_len;
    memcpy(p + 37, name, name_len);
    *len = 37u + name_len;
    return SL_OK;
}

static sl_status do_reset(sl_proto *ctx, const sl_frame *f, size_t *len)
{
    ctx->record_len = 0;
    if (f->len != 1)
        return fail(ctx, SL_ERR_BAD_LENGTH, SL_MSG_RESET, f->len, "RESET payload must be 1 byte",
                    0, 0, 0);
    if (f->payload[0] > 1)
        return fail(ctx, SL_ERR_BAD_INPUT, SL_MSG_RESET, f->payload[0], "unknown RESET mode", 0,
                    0, 0);
    ctx->step = 0;
    if (f->payload[0] == 1) {
        ctx->loaded = 0;
        ctx->loading = 0;
        ctx->program_crc = 0;
    } else if (ctx->loaded) {
        sl_core_reset(&ctx->core, &ctx->prog);
    }
    ctx->payload[0] = f->payload[0];
    *len = 1;
    return SL_OK;
}

static sl_status do_load(sl_proto *ctx, const sl_frame *f, size_t *len)
{
    uint32_t total, offset, crc, n;

    ctx->record_len = 0;
    if (f->len < 12)
        return fail(ctx, SL_ERR_BAD_LENGTH, SL_MSG_LOAD, f->len, "LOAD payload under 12 bytes", 0,
                    0, 0);
    total = sl_get_u32(f->payload);
    offset = sl_get_u32(f->payload + 4);
    crc = sl_get_u32(f->payload + 8);
    n = f->len - 12u;
    if (total > SL_MAX_PROGRAM_BYTES)
        return fail(ctx, SL_ERR_PROGRAM_TOO_LARGE, 0, SL_MAX_PROGRAM_BYTES, "program of ", 1,
                    total, " bytes exceeds board memory");
    if (offset == 0) {
        ctx->loaded = 0;
        ctx->program_crc = 0;
        ctx->loading = 1;
        ctx->load_total = total;
        ctx->load_crc = crc;
        ctx->load_received = 0;
    } else if (!ctx->loading || total != ctx->load_total || crc != ctx->load_crc ||
               offset != ctx->load_received) {
        return fail(ctx, SL_ERR_BAD_OFFSET, 0, ctx->loading ? ctx->load_received : 0,
                    "LOAD chunk at offset ", 1, offset, " out of order");
    }
    if (n > total - offset)
        return fail(ctx, SL_ERR_BAD_LENGTH, SL_MSG_LOAD, n, "LOAD chunk runs past total", 0, 0,
                    0);
    memcpy(program_bytes(ctx) + offset, f->payload + 12, n);
    ctx->load_received += n;
    if (ctx->load_received == total) {
        uint32_t got = sl_crc32_update(0, program_bytes(ctx), total);
        sl_status st;
        ctx->loading = 0;
        if (got != ctx->load_crc)
            return fail(ctx, SL_ERR_CHECKSUM_MISMATCH, 0, got, "program CRC-32 mismatch", 0, 0, 0);
        sl_diag_clear(&ctx->diag);
        st = sl_program_parse(program_bytes(ctx), total, &ctx->prog, &ctx->diag);
        if (st != SL_OK)
            return st;
        ctx->loaded = 1;
        ctx->program_crc = got;
        ctx->step = 0;
        sl_core_reset(&ctx->core, &ctx->prog);
    }
    sl_put_u32(ctx->payload, ctx->load_received);
    ctx->payload[4] = (ctx->loaded && ctx->load_received == total) ? 1u : 0u;
    *len = 5;
    return SL_OK;
}

/* Width of counts and indices in address events for n neurons. */
static uint32_t event_width(uint32_t n)
{
    return n <= 255u ? 1u : 2u;
}

static uint32_t get_w(const uint8_t *p, uint32_t w)
{
    return w == 1u ? p[0] : sl_get_u16(p);
}

static void put_w(uint8_t *p, uint32_t w, uint32_t v)
{
    if (w == 1u)
        p[0] = (uint8_t)v;
    else
        sl_put_u16(p, (uint16_t)v);
}

/* Check the input data of a RUN completely before any step runs, so that a bad frame leaves the
 * neuron state untouched. */
static sl_status check_input(sl_proto *ctx, uint8_t enc, const uint8_t *d, uint32_t n,
                             uint32_t n_steps)
{
    uint32_t N = ctx->prog.num_inputs, row = (N + 7u) / 8u, w = event_width(N), s, r = 0;
    if (enc == SL_ENC_VALUES || enc == SL_ENC_HELD) { /* graded int8 values: any byte is valid */
        if (n != (enc == SL_ENC_VALUES ? n_steps * N : N))
            return fail(ctx, SL_ERR_BAD_LENGTH, SL_MSG_RUN, n, "RUN values length wrong", 0, 0, 0);
        return SL_OK;
    }
    if (enc == SL_ENC_BITMAP) {
        uint8_t tail = (uint8_t)((N % 8u) ? (0xFFu << (N % 8u)) & 0xFFu : 0u);
        if (n != n_steps * row)
            return fail(ctx, SL_ERR_BAD_LENGTH, SL_MSG_RUN, n, "RUN bitmap length wrong", 0, 0, 0);
        for (s = 0; s < n_steps; s++)
            if (d[s * row + row - 1u] & tail)
                return fail(ctx, SL_ERR_BAD_INPUT, SL_MSG_RUN, s, "RUN bitmap bit beyond input ",
                            1, N, 0);
        return SL_OK;
    }
    for (s = 0; s < n_steps; s++) {
        uint32_t c, k, prev = 0;
        if (n - r < w)
            return fail(ctx, SL_ERR_BAD_LENGTH, SL_MSG_RUN, n, "RUN events truncated", 0, 0, 0);
        c = get_w(d + r, w);
        r += w;
        if (c > N || (n - r) / w < c)
            return fail(ctx, SL_ERR_BAD_LENGTH, SL_MSG_RUN, n, "RUN events truncated", 0, 0, 0);
        for (k = 0; k < c; k++) {
            uint32_t a = get_w(d + r, w);
            r += w;
            if (a >= N || (k > 0 && a <= prev))
                return fail(ctx, SL_ERR_BAD_INPUT, SL_MSG_RUN, a,
                            "RUN event index out of range or order, step ", 1, s, 0);
            prev = a;
        }
    }
    if (r != n)
        return fail(ctx, SL_ERR_BAD_LENGTH, SL_MSG_RUN, n, "RUN events length wrong", 0, 0, 0);
    return SL_OK;
}

/* Bytes of layer k's row in a recording: a bitmap of its spikes (a max-pooling record: of its
 * 0/1 outputs), or for a sum-pooling record one u8 count per output (docs/protocol.md 3.1). */
static uint32_t record_row_bytes(const sl_layer *L)
{
    if (L->record_type == SL_RECORD_POOL && L->geo.pool == SL_POOL_SUM)
        return L->num_neurons;
    return (L->num_neurons + 7u) / 8u;
}

/* Bytes per step of the recording a RUN with these flags asks for (docs/protocol.md 3.1). */
static uint32_t record_step_bytes(const sl_program *prog, uint8_t flags, uint32_t mem_layer)
{
    uint32_t k, n = 0;
    if (flags & SL_RUN_REC_SPIKES)
        for (k = 0; k < prog->num_layers; k++)
            n += record_row_bytes(&prog->layers[k]);
    if (flags & SL_RUN_REC_MEMBRANE)
        n += 4u * prog->layers[mem_layer].num_neurons;
    return n;
}

/* Append this step's recording (every layer's row, then one layer's membranes) at o. */
static uint32_t record_step(sl_proto *ctx, uint8_t flags, uint32_t mem_layer, uint32_t o)
{
    const sl_program *prog = &ctx->prog;
    uint32_t k, i;
    if (flags & SL_RUN_REC_SPIKES)
        for (k = 0; k < prog->num_layers; k++) {
            const sl_layer *L = &prog->layers[k];
            const uint8_t *S = SL_CORE_SPIKES(&ctx->core, prog, k);
            uint32_t N = L->num_neurons, row = record_row_bytes(L);
            if (row == N && L->record_type == SL_RECORD_POOL) {
                memcpy(ctx->record + o, S, N);
            } else {
                memset(ctx->record + o, 0, row);
                for (i = 0; i < N; i++)
                    if (S[i])
                        ctx->record[o + i / 8u] |= (uint8_t)(1u << (i % 8u));
            }
            o += row;
        }
    if (flags & SL_RUN_REC_MEMBRANE) {
        const int32_t *U = SL_CORE_MEMBRANES(&ctx->core, prog, mem_layer);
        for (i = 0; i < prog->layers[mem_layer].num_neurons; i++, o += 4u)
            sl_put_u32(ctx->record + o, (uint32_t)U[i]);
    }
    return o;
}

static sl_status do_run(sl_proto *ctx, const sl_frame *f, size_t *len)
{
    const uint8_t *p = f->payload;
    uint8_t flags, enc, *out = ctx->payload;
    uint32_t T, first, n_steps, N_in, N_out, row_in, row_out, w_out, bitmap_bytes, events_bytes;
    uint32_t s, i, r = 0, o, L, mem_layer, rec_step, rec = 0, reply;
    const uint8_t known = SL_RUN_BEGIN | SL_RUN_COUNTERS | SL_RUN_REC_SPIKES | SL_RUN_REC_MEMBRANE;
    sl_status st;

    if (f->len < RUN_HEADER)
        return fail(ctx, SL_ERR_BAD_LENGTH, SL_MSG_RUN, f->len, "RUN payload under 12 bytes", 0, 0,
                    0);
    if (!ctx->loaded)
        return fail(ctx, SL_ERR_NOT_LOADED, 0, 0, "RUN before a program is loaded", 0, 0, 0);
    flags = p[0];
    enc = p[1];
    T = sl_get_u16(p + 2);
    first = sl_get_u32(p + 4);
    n_steps = sl_get_u16(p + 8);
    mem_layer = p[10];
    /* spike programs take encodings 0/1, graded-input programs 2/3 (docs/protocol.md) */
    if ((flags & ~known) || (ctx->prog.graded_input ? (enc != SL_ENC_VALUES && enc != SL_ENC_HELD)
                                                    : enc > SL_ENC_EVENTS) ||
        T == 0 || n_steps == 0 || p[11] != 0)
        return fail(ctx, SL_ERR_BAD_INPUT, SL_MSG_RUN, 0, "RUN flags/encoding/T/n_steps invalid",
                    0, 0, 0);
    N_in = ctx->prog.num_inputs;
    N_out = ctx->prog.num_outputs;
    L = ctx->prog.num_layers;
    if ((flags & SL_RUN_REC_MEMBRANE)
            ? mem_layer >= L || ctx->prog.layers[mem_layer].record_type == SL_RECORD_POOL
            : mem_layer != 0) /* a pooling record has no membranes */
        return fail(ctx, SL_ERR_BAD_INPUT, SL_MSG_RUN, mem_layer, "RUN mem_layer ", 1, mem_layer,
                    " invalid");
    row_in = (N_in + 7u) / 8u;
    row_out = (N_out + 7u) / 8u;
    w_out = event_width(N_out);
    rec_step = record_step_bytes(&ctx->prog, flags, mem_layer);
    reply = RUN_HEADER + n_steps * row_out + ((flags & SL_RUN_COUNTERS) ? 1u + 8u * L : 0u) +
            (rec_step ? 4u : 0u);
    if (reply > SL_MAX_PAYLOAD)
        return fail(ctx, SL_ERR_OVERFLOW, 1, SL_MAX_PAYLOAD, "OUTPUT for ", 1, n_steps,
                    " steps would not fit a frame");
    if (rec_step && n_steps > SL_MAX_RECORD_BYTES / rec_step) /* division: no u32 overflow */
        return fail(ctx, SL_ERR_OVERFLOW, 3, SL_MAX_RECORD_BYTES, "recording of ", 1, n_steps,
                    " steps exceeds board memory");
    if (first != ((flags & SL_RUN_BEGIN) ? 0u : ctx->step))
        return fail(ctx, SL_ERR_BAD_STEP, 0, (flags & SL_RUN_BEGIN) ? 0u : ctx->step,
                    "RUN first_step ", 1, first, " is not the board's step");
    st = check_input(ctx, enc, p + RUN_HEADER, f->len - RUN_HEADER, n_steps);
    if (st != SL_OK)
        return st;

    if (flags & SL_RUN_BEGIN)
        ctx->step = 0;
    memset(ctx->counters, 0, sizeof ctx->counters);
    memset(ctx->bitmap, 0, n_steps * row_out);
    ctx->record_len = 0;
    events_bytes = 0;
    r = RUN_HEADER;
    for (s = 0; s < n_steps; s++) {
        uint32_t spikes = 0;
        if (ctx->step % T == 0u)
            sl_core_reset(&ctx->core, &ctx->prog);
        if (enc == SL_ENC_BITMAP) {
            for (i = 0; i < N_in; i++)
                ctx->in_spk[i] = (uint8_t)((p[r + i / 8u] >> (i % 8u)) & 1u);
            r += row_in;
        } else if (enc == SL_ENC_VALUES) {
            memcpy(ctx->in_spk, p + r, N_in);
            r += N_in;
        } else if (enc == SL_ENC_HELD) {
            if (s == 0)
                memcpy(ctx->in_spk, p + r, N_in); /* the same vector every step of the frame */
        } else {
            uint32_t w = event_width(N_in), c = get_w(p + r, w), k;
            memset(ctx->in_spk, 0, N_in);
            r += w;
            for (k = 0; k < c; k++, r += w)
                ctx->in_spk[get_w(p + r, w)] = 1;
        }
        sl_core_step(&ctx->core, &ctx->prog, ctx->in_spk, ctx->out_spk,
                     (flags & SL_RUN_COUNTERS) ? ctx->counters : 0);
        if (rec_step)
            rec = record_step(ctx, flags, mem_layer, rec);
        for (i = 0; i < N_out; i++)
            if (ctx->out_spk[i]) {
                ctx->bitmap[s * row_out + i / 8u] |= (uint8_t)(1u << (i % 8u));
                spikes++;
            }
        events_bytes += w_out * (1u + spikes);
        ctx->step++;
    }
    ctx->record_len = rec;
    ctx->record_first = first;

    bitmap_bytes = n_steps * row_out;
    out[0] = (uint8_t)(flags & ~SL_RUN_BEGIN);
    sl_put_u16(out + 2, (uint16_t)T);
    sl_put_u32(out + 4, first);
    sl_put_u16(out + 8, (uint16_t)n_steps);
    out[10] = (uint8_t)mem_layer;
    out[11] = 0;
    o = RUN_HEADER;
    if (events_bytes < bitmap_bytes) {
        out[1] = SL_ENC_EVENTS;
        for (s = 0; s < n_steps; s++) {
            uint32_t count_at = o, c = 0;
            o += w_out;
            for (i = 0; i < N_out; i++)
                if ((ctx->bitmap[s * row_out + i / 8u] >> (i % 8u)) & 1u) {
                    put_w(out + o, w_out, i);
                    o += w_out;
                    c++;
                }
            put_w(out + count_at, w_out, c);
        }
    } else {
        out[1] = SL_ENC_BITMAP;
        memcpy(out + o, ctx->bitmap, bitmap_bytes);
        o += bitmap_bytes;
    }
    if (flags & SL_RUN_COUNTERS) {
        out[o++] = (uint8_t)L;
        for (i = 0; i < L; i++, o += 8u) {
            sl_put_u32(out + o, ctx->counters[i].spikes);
            sl_put_u32(out + o + 4u, ctx->counters[i].synops);
        }
    }
    if (rec_step) {
        /* o <= reply - 4 (events are chosen only when shorter than the bitmap), so the first
         * chunk never takes the payload past SL_MAX_PAYLOAD. */
        uint32_t k = SL_MAX_PAYLOAD - (o + 4u);
        if (k > rec)
            k = rec;
        sl_put_u32(out + o, rec);
        memcpy(out + o + 4u, ctx->record, k);
        o += 4u + k;
    }
    *len = o;
    return SL_OK;
}

/* READ: a chunk of the recording (docs/protocol.md section 3.1). */
static sl_status do_read(sl_proto *ctx, const sl_frame *f, size_t *len)
{
    uint32_t offset, max_len, n;
    uint8_t *out = ctx->payload;

    if (f->len != READ_PAYLOAD)
        return fail(ctx, SL_ERR_BAD_LENGTH, SL_MSG_READ, f->len, "READ payload must be 6 bytes", 0,
                    0, 0);
    if (!ctx->loaded) /* a board that restarted: the host reloads and reruns (section 4) */
        return fail(ctx, SL_ERR_NOT_LOADED, 0, 0, "READ before a program is loaded", 0, 0, 0);
    offset = sl_get_u32(f->payload);
    max_len = sl_get_u16(f->payload + 4);
    if (offset >= ctx->record_len)
        return fail(ctx, SL_ERR_BAD_OFFSET, 0, ctx->record_len, "READ offset ", 1, offset,
                    ctx->record_len ? " past the recording" : " with no recording");
    n = ctx->record_len - offset;
    if (n > SL_MAX_PAYLOAD - RECORD_HEADER)
        n = SL_MAX_PAYLOAD - RECORD_HEADER;
    if (max_len != 0 && n > max_len)
        n = max_len;
    sl_put_u32(out, ctx->record_first);
    sl_put_u32(out + 4, offset);
    sl_put_u32(out + 8, ctx->record_len);
    memcpy(out + RECORD_HEADER, ctx->record + offset, n);
    *len = RECORD_HEADER + n;
    return SL_OK;
}

/* ---- dispatch ----------------------------------------------------------------------------- */

static sl_status handle(sl_proto *ctx, const sl_frame *f)
{
    size_t len = 0;
    sl_status st;

    ctx->requests++;
    /* A HELLO is read whatever its header version (its payload is the same in every version);
     * do_hello negotiates. Every other request must carry the version this board speaks. */
    if (f->version != SL_PROTOCOL_VERSION && f->type != SL_MSG_HELLO) {
        fail(ctx, SL_ERR_VERSION_MISMATCH, SL_PROTOCOL_VERSION,
             (uint32_t)SL_PROTOCOL_MIN_VERSION | ((uint32_t)SL_PROTOCOL_VERSION << 8),
             "board speaks protocol ", 1, SL_PROTOCOL_VERSION, 0);
        return respond_error(ctx, f);
    }
    if (f->type == SL_MSG_HELLO)
        ctx->have_last = 0;
    else if (ctx->have_last && f->seq == ctx->last_seq && f->crc == ctx->last_crc)
        return send_bytes(ctx, ctx->tx, ctx->tx_len); /* a retransmission: answer, don't redo */

    sl_diag_clear(&ctx->diag);
    switch (f->type) {
    case SL_MSG_HELLO:
        st = do_hello(ctx, f, &len);
        break;
    case SL_MSG_PING:
        /* f->len <= SL_MAX_PAYLOAD already (sl_frame_parse); checked again at the copy. */
        if (f->len > sizeof ctx->payload) {
            st = fail(ctx, SL_ERR_BAD_LENGTH, SL_MSG_PING, f->len, "PING above max_payload", 0,
                      0, 0);
            break;
        }
        memcpy(ctx->payload, f->payload, f->len);
        len = f->len;
        st = SL_OK;
        break;
    case SL_MSG_RESET:
        st = do_reset(ctx, f, &len);
        break;
    case SL_MSG_LOAD:
        st = do_load(ctx, f, &len);
        break;
    case SL_MSG_RUN:
        st = do_run(ctx, f, &len);
        break;
    case SL_MSG_READ:
        st = do_read(ctx, f, &len);
        break;
    default:
        st = fail(ctx, SL_ERR_UNKNOWN_TYPE, f->type, f->type, "unknown message type ", 1, f->type,
                  0);
        break;
    }
    if (st != SL_OK)
        return respond_error(ctx, f);
    return respond(ctx, f, (uint8_t)(f->type | SL_MSG_RESPONSE), len);
}

sl_status sl_proto_feed(sl_proto *ctx, const uint8_t *data, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        sl_frame f;
        sl_status st = SL_OK;
        switch (sl_rx_push(&ctx->rx, data[i], &f)) {
        case SL_RX_FRAME:
            st = handle(ctx, &f);
            break;
        case SL_RX_BAD_CRC:
            st = nack(ctx, SL_ERR_BAD_CRC, "frame CRC mismatch");
            break;
        case SL_RX_BAD_FRAMING:
            st = nack(ctx, SL_ERR_BAD_FRAMING, "frame COBS error or runt");
            break;
        case SL_RX_OVERFLOW:
            st = nack(ctx, SL_ERR_OVERFLOW, "frame longer than max_payload");
            break;
        default:
            break;
        }
        if (st == SL_ERR_IO)
            return st;
    }
    return SL_OK;
}
