/* sl_diag.c: building diagnostic messages without printf (which many MCU C libraries lack). */
#include "sl_diag.h"

static void put_text(sl_diag *d, const char *s)
{
    while (s && *s && d->msg_len < SL_DIAG_MSG_MAX)
        d->msg[d->msg_len++] = *s++;
    d->msg[d->msg_len] = '\0';
}

static void put_uint(sl_diag *d, uint32_t n)
{
    char digits[10];
    int k = 0;
    do {
        digits[k++] = (char)('0' + n % 10u);
        n /= 10u;
    } while (n && k < 10);
    while (k > 0 && d->msg_len < SL_DIAG_MSG_MAX)
        d->msg[d->msg_len++] = digits[--k];
    d->msg[d->msg_len] = '\0';
}

void sl_diag_clear(sl_diag *d)
{
    d->code = SL_OK;
    d->detail = 0;
    d->value = 0;
    d->msg_len = 0;
    d->msg[0] = '\0';
}

/* Start a diagnostic: 0 when one is already kept (the first error wins), else 1 with the fields set. */
static int begin(sl_diag *d, sl_status code, uint8_t detail, uint32_t value)
{
    if (d->code != SL_OK)
        return 0;
    d->code = code;
    d->detail = detail;
    d->value = value;
    d->msg_len = 0;
    return 1;
}

static void put_message(sl_diag *d, const char *a, int has_n, uint32_t n, const char *b)
{
    put_text(d, a);
    if (has_n)
        put_uint(d, n);
    put_text(d, b);
}

sl_status sl_diag_set(sl_diag *d, sl_status code, uint8_t detail, uint32_t value, const char *a,
                      int has_n, uint32_t n, const char *b)
{
    if (!begin(d, code, detail, value))
        return d->code;
    put_message(d, a, has_n, n, b);
    return code;
}

sl_status sl_diag_set_rule(sl_diag *d, sl_status code, uint8_t check, uint8_t sub, uint32_t value,
                           const char *a, int has_n, uint32_t n, const char *b)
{
    if (!begin(d, code, check, value))
        return d->code;
    put_uint(d, check);
    put_text(d, ".");
    put_uint(d, sub);
    put_text(d, " ");
    put_message(d, a, has_n, n, b);
    return code;
}
