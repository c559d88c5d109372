// SPDX-License-Identifier: MIT
// SwiGluExperts: the SwiGLU expert bank, GatedExperts<SiluGate> (see gated_experts.hpp).
#pragma once

#include "gated_experts.hpp"
