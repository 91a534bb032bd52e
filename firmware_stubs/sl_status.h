/* sl_status.h: the status every fallible firmware function returns, and the protocol's error
 * codes (docs/protocol.md, "Error codes"). */
#ifndef SL_STATUS_H
#define SL_STATUS_H

#if defined(__GNUC__) || defined(__clang__)
#define SL_MUST_CHECK __attribute__((warn_unused_result))
#else
#define SL_MUST_CHECK
#endif

/* Values 1..13 are the wire error codes; the rest never leave the board. */
typedef enum {
    SL_OK = 0,
    SL_ERR_BAD_CRC = 1,
    SL_ERR_BAD_FRAMING = 2,
    SL_ERR_UNKNOWN_TYPE = 3,
    SL_ERR_BAD_LENGTH = 4,
    SL_ERR_VERSION_MISMATCH = 5,
    SL_ERR_OVERFLOW = 6,
    SL_ERR_PROGRAM_TOO_LARGE = 7,
    SL_ERR_CHECKSUM_MISMATCH = 8,
    SL_ERR_BAD_OFFSET = 9,
    SL_ERR_BAD_PROGRAM = 10,
    SL_ERR_NOT_LOADED = 11,
    SL_ERR_BAD_STEP = 12,
    SL_ERR_BAD_INPUT = 13,
    SL_ERR_NO_SPACE = 100, /* an output buffer is too small (a bug or a too-small build) */
    SL_ERR_IO = 101        /* the output stream failed */
} sl_status;

#endif
