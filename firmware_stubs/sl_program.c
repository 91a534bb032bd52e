/* sl_program.c: one-pass validation of a program blob (docs/program_format.md, "Validation"),
 * versions 1 and 2.
 *
 * The checks run in the order of that table, and the first failing one is reported with its rule
 * id ("check.sub": detail = the check number, SL_PCHECK_*; the message starts with the id), so that
 * the board and the Python reader (hw/program.py) name the same rule for the same blob
 * (tests/test_program_corpus.py). */
#include "sl_program.h"

#include "sl_crc.h"
#include "sl_le.h"

#include <string.h>

#define NAME_OFFSET 32u
#define NAME_BYTES 16u
#define DECAY_MAX 4096u

static uint32_t pad4(uint32_t x)
{
    return (x + 3u) & ~3u;
}

static int zero_bytes(const uint8_t *p, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n; i++)
        if (p[i] != 0)
            return 0;
    return 1;
}

/* ASCII (0x01..0x7F) characters followed by NUL padding only. */
static int name_ok(const uint8_t *name)
{
    uint32_t i;
    int padding = 0;
    for (i = 0; i < NAME_BYTES; i++) {
        if (name[i] == 0)
            padding = 1;
        else if (padding || name[i] >= 0x80u)
            return 0;
    }
    return 1;
}

static sl_status bad(sl_diag *d, uint8_t check, uint8_t sub, const char *a, int has_n, uint32_t n,
                     const char *b)
{
    return sl_diag_set_rule(d, SL_ERR_BAD_PROGRAM, check, sub, 0, a, has_n, n, b);
}

/* A capacity of the board is exceeded: PROGRAM_TOO_LARGE, value = the limit. */
static sl_status too_large(sl_diag *d, uint8_t check, uint8_t sub, uint32_t limit, const char *a,
                           int has_n, uint32_t n, const char *b)
{
    return sl_diag_set_rule(d, SL_ERR_PROGRAM_TOO_LARGE, check, sub, limit, a, has_n, n, b);
}

/* A section of `bytes` bytes at *off: must fit before `end`, padding must be zero. */
static const uint8_t *take(const uint8_t *blob, uint32_t *off, uint32_t bytes, uint32_t end)
{
    const uint8_t *p = blob + *off;
    uint32_t padded = pad4(bytes);
    if (padded > end - *off)
        return 0;
    if (!zero_bytes(p + bytes, padded - bytes))
        return 0;
    *off += padded;
    return p;
}

/* Rule 6.10 for the geometry of a record of type rtype (2 or 3) at h: fills L->geo; 0 when
 * inconsistent. The conditions of hw/program.py MapGeometry, in one verdict (one rule). */
