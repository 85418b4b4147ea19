/* The stable C API of datacredit (libdatacredit.so.0 / libdatacredit.a).
 *
 * Plain C: no exceptions and no C++ types cross it.  Every function that can fail returns an
 * int error code (DC_OK = 0); after a non-zero return, dc_last_error() describes the problem
 * (naming the function and the argument).  Objects are opaque handles created by *_load and
 * released by *_free.  Arrays are caller-owned, row-major, contiguous.  Only dc_* symbols are
 * exported; the library promises that files written by datacredit 0.x load in every later
 * 0.x (tests/fixtures holds files written by each release).
 *
 * Threads: the host decides.  Functions taking `n_threads` use that many OpenMP threads
 * (0: the process-wide setting of dc_set_num_threads, whose default 0 means all cores).
 *
 * Thread safety: dc_version, dc_last_error, the kernel functions and the query functions
 * of loaded handles (dc_dualda_dim, dc_dualda_topk, dc_pq_index_dim, dc_pq_index_search)
 * may be called concurrently from any number of threads, also on the same handle (handles
 * are immutable after loading).  dc_*_free must not race with any other use of the handle.
 * dc_set_num_threads is an atomic store read at the start of each call.
 *
 * Files: the safetensors container (docs/c_api.md): an 8-byte little-endian header length,
 * a JSON header, raw little-endian tensors.  Loads memory-map the file and validate the
 * header, dtypes, shapes, offsets and values before returning a handle; a corrupt or
 * truncated file returns DC_ERR_FORMAT, never a crash.  datacredit replaces files by an
 * atomic rename, so a mapped file is never truncated under a loaded handle.
 */
#ifndef DATACREDIT_C_API_H_
#define DATACREDIT_C_API_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#if defined(DATACREDIT_BUILDING_C_API)
#define DC_API __declspec(dllexport)
#else
#define DC_API
#endif
#else
#define DC_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes. */
enum {
  DC_OK = 0,
  DC_ERR_INVALID_ARGUMENT = 1, /* a bad pointer, size, k, target, ... */
  DC_ERR_IO = 2,               /* the file cannot be opened, read or mapped */
  DC_ERR_FORMAT = 3,           /* not a valid file of the expected format / version */
  DC_ERR_OUT_OF_MEMORY = 4,
  DC_ERR_INTERNAL = 5 /* a bug: please report it */
};

/* Metrics of dc_gram_topk and of the PQ search. */
enum { DC_METRIC_IP = 0, DC_METRIC_COSINE = 1, DC_METRIC_L2 = 2 };

/* Flags of dc_dualda_topk_ex. */
enum { DC_DUALDA_OPPONENTS = 1 };

/* ------------------------------------------------------------------ basics */

/* The library version (0.1.0 for this release).  Returns 0.  Thread-safe. */
DC_API int dc_version(int* major, int* minor, int* patch);

/* The message of the last failing call on this thread ("" when none).  Thread-local; valid
 * until the next failing call on the same thread. */
DC_API const char* dc_last_error(void);

/* Process-wide default thread count for calls with n_threads = 0 (0: all cores; negative:
 * DC_ERR_INVALID_ARGUMENT).  Thread-safe (atomic). */
DC_API int dc_set_num_threads(int n_threads);
DC_API int dc_get_num_threads(void);

/* ------------------------------------------------------------------ kernels (caller-owned buffers)
 */

/* Fused Gram top-k: score(i, j) = w * s(q_i, k_j) with s = inner product, cosine or squared
 * l2 (metric), w = 1 (weights NULL), weights[j] (n_weight_cols = 1, classes NULL) or
 * weights[j * n_weight_cols + classes[i]].  Writes the k best per query (largest when
 * `largest` != 0), ties to the lower key index: values, indices (n x k).  Thread-safe. */
DC_API int dc_gram_topk(const float* queries, int64_t n, const float* keys, int64_t n_keys,
                        int64_t dim, int64_t k, const float* weights, int64_t n_weight_cols,
                        const int64_t* classes, int metric, int largest, float* values,
                        int64_t* indices, int n_threads);

/* Crammer-Singer multiclass SVM (dual coordinate descent).  X (n x d) float32, y (n) in
 * [0, n_classes).  Outputs: dual_coef (n x n_classes, lambda), coef (n_classes x d), bias
 * (n_classes), float64; and the stats below (out may be NULL).  Thread-safe. */
typedef struct dc_crammer_singer_stats {
  int64_t n_iter;
  int converged;
  double max_violation;
  double primal_objective;
  double dual_objective;
} dc_crammer_singer_stats;

DC_API int dc_crammer_singer_fit(const float* X, int64_t n, int64_t d, const int64_t* y,
                                 int64_t n_classes, double C, double tol, int64_t max_iter,
                                 uint64_t seed, int fit_bias, int n_threads, double* dual_coef,
                                 double* coef, double* bias, dc_crammer_singer_stats* stats);

