#pragma once
/// @file MemoryPlan.h  TEMPORARY: the row-chunk sizing of the stages (to be replaced by
/// geom/MemoryBudget.h).
#include <cstdint>
#include <string>

#include "safeclip/kernel/Box.h"

namespace safeclip::pipeline {

/// Cap of the warp buffers of one row chunk (all warps together; weights, trial and final stacks).
inline constexpr std::int64_t kChunkCap = 8LL << 20;

/// Rows per chunk of the weights pass over `patch`. @throws ConfigError
int weightsChunkRows(const kernel::Box& patch, std::int64_t budget);

/// Rows per chunk of `box` for nWarps warps beside `fixed` bytes. @throws ConfigError naming the patch
int stackChunkRows(const kernel::Box& box, int nWarps, std::int64_t fixed, std::int64_t budget,
                   const std::string& patchName, int tileSize, const kernel::Box& patchBox);

}  // namespace safeclip::pipeline
