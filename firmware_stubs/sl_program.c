/* sl_program.c: one-pass validation of a program blob (docs/program_format.md, "Validation").
 *
 * The checks run in the order of that table, and the first failing one is reported with its rule
 * id ("check.sub": detail = the check number, SL_PCHECK_*; the message starts with the id), so that
 * the board and the Python reader (hw/program.py) name the same rule for the same blob
 * (tests/test_program_corpus.py). */
#include "sl_program.h"

#include "sl_crc.h"
#include "sl_le.h"

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

/* Rules 6.3 .. 8.11 for layer k, whose record starts at *off; *off moves past it. */
static sl_status parse_layer(const uint8_t *blob, uint32_t *off, uint32_t total, uint16_t k,
                             sl_layer *L, sl_diag *d)
{
    const uint8_t *h = blob + *off;
    uint32_t N, M, expect, rec_size, start = *off, end, i;

    if (total - *off < SL_LAYER_HEADER_BYTES)
        return bad(d, SL_PCHECK_RECORD, 3, "layer ", 1, k, ": record header past total_size");
    if (h[0] != 1)
        return bad(d, SL_PCHECK_RECORD, 4, "layer ", 1, k, ": unknown record_type");
    if (h[1] < SL_NEURON_LEAKY || h[1] > SL_NEURON_RLEAKY_ELEMENTWISE)
        return bad(d, SL_PCHECK_RECORD, 5, "layer ", 1, k, ": unknown neuron_type");
    if (h[2] > SL_RESET_ZERO)
        return bad(d, SL_PCHECK_RECORD, 6, "layer ", 1, k, ": unknown reset_mode");
    if (h[9] != 0)
        return bad(d, SL_PCHECK_PROFILE, 4, "layer ", 1, k, ": max_spikes not 0");
    if (h[10] != 0 || h[11] != 0)
        return bad(d, SL_PCHECK_PROFILE, 5, "layer ", 1, k, ": reserved bytes not 0");
    L->neuron_type = h[1];
    L->reset_mode = h[2];
    L->w_shift = h[3];
    L->rec_shift = h[8];
    L->fan_in = sl_get_u16(h + 4);
    L->num_neurons = sl_get_u16(h + 6);
    N = L->num_neurons;
    M = L->fan_in;
    if (N == 0 || M == 0)
        return bad(d, SL_PCHECK_RANGE, 4, "layer ", 1, k, ": fan_in or num_neurons is 0");
    if (N > SL_MAX_NEURONS)
        return too_large(d, SL_PCHECK_RANGE, 5, SL_MAX_NEURONS, "layer ", 1, k,
                         ": more neurons than the board has");
    if (M > SL_MAX_INPUTS)
        return too_large(d, SL_PCHECK_RANGE, 6, SL_MAX_INPUTS, "layer ", 1, k,
                         ": fan_in above the board's limit");
    if (L->w_shift > SL_MAX_SHIFT)
        return bad(d, SL_PCHECK_RANGE, 7, "layer ", 1, k, ": w_shift too large");
    if (L->rec_shift > SL_MAX_SHIFT || (L->neuron_type != SL_NEURON_RLEAKY_DENSE && L->rec_shift))
        return bad(d, SL_PCHECK_RANGE, 8, "layer ", 1, k, ": bad rec_shift");
    rec_size = sl_get_u32(h + 12);
    expect = SL_LAYER_HEADER_BYTES + pad4(N * M) + 4u * N + 4u * N + pad4(2u * N);
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
    *off = start + SL_LAYER_HEADER_BYTES;
    /* The sizes were checked above, so take() can only fail on non-zero padding. */
    L->weights = take(blob, off, N * M, end);
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
    if (version != SL_PROGRAM_FORMAT_VERSION)
        return sl_diag_set_rule(d, SL_ERR_BAD_PROGRAM, SL_PCHECK_VERSION, 1, version,
                                "program format v", 1, version, ", firmware reads v1");
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
    if (blob[7] != 0 || !zero_bytes(blob + 28, 4))
        return bad(d, SL_PCHECK_PROFILE, 2, "header flags/reserved not 0", 0, 0, 0);
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
    for (k = 0; k < p->num_layers; k++) {
        sl_status st = parse_layer(blob, &off, total, k, &p->layers[k], d);
        if (st != SL_OK)
            return st;
        if (p->layers[k].fan_in != (k == 0 ? p->num_inputs : p->layers[k - 1].num_neurons))
            return bad(d, SL_PCHECK_CHAIN, 1, "layer ", 1, k, ": fan_in does not match its input");
    }
    if (p->layers[p->num_layers - 1].num_neurons != p->num_outputs)
        return bad(d, SL_PCHECK_CHAIN, 2, "last layer size != num_outputs", 0, 0, 0);
    if (off != total)
        return bad(d, SL_PCHECK_CHAIN, 3, "records do not end at total_size", 0, 0, 0);
    return SL_OK;
}