/* 8-bit-or-less PQ search (ADC) of codes (n_codes x m, uint8) with centroids
 * (m x 2^nbits x dim/m): the k best per query (metric DC_METRIC_L2 ascending or
 * DC_METRIC_IP descending), ties to the lower index.  Thread-safe. */
DC_API int dc_pq_search(int64_t dim, int64_t m, int nbits, const float* centroids,
                        const float* queries, int64_t nq, const uint8_t* codes, int64_t n_codes,
                        int64_t k, int metric, float* distances, int64_t* indices, int n_threads);

/* A tree ensemble as flat node arrays (see cpp/include/datacredit/treeshap.hpp). */
typedef struct dc_tree_ensemble {
  const int32_t* left;
  const int32_t* right;
  const int32_t* feature;
  const float* threshold;
  const uint8_t* default_left;
  const float* value;
  int64_t n_nodes;
  const int64_t* roots;
  int64_t n_trees;
} dc_tree_ensemble;

/* Interventional TreeSHAP: phi (n_x x n_features, float64), base (n_x), fx (n_x or NULL).
 * Thread-safe. */
DC_API int dc_treeshap(const dc_tree_ensemble* model, const float* X, int64_t n_x, const float* R,
                       int64_t n_refs, int64_t n_features, double* phi, double* base, double* fx,
                       int n_threads);

/* ------------------------------------------------------------------ DualDA explainer */

typedef struct dc_dualda dc_dualda;

/* Loads an explainer written by DualDA.save_explainer (memory-mapped).  *out receives the
 * handle (NULL on failure).  Thread-safe. */
DC_API int dc_dualda_load(const char* path, dc_dualda** out);

/* Same from a buffer holding the file's bytes; the buffer is used in place (not copied) and
 * must outlive the handle.  Thread-safe. */
DC_API int dc_dualda_load_buffer(const void* data, size_t size, dc_dualda** out);

/* Feature dimension and number of classes.  Thread-safe. */
DC_API int dc_dualda_dim(const dc_dualda* h, int64_t* d, int64_t* n_classes);

/* Number of support vectors and of training samples.  Thread-safe. */
DC_API int dc_dualda_size(const dc_dualda* h, int64_t* n_support, int64_t* n_train);

/* Top-k proponents: for each of the n feature rows (n x d) and its class c (targets[i], or
 * the surrogate's predicted class when targets is NULL or targets[i] = -1), the k training
 * samples with the largest tau_c(i) = lambda_ic f_i . f (0 for non-support samples), ties to
 * the lower training index: values (n x k) float32 and indices (n x k) into the training
 * set.  1 <= k <= n_train.  Uses the dc_set_num_threads setting.  Thread-safe. */
DC_API int dc_dualda_topk(const dc_dualda* h, const float* features, int64_t n, int64_t d,
                          const int32_t* targets, int64_t k, float* values, int64_t* indices);

/* dc_dualda_topk with flags (DC_DUALDA_OPPONENTS: the k smallest scores) and a thread count. */
DC_API int dc_dualda_topk_ex(const dc_dualda* h, const float* features, int64_t n, int64_t d,
                             const int32_t* targets, int64_t k, int flags, int n_threads,
                             float* values, int64_t* indices);

/* Releases the handle (NULL is a no-op). */
DC_API void dc_dualda_free(dc_dualda* h);

/* ------------------------------------------------------------------ PQ / IVF-PQ index */

typedef struct dc_pq_index dc_pq_index;

/* Loads a 4-bit fast-scan index: a quantizer (ProductQuantizer.save, nbits = 4) and its
 * packed codes (PackedCodes.save; packed with inverted lists for an IVF-PQ index, then the
 * quantizer must have the same nlist).  Both memory-mapped.  Thread-safe. */
DC_API int dc_pq_index_load(const char* quantizer_path, const char* codes_path, dc_pq_index** out);

/* Same from two buffers (used in place; they must outlive the handle). */
DC_API int dc_pq_index_load_buffer(const void* quantizer, size_t quantizer_size, const void* codes,
                                   size_t codes_size, dc_pq_index** out);

/* Dimension, number of codes and number of inverted lists (0: flat).  Thread-safe. */
DC_API int dc_pq_index_dim(const dc_pq_index* h, int64_t* d, int64_t* n, int64_t* nlist);

/* The k best codes per query (queries: nq x d), as ProductQuantizer.search(queries, packed,
 * k, nprobe=, rerank=) in Python: nprobe (IVF only; 0: the saved default), rerank (0: none,
 * else k <= rerank <= n candidates re-ranked by exact ADC).  distances / indices (nq x k);
 * with lists, slots beyond the codes found are +inf (-inf for ip) and -1.  Thread-safe. */
DC_API int dc_pq_index_search(const dc_pq_index* h, const float* queries, int64_t nq, int64_t d,
                              int64_t k, int64_t nprobe, int64_t rerank, int n_threads,
                              float* distances, int64_t* indices);

DC_API void dc_pq_index_free(dc_pq_index* h);

#ifdef __cplusplus
}
#endif

#endif /* DATACREDIT_C_API_H_ */
