// SPDX-License-Identifier: MIT
// Expert-cache simulation over a routing trace: how often would the experts a
// token needs already be resident in a cache of C experts, under a given
// eviction policy. The oracle policy is the one SCH defines (METHODS.md §5).
//
// NOTE: the protocol (identical for every policy, so they compare fairly):
//   for each token t, in order:
//     1. lookup  all of the token's requests see the cache as it stands before
//                token t. A request is a hit if its expert is resident, or if
//                it was never requested before and fewer than C distinct
//                experts were requested before it (the cache is still filling;
//                earlier new experts of the same token count).
//     2. update  the token's experts enter one by one in request (top-k) order:
//                a non-resident expert is inserted; if the cache is full it
//                first evicts the resident with the smallest policy key, ties
//                going to the least recently used (every use, hit or insert,
//                gets its own timestamp).
//   hit rate = hits / requests.
// Policies differ only in the key: LruPolicy 0 (pure recency), LfuPolicy the
// number of uses so far, SegmentOraclePolicy(m) the number of uses still to
// come in tokens t .. t+m-1 (uses already served earlier in token t's order no
// longer count). A policy is any type with
//   void reset(const CacheRequests&);           before the first token
//   void begin_token(Index t);                  before token t's update step
//   std::int64_t key(std::int32_t id) const;    eviction key of a resident
//   void on_use(std::int32_t id, Index pos);    after request `pos` was served
// Cost: O(R · C) for R requests (each eviction scans the residents).
#pragma once

#include <cstdint>
#include <vector>

#include "../core/error.hpp"
#include "routing_trace.hpp"

MOEKIT_NAMESPACE_BEGIN

/// Expert requests grouped by token: ids in [0, num_ids), in request order.
struct CacheRequests {
  Index num_ids = 0;
  /// [R] every request, token after token.
  std::vector<std::int32_t> ids;
  /// [T + 1] token t's requests are ids[token_begin[t] .. token_begin[t + 1]).
  std::vector<Index> token_begin{0};

  Index num_tokens() const noexcept { return static_cast<Index>(token_begin.size()) - 1; }
  Index num_requests() const noexcept { return static_cast<Index>(ids.size()); }

  /// Appends one token's requests (distinct ids in [0, num_ids)).
  void add_token(const std::int32_t* req, Index n) {
    for (Index i = 0; i < n; ++i) {
      detail::require(req[i] >= 0 && req[i] < num_ids, "cache requests: expected an id in [0, ",
                      num_ids, "), got ", req[i]);
      for (Index j = 0; j < i; ++j)
        detail::require(req[j] != req[i], "cache requests: token ", num_tokens(), " requests id ",
                        req[i], " twice");
      ids.push_back(req[i]);
    }
    token_begin.push_back(static_cast<Index>(ids.size()));
  }
};

/// The requests of one layer of a trace: ids are expert ids, empty slots skipped.
inline CacheRequests layer_requests(const RoutingTrace& trace, Index layer) {
  detail::require(layer >= 0 && layer < trace.num_layers(), "cache requests layer: expected [0, ",
                  trace.num_layers(), "), got ", layer);
  CacheRequests r;
  r.num_ids = trace.num_experts();
  r.ids.reserve(static_cast<std::size_t>(trace.num_tokens() * trace.top_k()));
  std::vector<std::int32_t> buf;
  for (Index t = 0; t < trace.num_tokens(); ++t) {
    buf.clear();
    for (Index j = 0; j < trace.top_k(); ++j)
      if (trace(t, layer, j) >= 0) buf.push_back(trace(t, layer, j));
    r.add_token(buf.data(), static_cast<Index>(buf.size()));
  }
  return r;
}

/// The requests of the whole model: (layer l, expert e) is id l·E + e, and
/// each token requests its experts of every layer in layer order.
inline CacheRequests model_requests(const RoutingTrace& trace) {
  CacheRequests r;
  const Index E = trace.num_experts(), L = trace.num_layers();
  r.num_ids = E * L;
  r.ids.reserve(static_cast<std::size_t>(trace.num_tokens() * L * trace.top_k()));
  std::vector<std::int32_t> buf;
  for (Index t = 0; t < trace.num_tokens(); ++t) {
    buf.clear();
    for (Index l = 0; l < L; ++l)
      for (Index j = 0; j < trace.top_k(); ++j)
        if (trace(t, l, j) >= 0) buf.push_back(static_cast<std::int32_t>(l * E + trace(t, l, j)));
    r.add_token(buf.data(), static_cast<Index>(buf.size()));
  }
  return r;
}

/// Hits and requests of a simulation (they add up over sequences).
struct CacheStats {
  std::int64_t hits = 0;
  std::int64_t requests = 0;
  /// hits / requests (0 when there was no request).
  double hit_rate() const noexcept {
    return requests ? static_cast<double>(hits) / static_cast<double>(requests) : 0.0;
  }
  CacheStats& operator+=(const CacheStats& o) noexcept {
    hits += o.hits;
    requests += o.requests;
    return *this;
  }
};

