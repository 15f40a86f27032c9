// gemm_bf16.c - see gemm_bf16.h. The conversion over threads, the CPU check, and the bf16
// matmul over oneDNN's matmul primitive (libdnnl-dev, oneDNN 2.x C API), which runs on AMX tiles where the CPU
// has them and on AVX512-BF16 otherwise.
//
// Primitives are slow to create (a JIT compile, ~1 ms), so each thread keeps the ones it
// has made, keyed by the product's shape, with their memory objects, in a table of its
// own: no locks, and a primitive runs on the thread that made it. Every oneDNN call is
// checked; a failure is a runtime error (exit 2) naming the call.
#include "gemm_bf16.h"

#include <cpuid.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(GT_NO_CLONES)
#define GT_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GT_HOT
#endif

#define DNNL_CHECK(expr)                                                                                        \
    do {                                                                                                        \
        dnnl_status_t gt_dnnl_st_ = (expr);                                                                     \
        if (gt_dnnl_st_ != dnnl_success)                                                                        \
            gt_fail_at(GT_EXIT_RUNTIME, __FILE__, __LINE__, "a oneDNN (libdnnl) failure in the bf16 matmul",    \
                       "oneDNN call failed (%s): %s", dnnl_status2str(gt_dnnl_st_), #expr);                     \
    } while (0)

int precision_parse(const char *name, Precision *p) {
    if (strcmp(name, "fp32") == 0) *p = PRECISION_FP32;
    else if (strcmp(name, "bf16") == 0) *p = PRECISION_BF16;
    else return 0;
    return 1;
}

const char *precision_name(Precision p) { return p == PRECISION_BF16 ? "bf16" : "fp32"; }

// ---- conversions ----

// Below this many elements one thread converts (as layers.c's PAR_MIN).
#define CONV_PAR_MIN 32768

GT_HOT static void convert_chunk(uint16_t *restrict dst, const float *restrict src, size_t n) {
    bf16_from_f32_n(dst, src, n);
}

void bf16_from_f32_par(uint16_t *dst, const float *src, size_t n) {
    #pragma omp parallel if (n > CONV_PAR_MIN)
    {
        size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
        size_t chunk = ((n + nt - 1) / nt + 31) & ~(size_t)31;
        size_t lo = id * chunk < n ? id * chunk : n, hi = lo + chunk < n ? lo + chunk : n;
        convert_chunk(dst + lo, src + lo, hi - lo);
    }
}

void bf16_from_f32_rows(uint16_t *dst, size_t ldd, const float *src, size_t lds, size_t rows, size_t cols) {
    #pragma omp parallel for schedule(static) if (rows * cols > CONV_PAR_MIN)
    for (size_t r = 0; r < rows; r++) convert_chunk(dst + r * ldd, src + r * lds, cols);
}

// ---- the CPU check ----

static int cpuid_bit(unsigned leaf, unsigned sub, int reg, int bit) {
    unsigned r[4];
    if (!__get_cpuid_count(leaf, sub, &r[0], &r[1], &r[2], &r[3])) return 0;
    return (r[reg] >> bit) & 1;
}
enum { EAX, EBX, ECX, EDX };

int bf16_supported(char *err, size_t errsize) {
    // AVX512-BF16 is CPUID.(7,1):EAX bit 5; __builtin_cpu_supports checks that the OS saves
    // the AVX-512 registers.
    int cpu = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && cpuid_bit(7, 1, EAX, 5);
    if (!cpu) {
        snprintf(err, errsize, "--precision bf16 needs AVX512-BF16 instructions, which this CPU lacks (oneDNN would "
                               "emulate them, slower than fp32); use --precision fp32");
        return 0;
    }
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    if ((isa & dnnl_cpu_isa_avx512_core_bf16) != dnnl_cpu_isa_avx512_core_bf16) {
        const char *cap = getenv("ONEDNN_MAX_CPU_ISA") ? getenv("ONEDNN_MAX_CPU_ISA") : getenv("DNNL_MAX_CPU_ISA");
        snprintf(err, errsize, "--precision bf16 needs AVX512-BF16 instructions, which oneDNN may not use here "
                               "(ONEDNN_MAX_CPU_ISA=%s); use --precision fp32", cap ? cap : "?");
        return 0;
    }
    return 1;
}

const char *bf16_isa(void) {
    char err[256];
    if (!bf16_supported(err, sizeof err)) return "none";
    // AMX-BF16 is CPUID.(7,0):EDX bit 22; oneDNN asks the kernel for the tile state itself
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    if (cpuid_bit(7, 0, EDX, 22) && (isa & dnnl_cpu_isa_avx512_core_amx) == dnnl_cpu_isa_avx512_core_amx)
        return "AMX-BF16";
    return "AVX512-BF16";
}

// ---- the matmul ----

static dnnl_engine_t engine;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static void engine_create(void) { DNNL_CHECK(dnnl_engine_create(&engine, dnnl_cpu, 0)); }

// All 8-byte fields, so no padding: keys are hashed and compared as bytes. sa, sb, sc: the
// batch strides (batch 1: unused, 0).
typedef struct {
    int64_t batch, ta, tb, M, N, K, lda, ldb, ldc, sa, sb, sc, out16, beta1, has_bias, alpha_bits;
} Key;
_Static_assert(sizeof(Key) == 16 * 8, "Key has no padding");

typedef struct {
    Key key;
    int used;
    dnnl_primitive_t prim;
    dnnl_memory_t src, wei, dst, bias, pad;  // made once; their data handles set per call
    size_t pad_bytes;
} Entry;

// One per thread: its primitives (open addressing on the key), its stream and the
// scratchpad its primitives share (they run one at a time on this thread).
typedef struct {
    Entry *slots;
    size_t cap, count;
    dnnl_stream_t stream;
    void *pad;
    size_t pad_cap;
    void *tmp;  // a column piece of C (see gemm_any)
    size_t tmp_cap;
} Cache;
static _Thread_local Cache cache;

static uint64_t key_hash(const Key *k) {
    const unsigned char *b = (const unsigned char *)k;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof *k; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

// A (rows, cols) matrix, or batch of them `stride` elements apart.
static void md_mat(dnnl_memory_desc_t *md, int64_t batch, int64_t rows, int64_t cols, int64_t trans, int64_t ld,
                   int64_t stride, dnnl_data_type_t dt) {
    dnnl_dims_t dims, strides;
    int nd = 0;
    if (batch > 1) dims[nd] = batch, strides[nd++] = stride;
    dims[nd] = rows, strides[nd++] = trans ? 1 : ld;
    dims[nd] = cols, strides[nd++] = trans ? ld : 1;
    DNNL_CHECK(dnnl_memory_desc_init_by_strides(md, nd, dims, dt, strides));
}

static void entry_make(Entry *e, const Key *k, float alpha) {
    dnnl_memory_desc_t a, b, c, bias;
    md_mat(&a, k->batch, k->M, k->K, k->ta, k->lda, k->sa, dnnl_bf16);
    md_mat(&b, k->batch, k->K, k->N, k->tb, k->ldb, k->sb, dnnl_bf16);
    md_mat(&c, k->batch, k->M, k->N, 0, k->ldc, k->sc, k->out16 ? dnnl_bf16 : dnnl_f32);
    md_mat(&bias, 1, 1, k->N, 0, k->N, 0, dnnl_f32);
    dnnl_matmul_desc_t desc;
    DNNL_CHECK(dnnl_matmul_desc_init(&desc, &a, &b, k->has_bias ? &bias : NULL, &c));
    dnnl_primitive_attr_t attr;
    DNNL_CHECK(dnnl_primitive_attr_create(&attr));
    DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    if (alpha != 1.0f) DNNL_CHECK(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha));
    if (k->beta1) {
        dnnl_post_ops_t po;
        DNNL_CHECK(dnnl_post_ops_create(&po));
        DNNL_CHECK(dnnl_post_ops_append_sum(po, 1.0f));
        DNNL_CHECK(dnnl_primitive_attr_set_post_ops(attr, po));
        DNNL_CHECK(dnnl_post_ops_destroy(po));
    }
    dnnl_primitive_desc_t pd;
    DNNL_CHECK(dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL));
    DNNL_CHECK(dnnl_primitive_attr_destroy(attr));
    DNNL_CHECK(dnnl_primitive_create(&e->prim, pd));
    const dnnl_memory_desc_t *pad = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    e->pad_bytes = pad ? dnnl_memory_desc_get_size(pad) : 0;
    DNNL_CHECK(dnnl_memory_create(&e->src, &a, engine, DNNL_MEMORY_NONE));
    DNNL_CHECK(dnnl_memory_create(&e->wei, &b, engine, DNNL_MEMORY_NONE));
    DNNL_CHECK(dnnl_memory_create(&e->dst, &c, engine, DNNL_MEMORY_NONE));
    e->bias = NULL;
    if (k->has_bias) DNNL_CHECK(dnnl_memory_create(&e->bias, &bias, engine, DNNL_MEMORY_NONE));
    e->pad = NULL;
    if (e->pad_bytes) DNNL_CHECK(dnnl_memory_create(&e->pad, pad, engine, DNNL_MEMORY_NONE));
    DNNL_CHECK(dnnl_primitive_desc_destroy(pd));
    e->key = *k;
    e->used = 1;
}

