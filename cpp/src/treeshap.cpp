#include "datacredit/treeshap.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_map>
#include <vector>

#include "datacredit/common.hpp"

namespace datacredit {

namespace {

constexpr int kMaxPathFeatures = 63;
// Up to this many references, pairs are walked one by one (cost ~ n_x·n_refs·reachable
// leaves); beyond it, references are grouped per leaf.
constexpr int64_t kPairwiseMaxRefs = 4;

// One root-to-leaf path: per distinct feature, the interval [lo, hi) a value must fall in
// (hi = NaN: no upper bound, so +inf is inside; hi = +inf from a split at +inf excludes it)
// and whether NaN follows the path.
struct LeafPath {
  double value = 0;
  int32_t begin = 0;  // into the flat feature arrays
  int32_t d = 0;
};

struct Paths {
  std::vector<LeafPath> leaves;
  std::vector<int32_t> feat;
  std::vector<float> lo, hi;
  std::vector<uint8_t> nan_ok;
};

void validate(const TreeEnsembleView& m, int64_t n_features) {
  const char* fn = "tree_shap_interventional";
  check(m.n_trees >= 1, fn, "model has no trees");
  check(m.n_nodes >= 1, fn, "model has no nodes");
  check(m.left && m.right && m.feature && m.threshold && m.default_left && m.value && m.roots, fn,
        "model arrays must not be null");
  for (int64_t t = 0; t < m.n_trees; ++t)
    check(m.roots[t] >= 0 && m.roots[t] < m.n_nodes, fn,
          "roots[" + std::to_string(t) + "] is outside [0, n_nodes)");
  // Each node has at most one parent and a root none: shared children (a DAG) would
  // pass the ordering check below and make 2^depth root-to-leaf paths.
  std::vector<uint8_t> has_parent(static_cast<size_t>(m.n_nodes), 0);
  for (int64_t k = 0; k < m.n_nodes; ++k) {
    if (m.left[k] < 0) {
      check(std::isfinite(m.value[k]), fn, "value of leaf " + std::to_string(k) + " is not finite");
      continue;
    }
    check(m.left[k] < m.n_nodes && m.right[k] >= 0 && m.right[k] < m.n_nodes, fn,
          "children of node " + std::to_string(k) + " are outside [0, n_nodes)");
    check(m.left[k] > k && m.right[k] > k, fn,
          "children of node " + std::to_string(k) +
              " must come after it (nodes in pre-order / breadth-first order)");
    check(m.feature[k] >= 0 && m.feature[k] < n_features, fn,
          "feature of node " + std::to_string(k) + " is outside [0, n_features)");
    check(!std::isnan(m.threshold[k]), fn, "threshold of node " + std::to_string(k) + " is NaN");
    for (const int32_t c : {m.left[k], m.right[k]}) {
      check(!has_parent[static_cast<size_t>(c)], fn,
            "node " + std::to_string(c) +
                " has two parents (left and right children must be distinct, each node "
                "the child of one node only: a tree, not a DAG)");
      has_parent[static_cast<size_t>(c)] = 1;
    }
  }
  for (int64_t t = 0; t < m.n_trees; ++t) {
    check(!has_parent[static_cast<size_t>(m.roots[t])], fn,
          "roots[" + std::to_string(t) + "] = " + std::to_string(m.roots[t]) +
              " is the child of another node (or the root of two trees)");
    has_parent[static_cast<size_t>(m.roots[t])] = 1;
  }
}

// Depth-first walk that merges the splits on each feature into one interval.  Iterative
// (an explicit stack): a hand-built chain 80k nodes deep must not overflow the C stack.
struct PathBuilder {
  const TreeEnsembleView& m;
  Paths& out;
  std::vector<int32_t> feat;
  std::vector<float> lo, hi;
  std::vector<uint8_t> nan_ok;

  struct Frame {
    int64_t node;
    int stage;  // 0: not entered, 1: left subtree done, 2: right subtree done
    size_t pos;
    bool fresh;
    float old_lo, old_hi;
    uint8_t old_nan;
  };
  std::vector<Frame> stack;

  void emit_leaf(int64_t k) {
    check(static_cast<int>(feat.size()) <= kMaxPathFeatures, "tree_shap_interventional",
          "a path tests more than 63 distinct features; not supported");
    LeafPath leaf;
    leaf.value = m.value[k];
    leaf.begin = static_cast<int32_t>(out.feat.size());
    leaf.d = static_cast<int32_t>(feat.size());
    out.leaves.push_back(leaf);
    out.feat.insert(out.feat.end(), feat.begin(), feat.end());
    out.lo.insert(out.lo.end(), lo.begin(), lo.end());
    out.hi.insert(out.hi.end(), hi.begin(), hi.end());
    out.nan_ok.insert(out.nan_ok.end(), nan_ok.begin(), nan_ok.end());
  }

