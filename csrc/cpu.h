/* cpu.h: runtime CPU-path dispatch and the persistent worker-thread pool used by the kernels.
 *
 * Paths: every kernel exists as a portable scalar `_ref` version, an AVX2+FMA version and an
 * AVX-512 (F, BW, DQ, VL, VBMI) version, each compiled with a per-function target attribute so the
 * library builds with portable flags and picks the best supported path at run time
 * (__builtin_cpu_supports). DNNZ_CPU_PATH=avx512|avx2|scalar forces one (read once, at first use);
 * a forced path this CPU lacks leaves the library in an error state that every kernel reports as
 * DNNZ_E_UNSUPPORTED until dnnz_cpu_set_path() picks a valid one.
 *
 * Threads: DNNZ_NUM_THREADS (or the number of online CPUs) workers, the calling thread included.
 * A parallel job is a number of independent tasks; each task is run by exactly one thread and
 * writes outputs no other task writes, so results never depend on the thread count.
 */
#ifndef DNNZ_CPU_H
#define DNNZ_CPU_H

#include "common.h"

/* cffi:begin */
enum dnnz_cpu_path_id {
    DNNZ_CPU_SCALAR = 0,
    DNNZ_CPU_AVX2 = 1,
    DNNZ_CPU_AVX512 = 2
};

/* 1 when this CPU and build can run `path`, else 0. */
int dnnz_cpu_supported(int path);
/* The active path (a DNNZ_CPU_* value), or -1 when DNNZ_CPU_PATH forced an unavailable one. */
int dnnz_cpu_get_path(void);
/* Force a path: DNNZ_E_UNSUPPORTED when the CPU lacks it, DNNZ_E_ARGUMENT for an unknown id;
 * -1 restores the automatic choice (the best supported path). */
int dnnz_cpu_set_path(int path);
/* Number of threads parallel jobs use (the calling thread included), 1..1024. */
int dnnz_cpu_get_threads(void);
int dnnz_cpu_set_threads(int n);
/* cffi:end */

#define DNNZ_CPU_MAX_THREADS 1024

/* A task of a parallel job; `worker` is 0..threads-1 (for per-thread scratch, never for results). */
typedef void (*dnnz_cpu_task_fn)(void *ctx, int64_t task, int worker);

/* Run tasks 0..n_tasks-1 of `fn` on the pool and return when all are done. Jobs from several
 * calling threads are serialized. */
void dnnz_cpu_parallel(int64_t n_tasks, dnnz_cpu_task_fn fn, void *ctx);

#endif /* DNNZ_CPU_H */