static Entry *lookup(const Key *k, float alpha) {
    Cache *c = &cache;
    if (2 * (c->count + 1) > c->cap) {  // grow (and rehash) at half full
        size_t cap = c->cap ? 2 * c->cap : 64;
        Entry *slots = gt_calloc(cap, sizeof(Entry), "oneDNN primitive table");
        for (size_t i = 0; i < c->cap; i++)
            if (c->slots[i].used) {
                size_t j = key_hash(&c->slots[i].key) & (cap - 1);
                while (slots[j].used) j = (j + 1) & (cap - 1);
                slots[j] = c->slots[i];
            }
        free(c->slots);
        c->slots = slots;
        c->cap = cap;
    }
    size_t j = key_hash(k) & (c->cap - 1);
    while (c->slots[j].used) {
        if (memcmp(&c->slots[j].key, k, sizeof *k) == 0) return &c->slots[j];
        j = (j + 1) & (c->cap - 1);
    }
    entry_make(&c->slots[j], k, alpha);
    c->count++;
    return &c->slots[j];
}

// One single-threaded oneDNN matmul on this thread.
// A growing per-thread buffer of at least `bytes`.
static void *grow(void **buf, size_t *cap, size_t bytes, const char *what) {
    if (bytes > *cap) {
        free(*buf);
        *buf = aligned_alloc(64, (bytes + 63) / 64 * 64);
        if (!*buf) gt_fail(GT_EXIT_RUNTIME, "out of memory for %zu bytes of %s", bytes, what);
        *cap = bytes;
    }
    return *buf;
}

