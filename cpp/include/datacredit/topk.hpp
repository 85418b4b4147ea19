// Fused top-k selection shared by the kernels that scan scores (Gram top-k, PQ search).
//
// Selection always keeps the LARGEST keys; callers that want the smallest scores
// negate them (exact in floating point).  Ties are broken by the lower index, so the
// result is fully deterministic whatever the scan order or the thread partition.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace datacredit {

// A bounded heap over caller-owned storage (k keys, k indices).  The root is the
// worst kept element, so `threshold()` rejects most candidates with one compare.
class TopKHeap {
 public:
  // `size` > 0 adopts storage that already holds a valid heap of that many elements.
  TopKHeap(float* keys, int64_t* ids, int64_t k, int64_t size = 0)
      : keys_(keys), ids_(ids), k_(k), size_(size) {}

  static bool better(float ka, int64_t ia, float kb, int64_t ib) {
    return ka > kb || (ka == kb && ia < ib);
  }

  // Candidates with key < threshold() can never enter; key == threshold() may (lower index).
  // Keys must not be NaN (callers map NaN to -inf).
  float threshold() const {
    return size_ < k_ ? -std::numeric_limits<float>::infinity() : keys_[0];
  }

  void push(float key, int64_t id) {
    if (size_ < k_) {
      int64_t pos = size_++;
      while (pos > 0) {  // sift up: parent must stay worse than the child
        int64_t parent = (pos - 1) / 2;
        if (!better(keys_[parent], ids_[parent], key, id)) break;
        keys_[pos] = keys_[parent];
        ids_[pos] = ids_[parent];
        pos = parent;
      }
      keys_[pos] = key;
      ids_[pos] = id;
      return;
    }
    if (!better(key, id, keys_[0], ids_[0])) return;
    int64_t pos = 0;
    for (;;) {  // sift down the new element from the root
      int64_t child = 2 * pos + 1;
      if (child >= k_) break;
      if (child + 1 < k_ && better(keys_[child], ids_[child], keys_[child + 1], ids_[child + 1]))
        ++child;  // pick the worse child
      if (!better(key, id, keys_[child], ids_[child])) break;
      keys_[pos] = keys_[child];
      ids_[pos] = ids_[child];
      pos = child;
    }
    keys_[pos] = key;
    ids_[pos] = id;
  }

  int64_t size() const { return size_; }
  const float* keys() const { return keys_; }
  const int64_t* ids() const { return ids_; }

  // Writes the kept elements best-first; `sign` (+1 or -1) maps keys back to scores.
  void write_sorted(float* values_out, int64_t* ids_out, float sign) const {
    std::vector<std::pair<float, int64_t>> items(static_cast<size_t>(size_));
    for (int64_t i = 0; i < size_; ++i) items[static_cast<size_t>(i)] = {keys_[i], ids_[i]};
    std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
      return better(a.first, a.second, b.first, b.second);
    });
    for (int64_t i = 0; i < size_; ++i) {
      values_out[i] = sign * items[static_cast<size_t>(i)].first;
      ids_out[i] = items[static_cast<size_t>(i)].second;
    }
  }

 private:
  float* keys_;
  int64_t* ids_;
  int64_t k_;
  int64_t size_ = 0;
};

// Writes best-first the k best of one query's `parts` partial heaps (part p: keys and ids
// at offset p * k, sizes[p] elements), as left by a scan split over ranges of candidates.
inline void write_merged_sorted(float* keys, int64_t* ids, const int64_t* sizes, int64_t parts,
                                int64_t k, float* values_out, int64_t* ids_out, float sign) {
  if (parts == 1) {
    TopKHeap(keys, ids, k, sizes[0]).write_sorted(values_out, ids_out, sign);
    return;
  }
  std::vector<float> merged_keys(static_cast<size_t>(k));
  std::vector<int64_t> merged_ids(static_cast<size_t>(k));
  TopKHeap merged(merged_keys.data(), merged_ids.data(), k);
  for (int64_t part = 0; part < parts; ++part)
    for (int64_t e = 0; e < sizes[part]; ++e) merged.push(keys[part * k + e], ids[part * k + e]);
  merged.write_sorted(values_out, ids_out, sign);
}

}  // namespace datacredit
