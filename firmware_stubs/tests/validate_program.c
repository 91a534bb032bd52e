/* tests/validate_program.c: runs the firmware's program reader (sl_program_parse) on a batch of
 * blobs, for the shared validation corpus (tests/program_corpus.py, tests/test_program_corpus.py).
 *
 *   validate_program < batch
 *
 * batch: for each blob, its length as u32 little-endian, then its bytes. Prints first
 *   limits max_program_bytes=N max_layers=N max_neurons=N max_neurons_total=N max_inputs=N max_shift=N
 * (this build's sl_config.h), then one line per blob, in order:
 *   <index> status=<sl_status> detail=<check number> value=<u32> msg=<message>
 * Each blob is copied into a heap buffer of exactly its length, so that ASan (`make
 * validate-program` builds with ASan+UBSan) reports any read past its end. Exit status 0 unless
 * the batch is malformed or memory runs out. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "sl_diag.h"
#include "sl_le.h"
#include "sl_program.h"

int main(void)
{
    static sl_program p;
    uint8_t head[4];
    unsigned long index = 0;

    printf("limits max_program_bytes=%lu max_layers=%d max_neurons=%d max_neurons_total=%d max_inputs=%d "
           "max_shift=%d\n", (unsigned long)SL_MAX_PROGRAM_BYTES, SL_MAX_LAYERS, SL_MAX_NEURONS,
           SL_MAX_NEURONS_TOTAL, SL_MAX_INPUTS,
           SL_MAX_SHIFT);
    while (fread(head, 1, 4, stdin) == 4) {
        uint32_t n = sl_get_u32(head);
        uint8_t *blob = malloc(n ? n : 1u);
        sl_diag d;
        sl_status st;
        if (!blob) {
            fprintf(stderr, "validate_program: out of memory for a %lu-byte blob\n",
                    (unsigned long)n);
            return 2;
        }
        if (fread(blob, 1, n, stdin) != n) {
            fprintf(stderr, "validate_program: blob %lu truncated\n", index);
            free(blob);
            return 2;
        }
        sl_diag_clear(&d);
        st = sl_program_parse(blob, n, &p, &d);
        printf("%lu status=%d detail=%u value=%lu msg=%s\n", index, (int)st, (unsigned)d.detail,
               (unsigned long)d.value, d.msg);
        free(blob);
        index++;
    }
    return 0;
}