/// Least recently used.
struct LruPolicy {
  void reset(const CacheRequests&) {}
  void begin_token(Index) {}
  std::int64_t key(std::int32_t) const noexcept { return 0; }
  void on_use(std::int32_t, Index) {}
};

/// Least frequently used (uses since the start of the stream), ties to LRU.
class LfuPolicy {
 public:
  void reset(const CacheRequests& r) { uses_.assign(static_cast<std::size_t>(r.num_ids), 0); }
  void begin_token(Index) {}
  std::int64_t key(std::int32_t id) const noexcept { return uses_[static_cast<std::size_t>(id)]; }
  void on_use(std::int32_t id, Index) { ++uses_[static_cast<std::size_t>(id)]; }

 private:
  std::vector<std::int64_t> uses_;  // [num_ids]
};

/// SCH's oracle with m tokens of future knowledge: evicts the resident with the
/// fewest uses still to come in tokens t .. t+m-1, ties to LRU.
class SegmentOraclePolicy {
 public:
  explicit SegmentOraclePolicy(Index m) : m_(m) {
    detail::require(m >= 1, "segment oracle policy m: expected >= 1, got ", m);
  }
  Index segment_length() const noexcept { return m_; }

  void reset(const CacheRequests& r) {
    r_ = &r;
    future_.assign(static_cast<std::size_t>(r.num_ids), 0);
    // Tokens 0 .. m-2 now; begin_token(t) adds token t + m - 1.
    for (Index t = 0; t + 1 < m_ && t < r.num_tokens(); ++t) add(t);
  }
  void begin_token(Index t) {
    if (t + m_ - 1 < r_->num_tokens()) add(t + m_ - 1);
  }
  std::int64_t key(std::int32_t id) const noexcept { return future_[static_cast<std::size_t>(id)]; }
  void on_use(std::int32_t id, Index) { --future_[static_cast<std::size_t>(id)]; }

 private:
  void add(Index t) {
    for (Index p = r_->token_begin[static_cast<std::size_t>(t)];
         p < r_->token_begin[static_cast<std::size_t>(t) + 1]; ++p)
      ++future_[static_cast<std::size_t>(r_->ids[static_cast<std::size_t>(p)])];
  }

  Index m_;
  const CacheRequests* r_ = nullptr;
  std::vector<std::int64_t> future_;  // [num_ids] uses left in the window
};

/// Simulates a cache of `capacity` entries over the requests (see the NOTE).
template <class Policy>
CacheStats simulate_cache(const CacheRequests& r, Index capacity, Policy policy) {
  detail::require(capacity >= 0, "cache capacity: expected >= 0, got ", capacity);
  const auto n_ids = static_cast<std::size_t>(r.num_ids);
  std::vector<char> resident(n_ids, 0), seen(n_ids, 0);
  std::vector<std::int64_t> stamp(n_ids, 0);
  std::vector<std::int32_t> slots;  // resident ids, at most `capacity`
  slots.reserve(static_cast<std::size_t>(capacity));
  std::int64_t clock = 0, distinct = 0;
  CacheStats s;
  policy.reset(r);
  for (Index t = 0; t < r.num_tokens(); ++t) {
    const Index b = r.token_begin[static_cast<std::size_t>(t)],
                e = r.token_begin[static_cast<std::size_t>(t) + 1];
    for (Index p = b; p < e; ++p) {  // 1. lookup
      const auto id = static_cast<std::size_t>(r.ids[static_cast<std::size_t>(p)]);
      if (resident[id] || (!seen[id] && distinct < capacity)) ++s.hits;
      if (!seen[id]) {
        seen[id] = 1;
        ++distinct;
      }
    }
    s.requests += e - b;
    policy.begin_token(t);
    for (Index p = b; p < e; ++p) {  // 2. update
      const std::int32_t id = r.ids[static_cast<std::size_t>(p)];
      const auto uid = static_cast<std::size_t>(id);
      if (!resident[uid] && capacity > 0) {
        if (static_cast<Index>(slots.size()) == capacity) {
          std::size_t victim = 0;
          std::int64_t best_key = policy.key(slots[0]);
          for (std::size_t i = 1; i < slots.size(); ++i) {
            const std::int64_t k = policy.key(slots[i]);
            if (k < best_key || (k == best_key && stamp[static_cast<std::size_t>(slots[i])] <
                                                      stamp[static_cast<std::size_t>(slots[victim])])) {
              best_key = k;
              victim = i;
            }
          }
          const auto out = static_cast<std::size_t>(slots[victim]);
          resident[out] = 0;
          slots[victim] = id;
        } else {
          slots.push_back(id);
        }
        resident[uid] = 1;
      }
      stamp[uid] = ++clock;
      policy.on_use(id, p);
    }
  }
  return s;
}

MOEKIT_NAMESPACE_END
