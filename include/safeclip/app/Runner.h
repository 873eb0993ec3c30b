#pragma once
/// @file Runner.h  `safeclip run`: many patches from a manifest over MPI ranks.
///
/// Patches are assigned to ranks by geom::assignToRanks (cost = area x warps), so every rank
/// computes the same plan without talking; each rank coadds its patches (PatchCoadd) and writes
/// <output.dir>/<patch>.fits atomically. A failing patch is logged with its rank and does not stop
/// the others; at the end all ranks agree on the exit code (no rank is left in a collective).
#include <string>

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

/// `safeclip plan`: the work plan of a run on nRanks ranks (groups, patches, tiles per rank,
/// estimated memory per rank, expected reads), computed without MPI exactly as `run` computes it.
/// The detection halo uses detect.psf_sigma, or the first warp's PSF card of each patch.
std::string describePlan(const Config& cfg, int nRanks);

/// Collective over comm. Returns the process exit code (same on every rank).
int runManifest(const Config& cfg, const RunOptions& opts, const parallel::Comm& comm);

}  // namespace safeclip::app
