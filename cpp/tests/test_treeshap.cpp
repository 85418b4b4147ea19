// Interventional TreeSHAP against brute-force Shapley enumeration, plus argument errors.
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "check.hpp"
#include "datacredit/treeshap.hpp"

namespace {

struct Ensemble {
  std::vector<int32_t> left, right, feature;
  std::vector<float> threshold, value;
  std::vector<uint8_t> default_left;
  std::vector<int64_t> roots;
  datacredit::TreeEnsembleView view() const {
    datacredit::TreeEnsembleView v;
    v.left = left.data();
    v.right = right.data();
    v.feature = feature.data();
    v.threshold = threshold.data();
    v.default_left = default_left.data();
    v.value = value.data();
    v.n_nodes = static_cast<int64_t>(left.size());
    v.roots = roots.data();
    v.n_trees = static_cast<int64_t>(roots.size());
    return v;
  }
};

// Random complete tree of the given depth in breadth-first order (features may repeat).
void add_tree(Ensemble& e, int depth, int n_features, std::mt19937& rng) {
  std::uniform_int_distribution<int> feat(0, n_features - 1);
  std::uniform_real_distribution<float> thr(-1.f, 1.f);
  std::normal_distribution<float> val;
  const int32_t base = static_cast<int32_t>(e.left.size());
  const int n_nodes = (1 << (depth + 1)) - 1;
  e.roots.push_back(base);
  for (int k = 0; k < n_nodes; ++k) {
    const bool leaf = k >= (1 << depth) - 1;
    e.left.push_back(leaf ? -1 : base + 2 * k + 1);
    e.right.push_back(leaf ? -1 : base + 2 * k + 2);
    e.feature.push_back(leaf ? 0 : feat(rng));
    e.threshold.push_back(leaf ? 0.f : thr(rng));
    e.default_left.push_back(static_cast<uint8_t>(rng() & 1));
    e.value.push_back(leaf ? val(rng) : 0.f);
  }
}

double predict(const Ensemble& e, const std::vector<float>& x) {
  double total = 0;
  for (int64_t root : e.roots) {
    int64_t k = root;
    while (e.left[k] >= 0) {
      const float v = x[e.feature[k]];
      const bool l = std::isnan(v) ? e.default_left[k] != 0 : v < e.threshold[k];
      k = l ? e.left[k] : e.right[k];
    }
    total += e.value[k];
  }
  return total;
}

double factorial(int n) { return std::tgamma(n + 1.0); }

}  // namespace

