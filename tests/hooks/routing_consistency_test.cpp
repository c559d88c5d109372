// SPDX-License-Identifier: MIT
// SRP, SCH and the expert-cache policies: hand-enumerated cases, and
// brute-force re-implementations of the METHODS.md §5 text on random traces.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include <moekit/hooks/expert_cache.hpp>
#include <moekit/hooks/routing_consistency.hpp>

#include "hooks_test_util.hpp"

namespace {

using hooks_test::layer_trace;
using moekit::Index;
using moekit::RoutingTrace;
using moekit_test::error_message;

// ---------------------------------------------------------------- SRP by hand

TEST(Srp, OneLayerByHand) {
  // E = 4, k = 1, m = 2, ids 0 0 1 1: windows {0,0} {0,1} {1,1}.
  // c_e histogram over (window, expert): c = 2 twice, c = 1 twice, c = 0 eight times.
  // τ = 0: M = 6, P = 12·2 = 24, A = 6 -> 12/30.  τ = 1: M = 6, P = 4·2 -> 12/14.
  // τ = 2: M = 4, P = 2·2 -> 8/10.  SRP = 6/7 at τ = 1.
  const RoutingTrace tr = layer_trace(4, {{0}, {0}, {1}, {1}});
  const moekit::SrpCounts c = moekit::srp_counts(tr, 2, 0);
  EXPECT_EQ(c.hist, (std::vector<std::int64_t>{8, 2, 2}));
  const moekit::SrpResult r = c.result();
  EXPECT_EQ(r.tau, 1);
  EXPECT_EQ(r.matches, 6);
  EXPECT_EQ(r.predictions, 8);
  EXPECT_EQ(r.activations, 6);
  EXPECT_DOUBLE_EQ(r.srp, 12.0 / 14.0);
}

TEST(Srp, PerfectlyConsistentIsOneAndTiesTakeTheSmallerTau) {
  // Every token uses the same two experts: τ = 1 and τ = m both give F1 = 1.
  const RoutingTrace tr = layer_trace(8, {{3, 5}, {5, 3}, {3, 5}, {3, 5}, {5, 3}});
  const moekit::SrpResult r = moekit::srp_layer(tr, 4, 0);
  EXPECT_DOUBLE_EQ(r.srp, 1.0);
  EXPECT_EQ(r.tau, 1);
}

TEST(Srp, TwoLayersShareOneTau) {
  // Layer 0: 0 0 1 1 (as above); layer 1: 0 1 2 3 (no repeats), E = 4, m = 2.
  // Layer 1 histogram: c = 1 six times, c = 0 six times.
  // Pooled: hist = {14, 8, 2}; A = 12.
  // τ = 0: 24/(48 + 12) = 0.4; τ = 1: M = 12, P = 20 -> 24/32 = 0.75; τ = 2: M = 4, P = 4 -> 8/16.
  std::vector<std::int32_t> ids{0, 0, 0, 1, 1, 2, 1, 3};
  const RoutingTrace tr(ids, 4, 2, 1, 4);
  const moekit::SrpResult all = moekit::srp(tr, 2);
  EXPECT_DOUBLE_EQ(all.srp, 0.75);
  EXPECT_EQ(all.tau, 1);
  const auto per = moekit::srp_per_layer(tr, 2);
  ASSERT_EQ(per.size(), 2u);
  EXPECT_DOUBLE_EQ(per[0].srp, 12.0 / 14.0);
  // Layer 1: τ = 1: M = 6, P = 12, A = 6 -> 12/18; τ = 0: 12/(24 + 6); τ = 2: 0.
  EXPECT_DOUBLE_EQ(per[1].srp, 12.0 / 18.0);
}

TEST(Srp, Errors) {
  const RoutingTrace tr = layer_trace(4, {{0}, {1}});
  EXPECT_EQ(error_message([&] { moekit::srp(tr, 3); }),
            "moekit: SRP: the trace has 2 tokens, fewer than the segment length m = 3 (no window)");
  EXPECT_EQ(error_message([&] { moekit::srp(tr, 0); }),
            "moekit: SRP segment length m: expected >= 1, got 0");
  EXPECT_EQ(error_message([&] { moekit::srp_layer(tr, 1, 1); }), "moekit: SRP layer: expected [0, 1), got 1");
}

// Straight from the text: every τ, every window, every expert, counting by scanning.
double brute_srp(const RoutingTrace& tr, Index m, const std::vector<Index>& layers) {
  double best = -1;
  for (Index tau = 0; tau <= m; ++tau) {
    std::int64_t M = 0, P = 0, A = 0;
    for (const Index l : layers)
      for (Index w = 0; w + m <= tr.num_tokens(); ++w)
        for (std::int32_t e = 0; e < tr.num_experts(); ++e) {
          std::int64_t c = 0;
          for (Index t = w; t < w + m; ++t)
            for (Index j = 0; j < tr.top_k(); ++j) c += tr(t, l, j) == e ? 1 : 0;
          if (c >= tau) {
            M += c;
            P += m;
          }
          A += c;
        }
    best = std::max(best, 2.0 * static_cast<double>(M) / static_cast<double>(P + A));
  }
  return best;
}

TEST(Srp, MatchesBruteForceOnRandomTraces) {
  std::mt19937 gen(1);
  for (int trial = 0; trial < 300; ++trial) {
    const Index E = 2 + static_cast<Index>(gen() % 6), k = 1 + static_cast<Index>(gen() % std::min<Index>(E, 3));
    const Index L = 1 + static_cast<Index>(gen() % 3), T = 1 + static_cast<Index>(gen() % 14);
    const Index m = 1 + static_cast<Index>(gen() % static_cast<std::uint32_t>(T));
    RoutingTrace tr = hooks_test::random_trace(T, L, k, E, gen());
    if (trial % 3 == 0) tr(0, 0, k - 1) = -1;  // an empty slot now and then
    std::vector<Index> all;
    for (Index l = 0; l < L; ++l) {
      all.push_back(l);
      EXPECT_NEAR(moekit::srp_layer(tr, m, l).srp, brute_srp(tr, m, {l}), 1e-12);
    }
    EXPECT_NEAR(moekit::srp(tr, m).srp, brute_srp(tr, m, all), 1e-12) << "trial " << trial;
  }
}

TEST(Srp, CountsPoolOverSequences) {
  const RoutingTrace a = hooks_test::random_trace(10, 1, 2, 6, 3), b = hooks_test::random_trace(12, 1, 2, 6, 4);
  moekit::SrpCounts pooled = moekit::srp_counts(a, 4, 0);
  pooled += moekit::srp_counts(b, 4, 0);
  std::int64_t windows = 0;
  for (const auto h : pooled.hist) windows += h;
  EXPECT_EQ(windows, (7 + 9) * 6);  // (T - m + 1) windows x E experts, both sequences
  EXPECT_EQ(pooled.result().activations, (7 + 9) * 2 * 4);
}

// ----------------------------------------------------------- caches by hand

TEST(ExpertCache, OracleLruLfuByHand) {
  // k = 1, E = 3, ids 0 1 2 0 2 1, C = 2.
  // Oracle (m = 2): t0, t1 fill (hits); t2 misses and evicts 1 (no use in
  // tokens 2..3, expert 0 has one); t3 (0) and t4 (2) hit; t5 (1) misses.
  // -> 4/6. LRU: t2 evicts 0, t3 misses and evicts 1, t4 hits, t5 misses -> 3/6.
  // LFU: the same choices as LRU here (equal counts, ties to LRU) -> 3/6.
  const RoutingTrace tr = layer_trace(3, {{0}, {1}, {2}, {0}, {2}, {1}});
  const auto req = moekit::layer_requests(tr, 0);
  const auto oracle = moekit::simulate_cache(req, 2, moekit::SegmentOraclePolicy(2));
  EXPECT_EQ(oracle.hits, 4);
  EXPECT_EQ(oracle.requests, 6);
  EXPECT_EQ(moekit::sch_layer(tr, 2, 2, 0).hits, 4);
  EXPECT_EQ(moekit::simulate_cache(req, 2, moekit::LruPolicy()).hits, 3);
  EXPECT_EQ(moekit::simulate_cache(req, 2, moekit::LfuPolicy()).hits, 3);
}

TEST(ExpertCache, UsesTakenEarlierInTheTokenNoLongerCount) {
  // k = 2, E = 4, C = 2, m = 2; tokens [0,1] [2,0] [0,3] [2,1].
  // t0: both fill (2 hits). t1: 2 misses, 0 hits; inserting 2 evicts 1 (no use in
  //     tokens 1..2; 0 has two). t2: 0 hits, 3 misses; inserting 3 after 0 was
  //     served: 0 has no use left in tokens 2..3, 2 has one (token 3) -> evict 0.
  //     (Were the served use still counted, 0 and 2 would tie and LRU would
  //     evict 2.) t3: 2 hits, 1 misses. -> 5/8.
  const RoutingTrace tr = layer_trace(4, {{0, 1}, {2, 0}, {0, 3}, {2, 1}});
  const moekit::CacheStats s = moekit::sch_layer(tr, 2, 2, 0);
  EXPECT_EQ(s.hits, 5);
  EXPECT_EQ(s.requests, 8);
  EXPECT_DOUBLE_EQ(s.hit_rate(), 5.0 / 8.0);
}

TEST(ExpertCache, FillingCountsAsHitsOnlyUpToC) {
  // C = 2, one token requesting three new experts: the first two are hits
  // (the cache is still filling), the third is not.
  const RoutingTrace tr = layer_trace(5, {{0, 1, 2}});
  EXPECT_EQ(moekit::sch_layer(tr, 1, 2, 0).hits, 2);
  EXPECT_EQ(moekit::sch_layer(tr, 1, 0, 0).hits, 0);
  EXPECT_EQ(moekit::sch_layer(tr, 1, 3, 0).hits, 3);
}

TEST(ExpertCache, WholeModelUsesLayerExpertPairs) {
  // Two layers, E = 2, k = 1. Requests per token: (l0, e), (l1, e') as ids e and 2 + e'.
  std::vector<std::int32_t> ids{0, 1, 1, 1, 0, 0};  // t0: (0,0) (1,1); t1: (0,1) (1,1); t2: (0,0) (1,0)
  const RoutingTrace tr(ids, 3, 2, 1, 2);
  const auto req = moekit::model_requests(tr);
  EXPECT_EQ(req.num_ids, 4);
  EXPECT_EQ(req.ids, (std::vector<std::int32_t>{0, 3, 1, 3, 0, 2}));
  // C = 1 per layer -> 2 entries. t0 fills (2 hits). t1: id 1 misses (a third
  // distinct id), id 3 hits. Inserting 1 with m = 3 (tokens 1..2 left): 0 has
  // one use to come (t2), 3 one (t1, slot 1): a tie, LRU evicts 0.
  // t2: 0 misses, 2 misses. -> 3 hits of 6.
  EXPECT_EQ(moekit::sch(tr, 3, 1).hits, 3);
  EXPECT_EQ(moekit::sch(tr, 3, 1).requests, 6);
}

// The SCH oracle written out literally: positions scanned at every eviction.
moekit::CacheStats brute_sch(const moekit::CacheRequests& r, Index m, Index C) {
  std::vector<std::int32_t> cache;
  std::vector<std::int64_t> stamp(static_cast<std::size_t>(r.num_ids), 0);
  std::vector<bool> seen(static_cast<std::size_t>(r.num_ids), false);
  std::int64_t clock = 0, distinct = 0;
  moekit::CacheStats s;
  const Index T = r.num_tokens();
  for (Index t = 0; t < T; ++t) {
    const Index b = r.token_begin[static_cast<std::size_t>(t)], e = r.token_begin[static_cast<std::size_t>(t) + 1];
    for (Index p = b; p < e; ++p) {
      const std::int32_t id = r.ids[static_cast<std::size_t>(p)];
      const bool resident = std::find(cache.begin(), cache.end(), id) != cache.end();
      if (resident || (!seen[static_cast<std::size_t>(id)] && distinct < C)) ++s.hits;
      if (!seen[static_cast<std::size_t>(id)]) {
        seen[static_cast<std::size_t>(id)] = true;
        ++distinct;
      }
      ++s.requests;
    }
    const Index wend = r.token_begin[static_cast<std::size_t>(std::min(T, t + m))];
    for (Index p = b; p < e; ++p) {
      const std::int32_t id = r.ids[static_cast<std::size_t>(p)];
      if (C > 0 && std::find(cache.begin(), cache.end(), id) == cache.end()) {
        if (static_cast<Index>(cache.size()) == C) {
          std::size_t victim = 0;
          std::int64_t best_uses = -1, best_stamp = 0;
          for (std::size_t i = 0; i < cache.size(); ++i) {
            std::int64_t uses = 0;
            for (Index q = p; q < wend; ++q) uses += r.ids[static_cast<std::size_t>(q)] == cache[i] ? 1 : 0;
            const std::int64_t st = stamp[static_cast<std::size_t>(cache[i])];
            if (best_uses < 0 || uses < best_uses || (uses == best_uses && st < best_stamp)) {
              best_uses = uses;
              best_stamp = st;
              victim = i;
            }
          }
          cache[victim] = id;
        } else {
          cache.push_back(id);
        }
      }
      stamp[static_cast<std::size_t>(id)] = ++clock;
    }
  }
  return s;
}

TEST(ExpertCache, OracleMatchesBruteForceOnTinyRandomTraces) {
  std::mt19937 gen(7);
  for (int trial = 0; trial < 2000; ++trial) {
    const Index E = 2 + static_cast<Index>(gen() % 7), k = 1 + static_cast<Index>(gen() % std::min<Index>(E, 3));
    const Index L = 1 + static_cast<Index>(gen() % 2), T = 1 + static_cast<Index>(gen() % 16);
    const Index m = 1 + static_cast<Index>(gen() % 6), C = static_cast<Index>(gen() % static_cast<std::uint32_t>(E + 1));
    const RoutingTrace tr = hooks_test::random_trace(T, L, k, E, gen());
    for (Index l = 0; l < L; ++l) {
      const auto got = moekit::sch_layer(tr, m, C, l);
      const auto want = brute_sch(moekit::layer_requests(tr, l), m, C);
      ASSERT_EQ(got.hits, want.hits) << "trial " << trial << " layer " << l;
      ASSERT_EQ(got.requests, want.requests);
    }
    const auto got = moekit::sch(tr, m, C);
    const auto want = brute_sch(moekit::model_requests(tr), m, C * L);
    ASSERT_EQ(got.hits, want.hits) << "trial " << trial << " (whole model)";
  }
}

TEST(ExpertCache, HitRatesGrowWithCapacity) {
  // The SCH oracle and LRU are stack algorithms (the reference code computes
  // every C from one ranking): hits never drop when C grows, and C = E hits
  // everything. (The oracle is not Belady's: on some streams LRU beats it.)
  std::mt19937 gen(3);
  std::vector<std::vector<std::int32_t>> rows;
  std::int32_t cur = 0;
  for (int t = 0; t < 400; ++t) {
    if (gen() % 8 == 0) cur = static_cast<std::int32_t>(gen() % 16);
    const std::int32_t other = static_cast<std::int32_t>((cur + 1 + gen() % 15) % 16);
    rows.push_back({cur, other});
  }
  const RoutingTrace tr = layer_trace(16, rows);
  const auto req = moekit::layer_requests(tr, 0);
  EXPECT_EQ(moekit::sch_layer(tr, 16, 16, 0).hits, 800);
  std::int64_t prev_oracle = 0, prev_lru = 0;
  for (Index C = 1; C <= 16; ++C) {
    const std::int64_t oracle = moekit::sch_layer(tr, 16, C, 0).hits;
    const std::int64_t lru = moekit::simulate_cache(req, C, moekit::LruPolicy()).hits;
    EXPECT_GE(oracle, prev_oracle) << C;
    EXPECT_GE(lru, prev_lru) << C;
    prev_oracle = oracle;
    prev_lru = lru;
  }
}

TEST(ExpertCache, Errors) {
  moekit::CacheRequests r;
  r.num_ids = 3;
  const std::int32_t bad[] = {1, 3};
  EXPECT_EQ(error_message([&] { r.add_token(bad, 2); }), "moekit: cache requests: expected an id in [0, 3), got 3");
  const std::int32_t twice[] = {1, 1};
  EXPECT_EQ(error_message([&] { r.add_token(twice, 2); }), "moekit: cache requests: token 0 requests id 1 twice");
  EXPECT_EQ(error_message([&] { moekit::SegmentOraclePolicy p(0); }),
            "moekit: segment oracle policy m: expected >= 1, got 0");
  EXPECT_EQ(error_message([&] { moekit::simulate_cache(r, -1, moekit::LruPolicy()); }),
            "moekit: cache capacity: expected >= 0, got -1");
}

}  // namespace