static int geometry_ok(const uint8_t *h, uint8_t rtype, sl_layer *L)
{
    const uint8_t *g = h + SL_LAYER_HEADER_BYTES;
    sl_geometry *G = &L->geo;
    uint32_t span_h, span_w;
    uint64_t fan_in, n;

    G->in_c = sl_get_u16(g);
    G->in_h = sl_get_u16(g + 2);
    G->in_w = sl_get_u16(g + 4);
    G->out_c = sl_get_u16(g + 6);
    G->kernel = g[8];
    G->stride = g[9];
    G->padding = g[10];
    G->pool = g[11];
    G->pool_kernel = g[12];
    G->pool_stride = g[13];
    if (g[14] != 0 || g[15] != 0 || G->pool > SL_POOL_SUM)
        return 0;
    if (G->in_c == 0 || G->in_h == 0 || G->in_w == 0 || G->out_c == 0)
        return 0;
    if (rtype == SL_RECORD_POOL) {
        if (G->kernel || G->stride || G->padding || G->pool == SL_POOL_NONE || G->out_c != G->in_c)
            return 0;
    } else if (G->kernel == 0 || G->stride == 0 || G->padding >= G->kernel) {
        return 0;
    }
    if (G->pool == SL_POOL_NONE ? (G->pool_kernel || G->pool_stride)
                                : (G->pool_kernel < 1 || G->pool_kernel > SL_MAX_POOL_KERNEL ||
                                   G->pool_stride < 1))
        return 0;
    if (rtype == SL_RECORD_POOL) {
        G->conv_h = G->in_h;
        G->conv_w = G->in_w;
    } else {
        span_h = (uint32_t)G->in_h + 2u * G->padding;
        span_w = (uint32_t)G->in_w + 2u * G->padding;
        if (span_h < G->kernel || span_w < G->kernel)
            return 0;
        G->conv_h = (uint16_t)((span_h - G->kernel) / G->stride + 1u);
        G->conv_w = (uint16_t)((span_w - G->kernel) / G->stride + 1u);
    }
    if (G->pool == SL_POOL_NONE) {
        G->out_h = G->conv_h;
        G->out_w = G->conv_w;
    } else {
        if (G->conv_h < G->pool_kernel || G->conv_w < G->pool_kernel)
            return 0;
        G->out_h = (uint16_t)((G->conv_h - G->pool_kernel) / G->pool_stride + 1u);
        G->out_w = (uint16_t)((G->conv_w - G->pool_kernel) / G->pool_stride + 1u);
    }
    fan_in = (uint64_t)G->in_c * G->in_h * G->in_w;
    n = (uint64_t)G->out_c * G->out_h * G->out_w;
    return fan_in == sl_get_u16(h + 4) && n == sl_get_u16(h + 6);
}

/* Rules 8.5 (per layer and the state pool) and 8.6 (fan-in; a convolution's window too). */
static sl_status check_capacity(uint16_t k, uint32_t N, uint32_t fan, uint32_t before, sl_diag *d)
{
    if (N > SL_MAX_NEURONS)
        return too_large(d, SL_PCHECK_RANGE, 5, SL_MAX_NEURONS, "layer ", 1, k,
                         ": more neurons than the board has");
    if (before + N > SL_MAX_NEURONS_TOTAL)
        return too_large(d, SL_PCHECK_RANGE, 5, SL_MAX_NEURONS_TOTAL, "layer ", 1, k,
                         ": layers together above the state pool");
    if (fan > SL_MAX_INPUTS)
        return too_large(d, SL_PCHECK_RANGE, 6, SL_MAX_INPUTS, "layer ", 1, k,
                         ": fan_in above the board's limit");
    return SL_OK;
}

/* Rules 6.3 .. 8.12 for layer k, whose record starts at *off; *off moves past it. before: the
 * neurons of the earlier records (their place in the state pool). */
