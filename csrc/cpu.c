/* cpu.c: CPU-path detection and the worker pool (see cpu.h). */
#include "cpu.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if (defined(__x86_64__) || defined(__i386__)) && !defined(DNNZ_NO_SIMD) /* DNNZ_NO_SIMD: portable-only build (checks the non-x86 code) */
#define DNNZ_X86 1
#else
#define DNNZ_X86 0
#endif

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_best_path = DNNZ_CPU_SCALAR;
static int g_path = DNNZ_CPU_SCALAR; /* -1: a forced path is unavailable */
static int g_threads = 1;

int dnnz_cpu_supported(int path)
{
    switch (path) {
    case DNNZ_CPU_SCALAR:
        return 1;
#if DNNZ_X86
    case DNNZ_CPU_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case DNNZ_CPU_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("fma");
#endif
    default:
        return 0;
    }
}

static void pool_reset_after_fork(void);

static void init_once(void)
{
    g_best_path = dnnz_cpu_supported(DNNZ_CPU_AVX512) ? DNNZ_CPU_AVX512
                  : dnnz_cpu_supported(DNNZ_CPU_AVX2) ? DNNZ_CPU_AVX2 : DNNZ_CPU_SCALAR;
    g_path = g_best_path;
    const char *forced = getenv("DNNZ_CPU_PATH");
    if (forced && *forced) {
        int want = !strcmp(forced, "avx512") ? DNNZ_CPU_AVX512
                   : !strcmp(forced, "avx2") ? DNNZ_CPU_AVX2
                   : !strcmp(forced, "scalar") ? DNNZ_CPU_SCALAR : -1;
        g_path = (want >= 0 && dnnz_cpu_supported(want)) ? want : -1;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    const char *env = getenv("DNNZ_NUM_THREADS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == '\0' && v >= 1)
            n = v;
    }
    g_threads = n < 1 ? 1 : n > DNNZ_CPU_MAX_THREADS ? DNNZ_CPU_MAX_THREADS : (int)n;
    pthread_atfork(NULL, NULL, pool_reset_after_fork);
}

int dnnz_cpu_get_path(void)
{
    pthread_once(&g_once, init_once);
    return __atomic_load_n(&g_path, __ATOMIC_RELAXED);
}

int dnnz_cpu_set_path(int path)
{
    pthread_once(&g_once, init_once);
    if (path == -1) {
        __atomic_store_n(&g_path, g_best_path, __ATOMIC_RELAXED);
        return DNNZ_OK;
    }
    if (path < DNNZ_CPU_SCALAR || path > DNNZ_CPU_AVX512)
        return DNNZ_E_ARGUMENT;
    if (!dnnz_cpu_supported(path))
        return DNNZ_E_UNSUPPORTED;
    __atomic_store_n(&g_path, path, __ATOMIC_RELAXED);
    return DNNZ_OK;
}

int dnnz_cpu_get_threads(void)
{
    pthread_once(&g_once, init_once);
    return __atomic_load_n(&g_threads, __ATOMIC_RELAXED);
}

int dnnz_cpu_set_threads(int n)
{
    pthread_once(&g_once, init_once);
    if (n < 1 || n > DNNZ_CPU_MAX_THREADS)
        return DNNZ_E_ARGUMENT;
    __atomic_store_n(&g_threads, n, __ATOMIC_RELAXED);
    return DNNZ_OK;
}

/* ---- pool ----
 * Workers sleep on `start` until `generation` changes, take tasks from the shared counter, and
 * report on `done`. The caller is worker 0. Workers are created on demand and never exit; a job
 * uses only as many as dnnz_cpu_get_threads() allows. */
static pthread_mutex_t g_job_lock = PTHREAD_MUTEX_INITIALIZER; /* one job at a time */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_start = PTHREAD_COND_INITIALIZER;
static pthread_cond_t g_done = PTHREAD_COND_INITIALIZER;
static int g_started;        /* workers created (not counting callers) */
static uint64_t g_generation;
static int g_participants;   /* workers 1..g_participants-1 take part in the current job */
static int g_finished;       /* workers that finished the current job */
static dnnz_cpu_task_fn g_fn;
static void *g_ctx;
static int64_t g_n_tasks;
static int64_t g_next_task;
/* generation current when each worker was created: a worker that starts running after the job
 * that created it was announced must still take part in that job */
static uint64_t g_birth_generation[DNNZ_CPU_MAX_THREADS + 1];

static void pool_reset_after_fork(void)
{
    /* The child has only the forking thread: forget the parent's workers. */
    pthread_mutex_init(&g_job_lock, NULL);
    pthread_mutex_init(&g_mu, NULL);
    pthread_cond_init(&g_start, NULL);
    pthread_cond_init(&g_done, NULL);
    g_started = 0;
    g_participants = 0;
}

static void run_tasks(int worker)
{
    for (;;) {
        int64_t t = __atomic_fetch_add(&g_next_task, 1, __ATOMIC_RELAXED);
        if (t >= g_n_tasks)
            break;
        g_fn(g_ctx, t, worker);
    }
}

static void *worker_main(void *arg)
{
    int id = (int)(intptr_t)arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&g_mu);
    seen = g_birth_generation[id];
    for (;;) {
        while (g_generation == seen)
            pthread_cond_wait(&g_start, &g_mu);
        seen = g_generation;
        if (id >= g_participants)
            continue;
        pthread_mutex_unlock(&g_mu);
        run_tasks(id);
        pthread_mutex_lock(&g_mu);
        g_finished++;
        pthread_cond_signal(&g_done);
    }
    return NULL;
}

void dnnz_cpu_parallel(int64_t n_tasks, dnnz_cpu_task_fn fn, void *ctx)
{
    if (n_tasks <= 0)
        return;
    int threads = dnnz_cpu_get_threads();
    if (threads > n_tasks)
        threads = (int)n_tasks;
    pthread_mutex_lock(&g_job_lock);
    if (threads > 1) {
        pthread_mutex_lock(&g_mu);
        while (g_started < threads - 1) {
            pthread_t th;
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            g_birth_generation[g_started + 1] = g_generation;
            int rc = pthread_create(&th, &attr, worker_main, (void *)(intptr_t)(g_started + 1));
            pthread_attr_destroy(&attr);
            if (rc != 0)
                break; /* run with the workers we have */
            g_started++;
        }
        threads = g_started + 1 < threads ? g_started + 1 : threads;
        pthread_mutex_unlock(&g_mu);
    }
    g_fn = fn;
    g_ctx = ctx;
    g_n_tasks = n_tasks;
    __atomic_store_n(&g_next_task, 0, __ATOMIC_RELAXED);
    if (threads <= 1) {
        run_tasks(0);
        pthread_mutex_unlock(&g_job_lock);
        return;
    }
    pthread_mutex_lock(&g_mu);
    g_participants = threads;
    g_finished = 0;
    g_generation++;
    pthread_cond_broadcast(&g_start);
    pthread_mutex_unlock(&g_mu);
    run_tasks(0);
    pthread_mutex_lock(&g_mu);
    while (g_finished < threads - 1)
        pthread_cond_wait(&g_done, &g_mu);
    pthread_mutex_unlock(&g_mu);
    pthread_mutex_unlock(&g_job_lock);
}
