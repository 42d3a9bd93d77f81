/* fuzz_pickle.c - libFuzzer target: see fuzz_bodies.h (mw_fuzz_pickle). Built and run by fuzz/run.sh. */
#include "fuzz_bodies.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (mw_fuzz_pickle(data, size) > 0) __builtin_trap(); /* accepted something inconsistent */
    return 0;
}