static void run_one(const Key *k, float alpha, const uint16_t *A, const uint16_t *B, void *C, const float *bias) {
    pthread_once(&engine_once, engine_create);
    // oneDNN sizes a primitive for omp_get_max_threads() when it is made; inside this
    // implicit task that is 1, and the setting ends with the task.
    omp_set_num_threads(1);
    Cache *c = &cache;
    Entry *e = lookup(k, alpha);
    if (!c->stream) DNNL_CHECK(dnnl_stream_create(&c->stream, engine, dnnl_stream_default_flags));
    grow(&c->pad, &c->pad_cap, e->pad_bytes, "oneDNN scratchpad");
    DNNL_CHECK(dnnl_memory_set_data_handle(e->src, (void *)A));
    DNNL_CHECK(dnnl_memory_set_data_handle(e->wei, (void *)B));
    DNNL_CHECK(dnnl_memory_set_data_handle(e->dst, C));
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, e->src}, {DNNL_ARG_WEIGHTS, e->wei}, {DNNL_ARG_DST, e->dst}};
    int n = 3;
    if (e->bias) {
        DNNL_CHECK(dnnl_memory_set_data_handle(e->bias, (void *)bias));
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, e->bias};
    }
    if (e->pad) {
        DNNL_CHECK(dnnl_memory_set_data_handle(e->pad, c->pad));
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, e->pad};
    }
    DNNL_CHECK(dnnl_primitive_execute(e->prim, c->stream, n, args));
    DNNL_CHECK(dnnl_stream_wait(c->stream));
}

// The pieces of a product, a function of the shape alone. oneDNN's fast kernels (brgemm)
// take only dense matrices (leading dimension = width), so:
// - a batch is cut into runs of whole matrices;
// - a product wider than tall, with op(B) given transposed, into columns of C: each piece
//   packs its own rows of B, and writes a dense temporary copied into C (gemm_any);
// - otherwise into rows of C: each piece repacks all of op(B), so there are at most
//   1 + |A| / |B| pieces (the repacking costs at most one more pass over A): a product
//   whose B is the larger operand (the tied head's backward) stays one call.
// More pieces for more work, each at least 64 rows or columns (a multiple of 32) or 1 matrix.
static int pieces(int batch, int tb, int M, int N, int K, int *by, int *width) {
    *by = batch > 1 ? 2 : N > M && tb;  // 2: the batch, 1: columns, 0: rows
    int len = *by == 2 ? batch : *by ? N : M, min = *by == 2 ? 1 : 64;
    double work = (double)batch * M * N * K;
    int p = work >= 67108864.0 ? 8 : work >= 16777216.0 ? 4 : work >= 4194304.0 ? 2 : 1;
    if (*by == 0 && p > 1 + (double)M / N) p = (int)(1 + (double)M / N);  // |A| / |B| = M / N
    while (p > 1 && len / p < min) p /= 2;
    *width = (len + p - 1) / p;
    if (*by != 2) *width = (*width + 31) / 32 * 32;
    if (*by == 1 && (size_t)*width * M > 262144) *width = (262144 / M + 31) / 32 * 32;  // temporaries of <= 1 MB
    if (*width < 32) *width = 32;
    return (len + *width - 1) / *width;
}

