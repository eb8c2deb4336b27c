/* common.h: types, status codes and helpers shared by every csrc/ module.
 *
 * Conventions (every module follows them):
 *  - one module = one <name>.h + <name>.c, every exported symbol is dnnz_<name>_*;
 *  - exported functions return an int status: DNNZ_OK (0) or one of the DNNZ_E_* codes below,
 *    and write results through pointer arguments; callers allocate every buffer
 *    (sizes come from *_bound() helpers), kernels never allocate on the hot path;
 *  - every length, offset and code that comes from input data is validated before use;
 *    assert() is only for internal invariants;
 *  - the part of a header that Python sees is wrapped in cffi:begin / cffi:end markers and holds
 *    only sized ints, plain structs and prototypes (cffi parses it; csrc/build_ffi.py collects it).
 */
#ifndef DNNZ_COMMON_H
#define DNNZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* cffi:begin */
/* Status codes. The numbers are part of the ABI: never renumber or reuse one. */
enum dnnz_status {
    DNNZ_OK = 0,
    DNNZ_E_ARGUMENT = 1,      /* an argument is out of its documented range */
    DNNZ_E_ALLOC = 2,         /* memory allocation failed */
    DNNZ_E_DST_TOO_SMALL = 3, /* the caller's output buffer is smaller than needed */
    DNNZ_E_TRUNCATED = 4,     /* the input ends before the data it announces */
    DNNZ_E_CORRUPT = 5,       /* the input is inconsistent (bad code, bad index, bad offset...) */
    DNNZ_E_TRAILING = 6,      /* the input holds data after its announced end (non-zero padding included) */
    DNNZ_E_OVERSUBSCRIBED = 7,/* Huffman code lengths that no prefix code can have (Kraft sum > 1) */
    DNNZ_E_INCOMPLETE = 8,    /* Huffman code lengths that leave codes unassigned (Kraft sum < 1) */
    DNNZ_E_CODE_TOO_LONG = 9, /* a code length above the allowed maximum */
    DNNZ_E_LIMIT = 10,        /* a size above a documented limit */
    DNNZ_E_UNSUPPORTED = 11   /* a feature (CPU path, encoding variant) this build does not have */
};

/* Human-readable name of a status code (static string; never NULL). */
const char *dnnz_status_name(int status);
/* The library version, the same string as pydnnz.__version__. */
const char *dnnz_version(void);
/* cffi:end */

#if defined(__GNUC__)
#define DNNZ_LIKELY(x) __builtin_expect(!!(x), 1)
#define DNNZ_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define DNNZ_INLINE static inline __attribute__((always_inline))
#else
#define DNNZ_LIKELY(x) (x)
#define DNNZ_UNLIKELY(x) (x)
#define DNNZ_INLINE static inline
#endif

/* Forward an error status up the call chain. */
#define DNNZ_CHECK(expr)                    \
    do {                                    \
        int dnnz_check_status_ = (expr);    \
        if (dnnz_check_status_ != DNNZ_OK)  \
            return dnnz_check_status_;      \
    } while (0)

#endif /* DNNZ_COMMON_H */
