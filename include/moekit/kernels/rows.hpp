// SPDX-License-Identifier: MIT
// ActivationRows: the input rows of a gate + up kernel call, either a
// contiguous block or rows picked from a larger matrix by index.
//
// NOTE: a routed expert's rows are scattered over the block's input. With an
// index the kernel gathers them while it packs them (rounds them to bf16
// pairs, quantises them to int8), so the block writes no gathered f32 copy
// (olmoe T = 512: 4096 rows, 32 MiB written and read again per forward) and
// needs no buffer for one. Kernels that read f32 rows in their tiles copy the
// rows into a per-call buffer instead (contiguous_rows), which stays in cache.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../core/dtype.hpp"
#include "../core/scratch_arena.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace kernels {

/// Row r of m: data + (index ? index[r] : r) · stride, K floats each.
struct ActivationRows {
  const float* data = nullptr;
  Index stride = 0;
  const std::int32_t* index = nullptr;  ///< null: rows 0..m-1 in order

  ActivationRows() = default;
  ActivationRows(const float* data_, Index stride_, const std::int32_t* index_ = nullptr) noexcept
      : data(data_), stride(stride_), index(index_) {}

  const float* row(Index r) const noexcept {
    return data + (index ? static_cast<Index>(index[r]) : r) * stride;
  }
};

namespace detail {
struct GatheredRowsTag;
}  // namespace detail

/// The m rows of K floats as one block with row stride lda: the rows
/// themselves when they are not indexed, else a copy in a per-call buffer.
inline const float* contiguous_rows(const ActivationRows& A, Index m, Index K, Index& lda) {
  if (!A.index) {
    lda = A.stride;
    return A.data;
  }
  float* buf = moekit::detail::thread_scratch<detail::GatheredRowsTag, float>(m * K);
  for (Index r = 0; r < m; ++r) std::copy(A.row(r), A.row(r) + K, buf + r * K);
  lda = K;
  return buf;
}

}  // namespace kernels
MOEKIT_NAMESPACE_END
