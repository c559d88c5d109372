// SPDX-License-Identifier: MIT
// Umbrella header: everything public in moekit.
#pragma once

#include "config.hpp"
#include "version.hpp"

#include "core/aligned_buffer.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/scratch_arena.hpp"
#include "core/tensor.hpp"

#include "kernels/cpu_features.hpp"
#include "kernels/dispatch.hpp"

#include "parallel/executor.hpp"

#include "router/capacity.hpp"
#include "router/dynamic_k.hpp"
#include "router/expert_choice.hpp"
#include "router/grouped_topk.hpp"
#include "router/losses.hpp"
#include "router/router.hpp"
#include "router/routing_plan.hpp"
#include "router/scoring.hpp"
#include "router/sparsemixer.hpp"
#include "router/steering.hpp"
#include "router/topk.hpp"

#include "expert/activation.hpp"
#include "expert/gated_experts.hpp"
#include "expert/mlp_experts.hpp"
#include "expert/shared_experts.hpp"
#include "expert/swiglu_experts.hpp"

#include "combine/dispatch.hpp"
#include "combine/weighted_sum.hpp"

#include "block/moe_block.hpp"
#include "block/moe_layer.hpp"
#include "block/presets.hpp"
#include "block/router_gradients.hpp"

#include "io/tensor_source.hpp"

#include "hooks/expert_cache.hpp"
#include "hooks/expert_clustering.hpp"
#include "hooks/expert_importance.hpp"
#include "hooks/expert_merging.hpp"
#include "hooks/expert_pruning.hpp"
#include "hooks/group_quantization.hpp"
#include "hooks/layer_transitions.hpp"
#include "hooks/mixed_precision.hpp"
#include "hooks/observer.hpp"
#include "hooks/observer_tee.hpp"
#include "hooks/route_only_observer.hpp"
#include "hooks/routing_consistency.hpp"
#include "hooks/routing_stats.hpp"
#include "hooks/routing_trace.hpp"
#include "hooks/trace_file.hpp"

#include "reference/reference.hpp"
