// SPDX-License-Identifier: MIT
// Local routing consistency of a trace (Liang et al., arXiv 2505.16056):
// SRP, segment routing best performance, and SCH, segment cache best hit
// rate, exactly as METHODS.md §5 defines them.
//
// NOTE: SRP(m) for a set of layers. For every layer l of the set and every
// window start w = 0 .. T-m (stride 1), c_e = |{t in [w, w+m) : e in ids[t][l]}|
// for each of the E experts. For a threshold τ in 0..m, summed over layers,
// windows and experts:
//     M(τ) = Σ [c_e ≥ τ]·c_e,   P(τ) = Σ [c_e ≥ τ]·m,   A = Σ c_e,
//     SRP  = max over τ of 2·M(τ) / (P(τ) + A)
// with one τ for the whole set (τ = 0 keeps all E experts; ties -> the
// smaller τ). The counts only need the histogram of c_e over (layer, window,
// expert) triples, which SrpCounts holds: histograms of several sequences add
// up (operator+=), so a corpus of samples pools exactly as the paper pools
// before the max. Cost O(L · T · (k + m)).
//
// SCH(m, C) for one layer is the hit rate of simulate_cache with
// SegmentOraclePolicy(m) and C experts (expert_cache.hpp has the exact
// protocol); whole-model SCH uses (layer, expert) pairs as ids, each token
// requesting its experts of every layer in layer order, with C·L entries.
// Empty slots (-1) are neither activations nor requests.
#pragma once

#include <cstdint>
#include <vector>

#include "../core/error.hpp"
#include "expert_cache.hpp"
#include "routing_trace.hpp"

MOEKIT_NAMESPACE_BEGIN

/// SRP of one set of counts: the value, its threshold and the counts behind it.
struct SrpResult {
  double srp = 0.0;
  /// The threshold τ that attains the maximum (smallest on ties).
  Index tau = 0;
  std::int64_t matches = 0;      ///< M(τ)
  std::int64_t predictions = 0;  ///< P(τ)
  std::int64_t activations = 0;  ///< A
};

/// Histogram of per-window expert counts: hist[c] = (layer, window, expert)
/// triples in which the expert was used by exactly c of the m tokens.
struct SrpCounts {
  Index m = 0;
  std::vector<std::int64_t> hist;  // [m + 1]

  SrpCounts() = default;
  explicit SrpCounts(Index segment_length) : m(segment_length) {
    detail::require(m >= 1, "SRP segment length m: expected >= 1, got ", m);
    hist.assign(static_cast<std::size_t>(m) + 1, 0);
  }

  /// Pools another histogram of the same m (another sequence, or other layers).
  SrpCounts& operator+=(const SrpCounts& o) {
    detail::require(o.m == m, "SRP counts: expected segment length ", m, ", got ", o.m);
    for (std::size_t c = 0; c < hist.size(); ++c) hist[c] += o.hist[c];
    return *this;
  }

  /// max over τ of 2·M(τ) / (P(τ) + A).
  SrpResult result() const {
    SrpResult best;
    std::int64_t A = 0;
    for (std::size_t c = 0; c < hist.size(); ++c) A += static_cast<std::int64_t>(c) * hist[c];
    best.activations = A;
    std::int64_t M = 0, N = 0;  // suffix sums over c >= τ
    std::vector<SrpResult> per_tau(hist.size());
    for (Index tau = m; tau >= 0; --tau) {
      const auto c = static_cast<std::size_t>(tau);
      M += static_cast<std::int64_t>(tau) * hist[c];
      N += hist[c];
      SrpResult& r = per_tau[c];
      r.tau = tau;
      r.matches = M;
      r.predictions = N * m;
      r.activations = A;
      const double denom = static_cast<double>(r.predictions + A);
      r.srp = denom > 0.0 ? 2.0 * static_cast<double>(M) / denom : 0.0;
    }
    best = per_tau.empty() ? best : per_tau[0];
    for (const SrpResult& r : per_tau)
      if (r.srp > best.srp) best = r;
    return best;
  }
};