  void walk(int64_t root) {
    stack.push_back(Frame{root, 0, 0, false, 0.0f, 0.0f, 0});
    while (!stack.empty()) {
      Frame& fr = stack.back();
      const int64_t k = fr.node;
      if (m.left[k] < 0) {
        emit_leaf(k);
        stack.pop_back();
        continue;
      }
      const float t = m.threshold[k];
      const bool dl = m.default_left[k] != 0;
      if (fr.stage == 0) {
        const int32_t f = m.feature[k];
        fr.pos = std::find(feat.begin(), feat.end(), f) - feat.begin();
        fr.fresh = fr.pos == feat.size();
        if (fr.fresh) {
          feat.push_back(f);
          lo.push_back(-std::numeric_limits<float>::infinity());
          hi.push_back(std::numeric_limits<float>::quiet_NaN());  // no upper bound yet
          nan_ok.push_back(1);
        }
        fr.old_lo = lo[fr.pos];
        fr.old_hi = hi[fr.pos];
        fr.old_nan = nan_ok[fr.pos];
        // left: v < t
        hi[fr.pos] = std::isnan(fr.old_hi) ? t : std::min(fr.old_hi, t);
        nan_ok[fr.pos] = fr.old_nan && dl;
        fr.stage = 1;
        const int64_t child = m.left[k];
        stack.push_back(Frame{child, 0, 0, false, 0.0f, 0.0f, 0});  // invalidates fr
      } else if (fr.stage == 1) {
        // right: v >= t
        hi[fr.pos] = fr.old_hi;
        lo[fr.pos] = std::max(fr.old_lo, t);
        nan_ok[fr.pos] = fr.old_nan && !dl;
        fr.stage = 2;
        const int64_t child = m.right[k];
        stack.push_back(Frame{child, 0, 0, false, 0.0f, 0.0f, 0});
      } else {
        lo[fr.pos] = fr.old_lo;
        nan_ok[fr.pos] = fr.old_nan;
        if (fr.fresh) {
          feat.pop_back();
          lo.pop_back();
          hi.pop_back();
          nan_ok.pop_back();
        }
        stack.pop_back();
      }
    }
  }
};

Paths build_paths(const TreeEnsembleView& m) {
  Paths p;
  for (int64_t t = 0; t < m.n_trees; ++t) {
    PathBuilder b{m, p, {}, {}, {}, {}, {}};
    b.walk(m.roots[t]);
  }
  return p;
}

inline uint64_t point_mask(const Paths& p, const LeafPath& leaf, const float* row) {
  uint64_t mask = 0;
  for (int32_t k = 0; k < leaf.d; ++k) {
    const int32_t q = leaf.begin + k;
    const float v = row[p.feat[q]];
    // !(v >= hi) is v < hi, and true when hi is NaN (no upper bound): +inf goes right
    // at every finite split, as in XGBoost.
    const bool ok = std::isnan(v) ? p.nan_ok[q] != 0 : (v >= p.lo[q] && !(v >= p.hi[q]));
    mask |= static_cast<uint64_t>(ok) << k;
  }
  return mask;
}

// Maps masks to dense slots: a stamped table for d ≤ 16, a hash map beyond.
class MaskSlots {
 public:
  void reset(int d) {
    dense_ = d <= 16;
    if (dense_) {
      const size_t size = size_t(1) << d;
      if (stamp_.size() < size) {
        stamp_.assign(size, 0);
        slot_.assign(size, 0);
      }
      if (++epoch_ == 0) {
        std::fill(stamp_.begin(), stamp_.end(), 0);
        epoch_ = 1;
      }
    } else {
      map_.clear();
    }
    count_ = 0;
  }
  // Returns the slot of `mask`, creating it (and setting `created`) when new.
  int32_t get(uint64_t mask, bool& created) {
    created = false;
    if (dense_) {
      if (stamp_[mask] != epoch_) {
        stamp_[mask] = epoch_;
        slot_[mask] = count_++;
        created = true;
      }
      return slot_[mask];
    }
    auto it = map_.find(mask);
    if (it != map_.end()) return it->second;
    created = true;
    map_.emplace(mask, count_);
    return count_++;
  }
  int32_t size() const { return count_; }