static void gemm_any(int batch, int ta, int tb, int M, int N, int K, float alpha, const uint16_t *A, int lda, size_t sa,
                     const uint16_t *B, int ldb, size_t sb, float beta, void *C, int ldc, size_t sc, int out16,
                     const float *bias) {
    if (batch <= 0 || M <= 0 || N <= 0) return;
    if (K <= 0 || (beta != 0.0f && beta != 1.0f) || (bias && (alpha != 1.0f || batch > 1)) || (out16 && beta != 0.0f))
        gt_fail(GT_EXIT_RUNTIME, "gemm_bf16: unsupported call (K %d, alpha %g, beta %g, bias %d, bf16 C %d, batch %d)", K,
                (double)alpha, (double)beta, bias != NULL, out16, batch);
    int by, width, np = pieces(batch, tb, M, N, K, &by, &width);
    size_t esize = out16 ? sizeof(uint16_t) : sizeof(float);
    int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (nt > np) nt = np;
    uint32_t abits;
    memcpy(&abits, &alpha, sizeof abits);
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (int i = 0; i < np; i++) {
        int len = by == 2 ? batch : by ? N : M;
        int lo = i * width, n = lo + width < len ? width : len - lo;
        Key k = {by == 2 ? n : 1, ta, tb, by == 0 ? n : M, by == 1 ? n : N, K, lda, ldb, ldc,
                 batch > 1 ? (int64_t)sa : 0, batch > 1 ? (int64_t)sb : 0, batch > 1 ? (int64_t)sc : 0, out16,
                 beta != 0.0f, bias != NULL, abits};
        if (k.batch == 1) k.sa = k.sb = k.sc = 0;
        if (by == 2) {
            run_one(&k, alpha, A + (size_t)lo * sa, B + (size_t)lo * sb, (char *)C + (size_t)lo * sc * esize, NULL);
        } else if (by == 0) {
            const uint16_t *a = ta ? A + lo : A + (size_t)lo * lda;
            run_one(&k, alpha, a, B, (char *)C + (size_t)lo * ldc * esize, bias);
        } else {  // columns [lo, lo + n) of C into a dense (M, n) temporary, then into C
            k.ldc = n;
            k.beta1 = 0;
            char *t = grow(&cache.tmp, &cache.tmp_cap, (size_t)M * n * esize, "GEMM column piece");
            run_one(&k, alpha, A, B + (size_t)lo * ldb, t, bias ? bias + lo : NULL);
            for (int r = 0; r < M; r++) {
                char *c = (char *)C + ((size_t)r * ldc + lo) * esize;
                if (beta == 0.0f) {
                    memcpy(c, t + (size_t)r * n * esize, (size_t)n * esize);
                } else {  // the sum oneDNN's post-op would form: alpha AB + C, one rounding
                    const float *tr = (const float *)t + (size_t)r * n;
                    for (int j = 0; j < n; j++) ((float *)c)[j] += tr[j];
                }
            }
        }
    }
}

void gemm_bf16(int trans_a, int trans_b, int M, int N, int K, float alpha, const uint16_t *A, int lda,
               const uint16_t *B, int ldb, float beta, float *C, int ldc, const float *bias) {
    gemm_any(1, trans_a, trans_b, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 0, bias);
}

void gemm_bf16_to16(int trans_a, int trans_b, int M, int N, int K, float alpha, const uint16_t *A, int lda,
                    const uint16_t *B, int ldb, uint16_t *C, int ldc, const float *bias) {
    gemm_any(1, trans_a, trans_b, M, N, K, alpha, A, lda, 0, B, ldb, 0, 0.0f, C, ldc, 0, 1, bias);
}

void gemm_bf16_batch(int batch, int trans_a, int trans_b, int M, int N, int K, float alpha, const uint16_t *A, int lda,
                     size_t stride_a, const uint16_t *B, int ldb, size_t stride_b, float beta, void *C, int ldc,
                     size_t stride_c, int c_bf16) {
    gemm_any(batch, trans_a, trans_b, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc, stride_c, c_bf16,
             NULL);
}