static sl_status parse_layer(const uint8_t *blob, uint32_t *off, uint32_t total, uint16_t version,
                             uint16_t k, uint32_t before, sl_layer *L, sl_diag *d)
{
    const uint8_t *h = blob + *off;
    uint32_t N, M, expect, rec_size, start = *off, end, i, head, n_weights, window = 0;
    uint8_t rtype;
    sl_status st;

    if (total - *off < SL_LAYER_HEADER_BYTES)
        return bad(d, SL_PCHECK_RECORD, 3, "layer ", 1, k, ": record header past total_size");
    rtype = h[0];
    if (rtype < SL_RECORD_DENSE || rtype > (version < 2 ? SL_RECORD_DENSE : SL_RECORD_POOL))
        return bad(d, SL_PCHECK_RECORD, 4, "layer ", 1, k, ": unknown record_type");
    L->record_type = rtype;
    L->state = (uint16_t)before;
    L->weights = L->bias = L->threshold = L->decay_mem = 0;
    L->decay_syn = L->rec_weights = L->rec_gain = 0;
    memset(&L->geo, 0, sizeof L->geo);
    if (rtype != SL_RECORD_DENSE) {
        if (total - *off < SL_LAYER_HEADER_BYTES + SL_GEOMETRY_BYTES)
            return bad(d, SL_PCHECK_RECORD, 9, "layer ", 1, k, ": geometry past total_size");
        if (!geometry_ok(h, rtype, L))
            return bad(d, SL_PCHECK_RECORD, 10, "layer ", 1, k, ": geometry inconsistent");
    }
    L->neuron_type = h[1];
    L->reset_mode = h[2];
    L->w_shift = h[3];
    L->rec_shift = h[8];
    L->fan_in = sl_get_u16(h + 4);
    L->num_neurons = sl_get_u16(h + 6);
    N = L->num_neurons;
    M = L->fan_in;
    rec_size = sl_get_u32(h + 12);
    if (rtype == SL_RECORD_POOL) {
        if (h[1] || h[2] || h[3] || h[8] || h[9])
            return bad(d, SL_PCHECK_RECORD, 11, "layer ", 1, k, ": pooling record field not 0");
        if (h[10] != 0 || h[11] != 0)
            return bad(d, SL_PCHECK_PROFILE, 5, "layer ", 1, k, ": reserved bytes not 0");
        st = check_capacity(k, N, M, before, d);
        if (st != SL_OK)
            return st;
        if (rec_size != SL_LAYER_HEADER_BYTES + SL_GEOMETRY_BYTES)
            return bad(d, SL_PCHECK_RECORD, 7, "layer ", 1, k, ": record_size does not match fields");
        if (rec_size > total - start)
            return bad(d, SL_PCHECK_RECORD, 8, "layer ", 1, k, ": record runs past total_size");
        *off = start + rec_size;
        return SL_OK;
    }
    if (h[1] < SL_NEURON_LEAKY || h[1] > SL_NEURON_RLEAKY_ELEMENTWISE ||
        (rtype == SL_RECORD_CONV && h[1] > SL_NEURON_SYNAPTIC))
        return bad(d, SL_PCHECK_RECORD, 5, "layer ", 1, k, ": unknown neuron_type");
    if (h[2] > SL_RESET_ZERO)
        return bad(d, SL_PCHECK_RECORD, 6, "layer ", 1, k, ": unknown reset_mode");
    if (h[9] != 0)
        return bad(d, SL_PCHECK_PROFILE, 4, "layer ", 1, k, ": max_spikes not 0");
    if (h[10] != 0 || h[11] != 0)
        return bad(d, SL_PCHECK_PROFILE, 5, "layer ", 1, k, ": reserved bytes not 0");
    if (N == 0 || M == 0)
        return bad(d, SL_PCHECK_RANGE, 4, "layer ", 1, k, ": fan_in or num_neurons is 0");
    if (rtype == SL_RECORD_CONV)
        window = (uint32_t)L->geo.in_c * L->geo.kernel * L->geo.kernel;
    st = check_capacity(k, N, M > window ? M : window, before, d);
    if (st != SL_OK)
        return st;
    if (L->w_shift > SL_MAX_SHIFT)
        return bad(d, SL_PCHECK_RANGE, 7, "layer ", 1, k, ": w_shift too large");
    if (L->rec_shift > SL_MAX_SHIFT || (L->neuron_type != SL_NEURON_RLEAKY_DENSE && L->rec_shift))
        return bad(d, SL_PCHECK_RANGE, 8, "layer ", 1, k, ": bad rec_shift");
    /* N <= 4096, M and the window <= 4096: no u32 overflow below */
    head = SL_LAYER_HEADER_BYTES + (rtype == SL_RECORD_CONV ? SL_GEOMETRY_BYTES : 0u);
    n_weights = rtype == SL_RECORD_CONV ? (uint32_t)L->geo.out_c * window : N * M;
    expect = head + pad4(n_weights) + 4u * N + 4u * N + pad4(2u * N);
    if (L->neuron_type == SL_NEURON_SYNAPTIC)
        expect += pad4(2u * N);
    if (L->neuron_type == SL_NEURON_RLEAKY_DENSE)
        expect += pad4(N * N);
    if (L->neuron_type == SL_NEURON_RLEAKY_ELEMENTWISE)
        expect += 4u * N;
    if (rec_size != expect)
        return bad(d, SL_PCHECK_RECORD, 7, "layer ", 1, k, ": record_size does not match fields");
    if (rec_size > total - start)
        return bad(d, SL_PCHECK_RECORD, 8, "layer ", 1, k, ": record runs past total_size");
    end = start + rec_size;
    *off = start + head;
    /* The sizes were checked above, so take() can only fail on non-zero padding. */
    L->weights = take(blob, off, n_weights, end);
    L->bias = L->weights ? take(blob, off, 4u * N, end) : 0;
    L->threshold = L->bias ? take(blob, off, 4u * N, end) : 0;
    L->decay_mem = L->threshold ? take(blob, off, 2u * N, end) : 0;
    L->decay_syn = L->neuron_type == SL_NEURON_SYNAPTIC && L->decay_mem
                       ? take(blob, off, 2u * N, end) : 0;
    L->rec_weights = L->neuron_type == SL_NEURON_RLEAKY_DENSE && L->decay_mem
                         ? take(blob, off, N * N, end) : 0;
    L->rec_gain = L->neuron_type == SL_NEURON_RLEAKY_ELEMENTWISE && L->decay_mem
                      ? take(blob, off, 4u * N, end) : 0;
    if (!L->decay_mem || (L->neuron_type == SL_NEURON_SYNAPTIC && !L->decay_syn) ||
        (L->neuron_type == SL_NEURON_RLEAKY_DENSE && !L->rec_weights) ||
        (L->neuron_type == SL_NEURON_RLEAKY_ELEMENTWISE && !L->rec_gain))
        return bad(d, SL_PCHECK_PROFILE, 6, "layer ", 1, k, ": padding byte not 0");
    /* Values, one array after the other (as the table lists them); bias and rec_gain: any i32. */
    for (i = 0; i < N; i++)
        if (sl_get_i32(L->threshold + 4u * i) < 1)
            return bad(d, SL_PCHECK_RANGE, 9, "layer ", 1, k, ": threshold below 1");
    for (i = 0; i < N; i++)
        if (sl_get_u16(L->decay_mem + 2u * i) > DECAY_MAX ||
            (L->decay_syn && sl_get_u16(L->decay_syn + 2u * i) > DECAY_MAX))
            return bad(d, SL_PCHECK_RANGE, 11, "layer ", 1, k, ": decay above 4096");
    *off = end;
    return SL_OK;
}