 private:
  bool dense_ = true;
  uint32_t epoch_ = 0;
  std::vector<uint32_t> stamp_;
  std::vector<int32_t> slot_;
  std::unordered_map<uint64_t, int32_t> map_;
  int32_t count_ = 0;
};

// weight[a][b] = a! b! / (a + b + 1)!  (Shapley weight of a coalition of size a, with b
// other players, in a game of a + b + 1 players).
std::vector<double> shapley_weights(int max_d) {
  const int n = max_d + 1;
  std::vector<double> w(size_t(n) * n, 0.0);
  for (int a = 0; a < n; ++a)
    for (int b = 0; a + b < n; ++b) {
      // compute via lgamma to stay stable
      w[size_t(a) * n + b] =
          std::exp(std::lgamma(a + 1.0) + std::lgamma(b + 1.0) - std::lgamma(a + b + 2.0));
    }
  return w;
}

void validate_points(const char* fn, const float* X, int64_t n, int64_t n_features,
                     const char* name) {
  check(n >= 1, fn, std::string(name) + " must have at least one row");
  check(X != nullptr, fn, std::string(name) + " must not be null");
  (void)n_features;
}

inline bool goes_left(const TreeEnsembleView& m, int64_t k, float v) {
  return std::isnan(v) ? m.default_left[k] != 0 : v < m.threshold[k];
}

double predict_row(const TreeEnsembleView& m, const float* row) {
  double total = 0;
  for (int64_t t = 0; t < m.n_trees; ++t) {
    int64_t k = m.roots[t];
    while (m.left[k] >= 0) k = goes_left(m, k, row[m.feature[k]]) ? m.left[k] : m.right[k];
    total += m.value[k];
  }
  return total;
}

// Per-pair traversal for few references: walks only the leaves the hybrid points of (x, r)
// can reach, assigning each split feature to x or r the first time the two disagree.
struct PairWalker {
  const TreeEnsembleView& m;
  const std::vector<double>& W;
  int wn;
  const float* x;
  const float* r;
  double scale;
  double* phi;
  std::vector<int8_t>& state;   // per feature: 0 free, 1 taken from x, 2 taken from r
  std::vector<int32_t>& owned;  // features currently assigned
  int a = 0, b = 0;

  struct Frame {
    int64_t node;  // a node where x and r disagree on a free feature
    int stage;     // 0: x's branch next, 1: r's branch next, 2: both done
  };
  std::vector<Frame>& stack;

  void leaf(int64_t k) {
    if (a + b == 0) return;
    const double v = m.value[k] * scale;
    const double pos = a > 0 ? v * W[size_t(a - 1) * wn + b] : 0.0;
    const double neg = b > 0 ? v * W[size_t(a) * wn + (b - 1)] : 0.0;
    for (int32_t f : owned) phi[f] += state[f] == 1 ? pos : -neg;
  }

  // Follows the branch of node k until a leaf (handled) or a node where x and r disagree
  // on a free feature (pushed on the stack).  Iterative: trees may be very deep.
  void descend(int64_t k) {
    for (;;) {
      if (m.left[k] < 0) return leaf(k);
      const int32_t f = m.feature[k];
      const bool xl = goes_left(m, k, x[f]);
      const bool rl = goes_left(m, k, r[f]);
      if (state[f] == 1 || (state[f] == 0 && xl == rl)) {
        k = xl ? m.left[k] : m.right[k];
      } else if (state[f] == 2) {
        k = rl ? m.left[k] : m.right[k];
      } else {
        stack.push_back(Frame{k, 0});
        return;
      }
    }
  }

