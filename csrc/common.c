/* common.c: status names and the version string (see common.h). */
#include "common.h"

#ifndef DNNZ_VERSION_STRING
#error "DNNZ_VERSION_STRING must be defined by the build (csrc/build_ffi.py reads pydnnz/_version.py)"
#endif

const char *dnnz_status_name(int status)
{
    switch (status) {
    case DNNZ_OK: return "ok";
    case DNNZ_E_ARGUMENT: return "invalid argument";
    case DNNZ_E_ALLOC: return "out of memory";
    case DNNZ_E_DST_TOO_SMALL: return "destination buffer too small";
    case DNNZ_E_TRUNCATED: return "input is truncated";
    case DNNZ_E_CORRUPT: return "input is corrupt";
    case DNNZ_E_TRAILING: return "unexpected data after the end of the stream";
    case DNNZ_E_OVERSUBSCRIBED: return "over-subscribed code lengths (Kraft sum above 1)";
    case DNNZ_E_INCOMPLETE: return "incomplete code lengths (Kraft sum below 1)";
    case DNNZ_E_CODE_TOO_LONG: return "code length above the maximum";
    case DNNZ_E_LIMIT: return "size above a documented limit";
    case DNNZ_E_UNSUPPORTED: return "not supported by this build";
    default: return "unknown status";
    }
}

const char *dnnz_version(void)
{
    return DNNZ_VERSION_STRING;
}