/* input_scale (float32 bits) finite and > 0: sign 0, exponent not all ones, not +0. */
static int scale_ok(uint32_t bits)
{
    return !(bits & 0x80000000u) && (bits & 0x7F800000u) != 0x7F800000u && bits != 0u;
}

sl_status sl_program_parse(const uint8_t *blob, size_t n, sl_program *p, sl_diag *d)
{
    uint32_t total, crc, off;
    uint16_t version, k;
    static const uint8_t magic[4] = {'S', 'L', 'P', 'G'};

    if (n < SL_PROGRAM_HEADER_BYTES)
        return bad(d, SL_PCHECK_MAGIC, 1, "program shorter than its 48-byte header", 0, 0, 0);
    for (k = 0; k < 4; k++)
        if (blob[k] != magic[k])
            return bad(d, SL_PCHECK_MAGIC, 2, "program magic is not SLPG", 0, 0, 0);
    version = sl_get_u16(blob + 4);
    if (version < SL_PROGRAM_FORMAT_MIN_VERSION || version > SL_PROGRAM_FORMAT_VERSION)
        return sl_diag_set_rule(d, SL_ERR_BAD_PROGRAM, SL_PCHECK_VERSION, 1, version,
                                "program format v", 1, version, ", firmware reads v1, v2");
    total = sl_get_u32(blob + 8);
    if (total != n)
        return bad(d, SL_PCHECK_SIZE, 1, "total_size ", 1, total, " != bytes received");
    if (total & 3u)
        return bad(d, SL_PCHECK_SIZE, 2, "total_size ", 1, total, " not a multiple of 4");
    crc = sl_crc32_update(0, blob, 12);
    crc = sl_crc32_update(crc, blob + 16, total - 16u);
    if (crc != sl_get_u32(blob + 12))
        return bad(d, SL_PCHECK_CRC, 1, "program CRC-32 mismatch", 0, 0, 0);
    if (blob[6] != SL_PROFILE_MCU)
        return bad(d, SL_PCHECK_PROFILE, 1, "profile id ", 1, blob[6], ", board runs mcu (1)");
    p->version = version;
    p->graded_input = version >= 2 && (blob[7] & SL_PROGRAM_FLAG_GRADED_INPUT);
    if ((version == 1 ? blob[7] : (blob[7] & ~SL_PROGRAM_FLAG_GRADED_INPUT)) != 0 ||
        (!p->graded_input && !zero_bytes(blob + 28, 4)))
        return bad(d, SL_PCHECK_PROFILE, 2, "header flags/reserved not 0", 0, 0, 0);
    p->input_scale_bits = p->graded_input ? sl_get_u32(blob + 28) : 0u;
    if (p->graded_input && !scale_ok(p->input_scale_bits))
        return bad(d, SL_PCHECK_PROFILE, 7, "input_scale not a finite float32 > 0", 0, 0, 0);
    if (!name_ok(blob + NAME_OFFSET))
        return bad(d, SL_PCHECK_PROFILE, 3, "name is not NUL-padded ASCII", 0, 0, 0);
    if (total > SL_MAX_PROGRAM_BYTES)
        return too_large(d, SL_PCHECK_RANGE, 1, SL_MAX_PROGRAM_BYTES, "program of ", 1, total,
                         " bytes is too large");
    p->num_layers = sl_get_u16(blob + 16);
    p->num_inputs = sl_get_u16(blob + 18);
    p->num_outputs = sl_get_u16(blob + 20);
    p->num_steps = sl_get_u16(blob + 22);
    if (p->num_layers == 0)
        return bad(d, SL_PCHECK_RECORD, 1, "program has no layers", 0, 0, 0);
    if (p->num_layers > SL_MAX_LAYERS)
        return too_large(d, SL_PCHECK_RECORD, 2, SL_MAX_LAYERS, "program has ", 1, p->num_layers,
                         " layers, too many");
    if (p->num_steps == 0)
        return bad(d, SL_PCHECK_RANGE, 2, "num_steps is 0", 0, 0, 0);
    if (sl_get_u32(blob + 24) == 0)
        return bad(d, SL_PCHECK_RANGE, 3, "dt_ns is 0", 0, 0, 0);
    off = SL_PROGRAM_HEADER_BYTES;
    p->total_neurons = 0;
    for (k = 0; k < p->num_layers; k++) {
        sl_status st = parse_layer(blob, &off, total, version, k, p->total_neurons, &p->layers[k], d);
        if (st != SL_OK)
            return st;
        p->total_neurons += p->layers[k].num_neurons;
        if (p->layers[k].fan_in != (k == 0 ? p->num_inputs : p->layers[k - 1].num_neurons))
            return bad(d, SL_PCHECK_CHAIN, 1, "layer ", 1, k, ": fan_in does not match its input");
    }
    if (p->layers[p->num_layers - 1].num_neurons != p->num_outputs)
        return bad(d, SL_PCHECK_CHAIN, 2, "last layer size != num_outputs", 0, 0, 0);
    if (off != total)
        return bad(d, SL_PCHECK_CHAIN, 3, "records do not end at total_size", 0, 0, 0);
    for (k = 0; k < p->num_layers; k++) /* a pooling record pools a neuron layer's spikes */
        if (p->layers[k].record_type == SL_RECORD_POOL &&
            (k == 0 || k + 1u == p->num_layers || p->layers[k - 1].record_type == SL_RECORD_POOL))
            return bad(d, SL_PCHECK_CHAIN, 5, "layer ", 1, k, ": pooling record first/last/after a pool");
    return SL_OK;
}