  void walk(int64_t root) {
    descend(root);
    while (!stack.empty()) {
      const Frame fr = stack.back();
      const int64_t k = fr.node;
      const int32_t f = m.feature[k];
      if (fr.stage == 0) {
        stack.back().stage = 1;
        owned.push_back(f);
        state[f] = 1;
        ++a;
        descend(goes_left(m, k, x[f]) ? m.left[k] : m.right[k]);
      } else if (fr.stage == 1) {
        stack.back().stage = 2;
        --a;
        state[f] = 2;
        ++b;
        descend(goes_left(m, k, r[f]) ? m.left[k] : m.right[k]);
      } else {
        --b;
        state[f] = 0;
        owned.pop_back();
        stack.pop_back();
      }
    }
  }
};

void pairwise_shap(const TreeEnsembleView& m, const float* X, int64_t n_x, const float* R,
                   int64_t n_refs, int64_t n_features, const std::vector<double>& W, int wn,
                   double* phi, double* base, double* fx, int threads) {
  double mean_fr = 0;
  for (int64_t q = 0; q < n_refs; ++q) mean_fr += predict_row(m, R + q * n_features);
  mean_fr /= static_cast<double>(n_refs);
  const double scale = 1.0 / static_cast<double>(n_refs);
  ParallelErrors errors;
#pragma omp parallel num_threads(threads)
  {
    std::vector<int8_t> state;
    std::vector<int32_t> owned;
    std::vector<PairWalker::Frame> stack;
    errors.run([&] { state.assign(static_cast<size_t>(n_features), 0); });
#pragma omp for schedule(dynamic, 8)
    for (int64_t i = 0; i < n_x; ++i)
      errors.run([&] {
        const float* x = X + i * n_features;
        double* row = phi + i * n_features;
        for (int64_t q = 0; q < n_refs; ++q) {
          PairWalker w{m, W, wn, x, R + q * n_features, scale, row, state, owned, 0, 0, stack};
          for (int64_t t = 0; t < m.n_trees; ++t) w.walk(m.roots[t]);
        }
        base[i] = mean_fr;
        if (fx) fx[i] = predict_row(m, x);
      });
  }
  errors.rethrow();
}
}  // namespace

void tree_shap_interventional(const TreeEnsembleView& model, const float* X, int64_t n_x,
                              const float* R, int64_t n_refs, int64_t n_features, double* phi,
                              double* base, double* fx, int n_threads) {
  const char* fn = "tree_shap_interventional";
  check(n_features >= 1, fn, "n_features must be >= 1");
  validate(model, n_features);
  validate_points(fn, X, n_x, n_features, "X");
  validate_points(fn, R, n_refs, n_features, "references");
  check(phi != nullptr && base != nullptr, fn, "outputs must not be null");
  const Paths paths = build_paths(model);
  int max_d = 0;
  for (const auto& l : paths.leaves) max_d = std::max(max_d, int(l.d));
  const std::vector<double> W = shapley_weights(max_d);
  const int wn = max_d + 1;
  const int threads = resolve_threads(n_threads);
  const int64_t n_leaves = static_cast<int64_t>(paths.leaves.size());
  const double inv_r = 1.0 / static_cast<double>(n_refs);

  std::fill(phi, phi + n_x * n_features, 0.0);
  if (n_refs <= kPairwiseMaxRefs) {
    // few references: walking each (x, r) pair is cheaper than grouping per leaf
    pairwise_shap(model, X, n_x, R, n_refs, n_features, W, wn, phi, base, fx, threads);
    return;
  }
  double base_total = 0;
  std::vector<double> fx_total(n_x, 0.0);

  // Explain points are processed in blocks so the per-thread accumulators stay small.
  const int64_t block =
      std::max<int64_t>(1, std::min<int64_t>(n_x, (int64_t(1) << 21) / n_features));

  ParallelErrors errors;
#pragma omp parallel num_threads(threads)
  {
    std::vector<double> acc, fx_acc;
    std::vector<uint64_t> xmask;
    std::vector<int32_t> xslot;
    errors.run([&] {
      acc.resize(size_t(block) * n_features);
      fx_acc.resize(block);
      xmask.resize(block);
      xslot.resize(block);
    });
    std::vector<uint64_t> ref_masks;
    std::vector<double> ref_counts;
    std::vector<uint64_t> slot_mask;
    std::vector<double> contrib;  // slot-major, d values per slot
    std::vector<uint8_t> live;    // slot has a non-zero contribution
    MaskSlots slots, rslots;
    double base_acc = 0;

    for (int64_t b0 = 0; b0 < n_x; b0 += block) {
      const int64_t nb = std::min(block, n_x - b0);
      errors.run([&] {
        std::fill(acc.begin(), acc.begin() + nb * n_features, 0.0);
        std::fill(fx_acc.begin(), fx_acc.begin() + nb, 0.0);
      });
#pragma omp for schedule(dynamic, 16)
      for (int64_t li = 0; li < n_leaves; ++li)
        errors.run([&] {
          const LeafPath& leaf = paths.leaves[li];
          const int d = leaf.d;
          const uint64_t full = d == 64 ? ~uint64_t(0) : ((uint64_t(1) << d) - 1);
          // group references by mask
          rslots.reset(d);
          ref_masks.clear();
          ref_counts.clear();
          for (int64_t r = 0; r < n_refs; ++r) {
            const uint64_t m = point_mask(paths, leaf, R + r * n_features);
            bool created;
            const int32_t s = rslots.get(m, created);
            if (created) {
              ref_masks.push_back(m);
              ref_counts.push_back(0.0);
            }
            ref_counts[s] += 1.0;
          }
          if (b0 == 0) {
            for (size_t s = 0; s < ref_masks.size(); ++s)
              if (ref_masks[s] == full) base_acc += leaf.value * ref_counts[s] * inv_r;
          }
          // one contribution vector per distinct explain-point mask
          slots.reset(d);
          slot_mask.clear();
          for (int64_t i = 0; i < nb; ++i) {
            const uint64_t m = point_mask(paths, leaf, X + (b0 + i) * n_features);
            xmask[i] = m;
            bool created;
            xslot[i] = slots.get(m, created);
            if (created) slot_mask.push_back(m);
          }
          const int32_t ns = slots.size();
          contrib.assign(size_t(ns) * d, 0.0);
          live.assign(ns, 0);
          bool any_live = false;
          for (int32_t s = 0; s < ns; ++s) {
            const uint64_t mx = slot_mask[s];
            const uint64_t need = full & ~mx;  // features the reference must satisfy
            double* c = contrib.data() + size_t(s) * d;
            for (size_t q = 0; q < ref_masks.size(); ++q) {
              const uint64_t mr = ref_masks[q];
              if ((mr & need) != need) continue;
              const uint64_t ux = mx & ~mr, ur = mr & ~mx;
              if ((ux | ur) == 0) continue;
              live[s] = 1;
              any_live = true;
              const int a = __builtin_popcountll(ux), b = __builtin_popcountll(ur);
              const double scale = leaf.value * ref_counts[q] * inv_r;
              const double pos = a > 0 ? scale * W[size_t(a - 1) * wn + b] : 0.0;
              const double neg = b > 0 ? scale * W[size_t(a) * wn + (b - 1)] : 0.0;
              for (uint64_t bits = ux; bits; bits &= bits - 1) c[__builtin_ctzll(bits)] += pos;
              for (uint64_t bits = ur; bits; bits &= bits - 1) c[__builtin_ctzll(bits)] -= neg;
            }
          }
          const int32_t* feat = paths.feat.data() + leaf.begin;
          for (int64_t i = 0; i < nb; ++i) {
            if (xmask[i] == full) fx_acc[i] += leaf.value;
          }
          if (!any_live) return;
          for (int64_t i = 0; i < nb; ++i) {
            if (!live[xslot[i]]) continue;
            const double* c = contrib.data() + size_t(xslot[i]) * d;
            double* row = acc.data() + i * n_features;
            for (int k = 0; k < d; ++k) row[feat[k]] += c[k];
          }
        });
#pragma omp critical(datacredit_treeshap_reduce)
      errors.run([&] {
        double* out = phi + b0 * n_features;
        for (int64_t q = 0; q < nb * n_features; ++q) out[q] += acc[q];
        for (int64_t i = 0; i < nb; ++i) fx_total[b0 + i] += fx_acc[i];
      });
#pragma omp barrier
    }
#pragma omp critical(datacredit_treeshap_base)
    base_total += base_acc;
  }
  errors.rethrow();
  for (int64_t i = 0; i < n_x; ++i) base[i] = base_total;
  if (fx)
    for (int64_t i = 0; i < n_x; ++i) fx[i] = fx_total[i];
}

void tree_ensemble_predict(const TreeEnsembleView& model, const float* X, int64_t n,
                           int64_t n_features, double* out, int n_threads) {
  const char* fn = "tree_ensemble_predict";
  check(n_features >= 1, fn, "n_features must be >= 1");
  validate(model, n_features);
  check(n >= 1 && X != nullptr && out != nullptr, fn, "X must have at least one row");
  const int threads = resolve_threads(n_threads);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float* row = X + i * n_features;
    double total = 0;
    for (int64_t t = 0; t < model.n_trees; ++t) {
      int64_t k = model.roots[t];
      while (model.left[k] >= 0) {
        const float v = row[model.feature[k]];
        const bool go_left = std::isnan(v) ? model.default_left[k] != 0 : v < model.threshold[k];
        k = go_left ? model.left[k] : model.right[k];
      }
      total += model.value[k];
    }
    out[i] = total;
  }
}

}  // namespace datacredit
