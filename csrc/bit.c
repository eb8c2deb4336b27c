/* bit.c: the out-of-line part of the bit streams (the hot functions are inline in bit.h). */
#include "bit.h"

uint64_t dnnz_bit_bytes(uint64_t n_bits)
{
    return (n_bits >> 3) + ((n_bits & 7) != 0);
}
