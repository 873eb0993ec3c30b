#pragma once
/// @file PatchCoadd.h  SafeClip on one patch (spec §3–§8), single rank, streaming the warps in
/// row chunks under the memory budget.
///
/// Reads: pass 0 reads each warp's VARIANCE and MASK (weights, §3); pass 1 reads all three
/// planes once for both trial stacks (§5) and keeps each warp's bad and DETECTED pixels as spans
/// (§6.2); pass 2 reads all three planes for the final stack (§7.2). Upstream reads five times.
#include <cstdint>
#include <string>
#include <vector>

#include "safeclip/app/Config.h"
#include "safeclip/kernel/Box.h"

namespace safeclip::app {

struct WarpInput {
    std::int64_t visit = -1;  ///< -1: take VISIT/EXPID from the header, else the warp's position
    std::string path;
};

/// What happened to one patch (for logs and the run summary).
struct PatchResult {
    std::string name;
    std::string outputPath;
    int nWarps = 0;
    int nUsed = 0;
    std::int64_t nFootprints = 0;         ///< difference-image footprints
    std::int64_t nClippedFootprints = 0;  ///< footprints clipped in at least one warp
    std::int64_t nBigFootprints = 0;
    std::int64_t nClippedWarpPixels = 0;   ///< Σ over warps of CLIPPED pixels
    std::int64_t nCoaddClippedPixels = 0;  ///< coadd pixels with CLIPPED
    double seconds = 0;
};

/// The configuration keys that change pixels, as "key = value" lines (written to the coadd's CONFIG
/// table). Execution keys (memory, tiles, logging, paths, policies) are excluded so that outputs are
/// byte-identical across budgets, tile sizes and rank counts.
std::vector<std::string> scienceConfig(const Config& cfg);
/// FNV-1a-64 hash of scienceConfig() (the coadd's SCCFGHSH card; used by --resume).
std::string scienceConfigHash(const Config& cfg);

/// Coadd one patch and write `outPath` atomically.
/// @param box the patch box; an empty box means "the warps' common box" (all warps must agree).
/// @throws InputError, ConfigError, OutputError
PatchResult coaddPatch(const std::string& name, const kernel::Box& box, const std::vector<WarpInput>& warps,
                       const Config& cfg, const std::string& outPath);

}  // namespace safeclip::app
