/* tests/test_respond_fault.c: the duplicate cache when a response cannot be encoded.
 *
 * The dispatcher's encoder never fails in a correct build (payloads are capped at SL_MAX_PAYLOAD
 * and the cache buffer is sized for them), so this test injects the failure: it compiles
 * sl_proto.c into this file with sl_frame_encode renamed to an encoder that, when armed, scribbles
 * over its output buffer (as a real encoder does when it runs out of space half-way) and fails.
 * Checked: the board then answers with an ERROR (OVERFLOW, detail 2) instead of nothing, never
 * replays a half-written cache, and answers later requests and retransmissions correctly. Built
 * with ASan+UBSan by `make test`. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "board_output.h"
#include "harness.h"
#include "sl_frame.h"

static int g_fail_encodes; /* fail this many of the next encodes */

static sl_status faulty_encode(uint8_t version, uint8_t type, uint16_t seq, const uint8_t *payload,
                               size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
    if (g_fail_encodes > 0) {
        g_fail_encodes--;
        memset(out, 0x77, cap < 32 ? cap : 32);
        return SL_ERR_NO_SPACE;
    }
    return sl_frame_encode(version, type, seq, payload, len, out, cap, out_len);
}

#define sl_frame_encode faulty_encode
#include "../sl_proto.c"
#undef sl_frame_encode

typedef struct {
    uint8_t buf[8192];
    size_t len;
} sink_t;

static int sink_write(void *user, const uint8_t *data, size_t n)
{
    sink_t *s = (sink_t *)user;
    if (s->len + n > sizeof s->buf)
        return -1;
    memcpy(s->buf + s->len, data, n);
    s->len += n;
    return 0;
}

static sl_proto g_ctx;
static sink_t g_sink;
static uint8_t g_payloads[4][SL_MAX_WIRE];

/* Send PING(seq, text); decode what the board wrote. Returns the number of intact frames, -1 when
 * the output holds anything that is not an intact frame. */
static int ping(uint16_t seq, const char *text, sl_frame *out)
{
    uint8_t wire[128];
    size_t n = 0;
    if (sl_frame_encode(SL_PROTOCOL_VERSION, SL_MSG_PING, seq, (const uint8_t *)text, strlen(text), wire,
                        sizeof wire, &n) != SL_OK)
        return -3;
    g_sink.len = 0;
    if (sl_proto_feed(&g_ctx, wire, n) != SL_OK)
        return -2;
    return decode_board_output(g_sink.buf, g_sink.len, out, g_payloads, 4);
}

static int is_pong(const sl_frame *f, uint16_t seq, const char *text)
{
    return f->type == 0x82 && f->seq == seq && f->len == strlen(text) &&
           memcmp(f->payload, text, f->len) == 0;
}

static void board_init(void)
{
    sl_ostream out;
    out.write = sink_write;
    out.user = &g_sink;
    g_fail_encodes = 0;
    sl_proto_init(&g_ctx, out, 1);
}

static void test_failed_encode_answers_error_and_keeps_cache_sane(void)
{
    sl_frame r[4];
    uint8_t err_bytes[128];
    size_t err_len;
    board_init();
    CHECK(ping(1, "abc", r) == 1 && is_pong(&r[0], 1, "abc"));
    /* The PONG for seq 2 cannot be encoded: an ERROR for seq 2 comes instead. */
    g_fail_encodes = 1;
    CHECK(ping(2, "xyz", r) == 1 && r[0].type == SL_MSG_ERROR && r[0].seq == 2 &&
          r[0].payload[0] == SL_ERR_OVERFLOW && r[0].payload[1] == 2);
    err_len = g_sink.len;
    memcpy(err_bytes, g_sink.buf, err_len);
    /* seq 1 again is not the last request any more: executed again, a clean PONG. */
    CHECK(ping(1, "abc", r) == 1 && is_pong(&r[0], 1, "abc"));
    CHECK(ping(2, "xyz", r) == 1 && is_pong(&r[0], 2, "xyz"));
    /* A retransmission right after the failure gets the same ERROR bytes (the cached answer). */
    g_fail_encodes = 1;
    CHECK(ping(3, "xyz", r) == 1 && r[0].type == SL_MSG_ERROR && r[0].seq == 3);
    err_len = g_sink.len;
    memcpy(err_bytes, g_sink.buf, err_len);
    CHECK(ping(3, "xyz", r) == 1 && g_sink.len == err_len &&
          memcmp(g_sink.buf, err_bytes, err_len) == 0);
}

static void test_retransmission_after_failed_encode_is_not_garbage(void)
{
    /* The request before the failure, retransmitted right after it: the board must not replay
     * the cache the failed encode scribbled over. */
    sl_frame r[4];
    board_init();
    CHECK(ping(1, "abc", r) == 1 && is_pong(&r[0], 1, "abc"));
    g_fail_encodes = 1;
    CHECK(ping(2, "xyz", r) == 1);
    CHECK(ping(1, "abc", r) == 1 && is_pong(&r[0], 1, "abc"));
    /* Both the response and the ERROR fail: nothing is sent, the cache is dropped, and the next
     * frames (retransmissions included) are answered correctly. */
    CHECK(ping(1, "abc", r) == 1 && is_pong(&r[0], 1, "abc"));
    g_fail_encodes = 2;
    CHECK_EQ(ping(4, "lost", r), 0);
    CHECK(ping(1, "abc", r) == 1 && is_pong(&r[0], 1, "abc"));
    CHECK(ping(4, "lost", r) == 1 && is_pong(&r[0], 4, "lost"));
    CHECK(ping(5, "next", r) == 1 && is_pong(&r[0], 5, "next"));
}

int main(void)
{
    RUN_TEST(test_failed_encode_answers_error_and_keeps_cache_sane);
    RUN_TEST(test_retransmission_after_failed_encode_is_not_garbage);
    printf("%d checks, %d failed\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