/// The SRP histogram of layer l of a trace. Throws if T < m (no window).
inline SrpCounts srp_counts(const RoutingTrace& trace, Index m, Index layer) {
  SrpCounts out(m);
  detail::require(layer >= 0 && layer < trace.num_layers(), "SRP layer: expected [0, ",
                  trace.num_layers(), "), got ", layer);
  const Index T = trace.num_tokens(), E = trace.num_experts(), k = trace.top_k();
  detail::require(T >= m, "SRP: the trace has ", T, " tokens, fewer than the segment length m = ",
                  m, " (no window)");
  std::vector<Index> c(static_cast<std::size_t>(E), 0);
  std::vector<std::int64_t> live(static_cast<std::size_t>(m) + 1, 0);  // live[v] = experts with c_e = v >= 1
  const auto change = [&](std::int32_t e, Index delta) {
    Index& v = c[static_cast<std::size_t>(e)];
    if (v > 0) --live[static_cast<std::size_t>(v)];
    v += delta;
    if (v > 0) ++live[static_cast<std::size_t>(v)];
  };
  for (Index t = 0; t < T; ++t) {
    if (t >= m)  // the token leaving the window first, so no count exceeds m
      for (Index j = 0; j < k; ++j)
        if (trace(t - m, layer, j) >= 0) change(trace(t - m, layer, j), -1);
    for (Index j = 0; j < k; ++j)
      if (trace(t, layer, j) >= 0) change(trace(t, layer, j), +1);
    if (t + 1 >= m) {  // window [t - m + 1, t]
      std::int64_t used = 0;
      for (Index v = 1; v <= m; ++v) {
        out.hist[static_cast<std::size_t>(v)] += live[static_cast<std::size_t>(v)];
        used += live[static_cast<std::size_t>(v)];
      }
      out.hist[0] += E - used;
    }
  }
  return out;
}

/// SRP(m) of layer l.
inline SrpResult srp_layer(const RoutingTrace& trace, Index m, Index layer) {
  return srp_counts(trace, m, layer).result();
}

/// SRP(m) of every layer: [L].
inline std::vector<SrpResult> srp_per_layer(const RoutingTrace& trace, Index m) {
  std::vector<SrpResult> out;
  for (Index l = 0; l < trace.num_layers(); ++l) out.push_back(srp_layer(trace, m, l));
  return out;
}

/// SRP(m) of the whole model: counts pooled over all layers, one τ.
inline SrpResult srp(const RoutingTrace& trace, Index m) {
  SrpCounts all(m);
  for (Index l = 0; l < trace.num_layers(); ++l) all += srp_counts(trace, m, l);
  return all.result();
}

/// SCH(m, C) of layer l: hits and requests of the segment oracle with C experts.
inline CacheStats sch_layer(const RoutingTrace& trace, Index m, Index capacity, Index layer) {
  return simulate_cache(layer_requests(trace, layer), capacity, SegmentOraclePolicy(m));
}

/// SCH(m, C) of every layer: [L].
inline std::vector<CacheStats> sch_per_layer(const RoutingTrace& trace, Index m, Index capacity) {
  std::vector<CacheStats> out;
  for (Index l = 0; l < trace.num_layers(); ++l) out.push_back(sch_layer(trace, m, capacity, l));
  return out;
}

/// Whole-model SCH(m, C): (layer, expert) ids and a cache of C·L entries.
inline CacheStats sch(const RoutingTrace& trace, Index m, Index capacity) {
  detail::require(capacity >= 0, "SCH capacity C: expected >= 0, got ", capacity);
  return simulate_cache(model_requests(trace), capacity * trace.num_layers(),
                        SegmentOraclePolicy(m));
}

MOEKIT_NAMESPACE_END