int main() {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (int trial = 0; trial < 6; ++trial) {
    const int n_features = 5, n_x = 4;
    const int n_refs = trial % 2 == 0 ? 3 : 7;  // per-pair walk and per-leaf grouping
    Ensemble e;
    for (int t = 0; t < 4; ++t) add_tree(e, 1 + (t + trial) % 4, n_features, rng);
    std::vector<float> X(n_x * n_features), R(n_refs * n_features);
    for (auto& v : X) v = normal(rng);
    for (auto& v : R) v = normal(rng);
    if (trial % 2 == 1) X[3] = std::nanf("");  // a missing value follows default_left
    std::vector<double> phi(n_x * n_features), base(n_x), fx(n_x);
    datacredit::tree_shap_interventional(e.view(), X.data(), n_x, R.data(), n_refs, n_features,
                                         phi.data(), base.data(), fx.data(), 2);
    for (int i = 0; i < n_x; ++i) {
      std::vector<float> x(X.begin() + i * n_features, X.begin() + (i + 1) * n_features);
      DC_EXPECT(std::abs(fx[i] - predict(e, x)) < 1e-5);
      std::vector<double> ref_phi(n_features, 0.0);
      double mean_fr = 0;
      for (int r = 0; r < n_refs; ++r) {
        std::vector<float> rr(R.begin() + r * n_features, R.begin() + (r + 1) * n_features);
        mean_fr += predict(e, rr) / n_refs;
        std::vector<double> v(1 << n_features);
        for (int s = 0; s < (1 << n_features); ++s) {
          std::vector<float> z(n_features);
          for (int j = 0; j < n_features; ++j) z[j] = (s >> j) & 1 ? x[j] : rr[j];
          v[s] = predict(e, z);
        }
        for (int j = 0; j < n_features; ++j)
          for (int s = 0; s < (1 << n_features); ++s) {
            if ((s >> j) & 1) continue;
            const int size = __builtin_popcount(s);
            const double w =
                factorial(size) * factorial(n_features - size - 1) / factorial(n_features);
            ref_phi[j] += w * (v[s | (1 << j)] - v[s]) / n_refs;
          }
      }
      DC_EXPECT(std::abs(base[i] - mean_fr) < 1e-5);
      for (int j = 0; j < n_features; ++j)
        DC_EXPECT(std::abs(phi[i * n_features + j] - ref_phi[j]) < 1e-5);
    }
  }
  // argument errors name the argument
  Ensemble e;
  add_tree(e, 2, 3, rng);
  e.feature[0] = 2;  // a split on feature 2: invalid when n_features = 2
  std::vector<float> X(3, 0.f);
  std::vector<double> phi(3), base(1);
  DC_EXPECT(dctest::throws_invalid(
      [&] {
        datacredit::tree_shap_interventional(e.view(), X.data(), 1, X.data(), 1, 2, phi.data(),
                                             base.data(), nullptr, 1);
      },
      "feature of node"));
  DC_EXPECT(dctest::throws_invalid(
      [&] {
        datacredit::tree_shap_interventional(e.view(), X.data(), 0, X.data(), 1, 3, phi.data(),
                                             base.data(), nullptr, 1);
      },
      "X must have at least one row"));
  Ensemble bad = e;
  bad.left[0] = 0;
  DC_EXPECT(dctest::throws_invalid(
      [&] {
        datacredit::tree_shap_interventional(bad.view(), X.data(), 1, X.data(), 1, 3, phi.data(),
                                             base.data(), nullptr, 1);
      },
      "must come after it"));
  // Shared children (a DAG: 2^depth paths) are refused; so is a root that is a child.
  {
    const int D = 40;
    Ensemble dag;
    for (int k = 0; k < D; ++k) {
      dag.left.push_back(k + 1);
      dag.right.push_back(k + 1);
      dag.feature.push_back(0);
      dag.threshold.push_back(0.5f);
      dag.default_left.push_back(1);
      dag.value.push_back(0.f);
    }
    dag.left.push_back(-1);
    dag.right.push_back(-1);
    dag.feature.push_back(0);
    dag.threshold.push_back(0.f);
    dag.default_left.push_back(1);
    dag.value.push_back(1.f);
    dag.roots.push_back(0);
    std::vector<float> Z(2, 0.f);
    std::vector<double> p2(2), b1(1);
    DC_EXPECT(dctest::throws_invalid(
        [&] {
          datacredit::tree_shap_interventional(dag.view(), Z.data(), 1, Z.data(), 1, 2, p2.data(),
                                               b1.data(), nullptr, 1);
        },
        "two parents"));
    Ensemble twice = e;
    twice.roots.push_back(twice.roots[0]);
    DC_EXPECT(dctest::throws_invalid(
        [&] {
          datacredit::tree_shap_interventional(twice.view(), X.data(), 1, X.data(), 1, 3,
                                               phi.data(), base.data(), nullptr, 1);
        },
        "roots[1]"));
  }
  // A chain 100k splits deep (left: leaf, right: next split) is walked without recursion,
  // on the per-pair path (2 references) and the grouped path (6): phi_0 = f(x) - mean f(r).
  {
    const int D = 100000;
    Ensemble chain;
    for (int k = 0; k < D; ++k) {
      const int32_t node = static_cast<int32_t>(chain.left.size());
      chain.left.push_back(node + 1);  // leaf
      chain.right.push_back(node + 2);
      chain.feature.push_back(0);
      chain.threshold.push_back(static_cast<float>(k));
      chain.default_left.push_back(1);
      chain.value.push_back(0.f);
      chain.left.push_back(-1);
      chain.right.push_back(-1);
      chain.feature.push_back(0);
      chain.threshold.push_back(0.f);
      chain.default_left.push_back(1);
      chain.value.push_back(static_cast<float>(k));
    }
    chain.left.push_back(-1);
    chain.right.push_back(-1);
    chain.feature.push_back(0);
    chain.threshold.push_back(0.f);
    chain.default_left.push_back(1);
    chain.value.push_back(-1.f);
    chain.roots.push_back(0);
    for (int n_refs : {2, 6}) {
      std::vector<float> x = {99998.5f, 3.f}, refs;
      for (int r = 0; r < n_refs; ++r) refs.insert(refs.end(), {static_cast<float>(r), 0.f});
      std::vector<double> p(2), b(1), f(1);
      datacredit::tree_shap_interventional(chain.view(), x.data(), 1, refs.data(), n_refs, 2,
                                           p.data(), b.data(), f.data(), 2);
      // x reaches the leaf of split k = 99999 (value 99999); reference r the one of split
      // r + 1 (value r + 1).
      double mean_fr = 0;
      for (int r = 0; r < n_refs; ++r) mean_fr += (r + 1.0) / n_refs;
      DC_EXPECT(std::abs(f[0] - 99999.0) < 1e-9);
      DC_EXPECT(std::abs(b[0] - mean_fr) < 1e-9);
      DC_EXPECT(std::abs(p[0] - (99999.0 - mean_fr)) < 1e-6);
      DC_EXPECT(p[1] == 0.0);
    }
  }
  // +inf goes right at every finite split, on the grouped path too (> 4 references).
  {
    Ensemble stump;
    stump.left = {1, -1, -1};
    stump.right = {2, -1, -1};
    stump.feature = {0, 0, 0};
    stump.threshold = {0.5f, 0.f, 0.f};
    stump.default_left = {1, 1, 1};
    stump.value = {0.f, 1.f, 10.f};
    stump.roots = {0};
    std::vector<float> x = {std::numeric_limits<float>::infinity()}, refs(6, 0.f);
    std::vector<double> p(1), b(1), f(1);
    datacredit::tree_shap_interventional(stump.view(), x.data(), 1, refs.data(), 6, 1, p.data(),
                                         b.data(), f.data(), 1);
    DC_EXPECT(f[0] == 10.0 && b[0] == 1.0 && p[0] == 9.0);
  }
  return dctest::finish("test_treeshap");
}
