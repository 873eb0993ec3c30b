#pragma once
/// @file Runner.h  `safeclip run`: many patches from a manifest over MPI ranks.
///
/// Patches are assigned to ranks by geom::assignToRanks (cost = area x warps), so every rank
/// computes the same plan without talking; each rank coadds its patches (PatchCoadd) and writes
/// <output.dir>/<patch>.fits atomically. A failing patch is logged with its rank and does not stop
/// the others; at the end all ranks agree on the exit code (no rank is left in a collective).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "safeclip/app/Config.h"
#include "safeclip/parallel/Comm.h"

namespace safeclip::app {

struct RunOptions {
    bool resume = false;   ///< skip finished patches, reload checkpoints of unfinished ones
    bool restart = false;  ///< discard outputs and checkpoints made with another config or input list
    int shardIndex = 0;    ///< --shard K/N: only patches with manifest index i % N == K
    int shardCount = 1;
};

/// Parse "K/N" (0 <= K < N). @throws ConfigError
std::pair<int, int> parseShard(const std::string& text);

/// Collective over comm. Returns the process exit code (same on every rank).
/// Before any work, world rank 0 refuses an output that is an input (refuseOutputsThatAreInputs,
/// exit 2) and takes the lock on output.dir (OutputDirLock, exit 4 naming the holder): OutputGuards.h.
/// The plan is RunPlan.h's, resume decisions Resume.h's, report.json RunReport.h's.
int runManifest(const Config& cfg, const RunOptions& opts, const parallel::Comm& comm);

}  // namespace safeclip::app
