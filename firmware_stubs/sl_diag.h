/* sl_diag.h: the first error of an operation, with a short human-readable message for the host
 * (it travels in the ERROR frame, docs/protocol.md). */
#ifndef SL_DIAG_H
#define SL_DIAG_H

#include <stdint.h>

#include "sl_status.h"

#define SL_DIAG_MSG_MAX 48

typedef struct {
    sl_status code;
    uint8_t detail;
    uint32_t value;
    char msg[SL_DIAG_MSG_MAX + 1];
    uint8_t msg_len;
} sl_diag;

void sl_diag_clear(sl_diag *d);
/* Keep the first error only; returns code. The message is built from up to three pieces:
 * text a, the unsigned number n (omitted when has_n is 0), text b. */
sl_status sl_diag_set(sl_diag *d, sl_status code, uint8_t detail, uint32_t value, const char *a,
                      int has_n, uint32_t n, const char *b);
/* The same for a numbered rule "check.sub" (docs/program_format.md "Validation"): detail = check,
 * and the message starts with the rule id, e.g. "6.7 layer 0: record_size ...". */
sl_status sl_diag_set_rule(sl_diag *d, sl_status code, uint8_t check, uint8_t sub, uint32_t value,
                           const char *a, int has_n, uint32_t n, const char *b);

#endif
