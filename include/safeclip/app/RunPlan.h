#pragma once
/// @file RunPlan.h  `safeclip plan`: the work plan of `run` on R ranks — rank groups, each patch's
/// tile plan (halo from pipeline::haloSigma over the warp headers; in comparewarp mode from
/// pipeline::compareWarpGeometry), the memory model's figures
/// (geom/MemoryBudget.h) per rank, the expected warp reads — computed without MPI exactly as `run`
/// computes it, as text or JSON (`plan --json`, read by scripts/submit.sh).
#include <cstdint>
#include <string>
#include <vector>

#include "safeclip/app/Config.h"
#include "safeclip/geom/MemoryBudget.h"
#include "safeclip/kernel/Box.h"

namespace safeclip::app {

/// One patch of a plan: the plan facts `run` uses (and reports in report.json) and the memory model's
/// figures (geom/MemoryBudget.h).
struct PatchPlan {
    std::string name;
    kernel::Box box;
    int warps = 0;        ///< in the manifest
    int warpsOpened = 0;  ///< whose header opens (the plan counts them all as used)
    int group = 0;
    std::vector<int> ranks;  ///< world ranks of the group (group rank i = ranks[i])
    /// haloSigma(): detect.psf_sigma, else the largest header PSF sigma; comparewarp: the model PSF
    /// sigma (pipeline::compareWarpGeometry)
    double haloSigma = 0;
    std::string haloSigmaSource;
    int halo = 0;
    int tileSize = 0;
    int tiles = 0;
    std::int64_t warpBytesRead = 0;  ///< expected, whole group (weights + trial + final [+ validation])
    int weightsRows = 0;             ///< rows per chunk, weights pass
    int trialRows = 0;               ///< rows per chunk, trial stacks (smallest over the tiles; 0: mean mode)
    int finalRows = 0;               ///< rows per chunk, final stack (smallest over the tiles)
    std::vector<geom::RankBudget> perRank;  ///< per group rank
    std::string error;  ///< the run's ConfigError when the budget is too small ("" = fits)
};

struct RankPlan {
    int tiles = 0;
    std::int64_t budgetBytes = 0;    ///< memory.max_per_rank
    std::int64_t peakBytes = 0;      ///< largest modelled stage footprint over its patches
    std::int64_t warpBytesRead = 0;  ///< expected, over its patches
    double pixelWarps = 0;           ///< final-stack work: Σ own tile area x warps
};

struct RunPlan {
    int nRanks = 1;
    int nGroups = 1;
    int shardIndex = 0;
    int shardCount = 1;
    std::string mode;  ///< coadd.mode
    std::int64_t budgetBytes = 0;
    std::vector<PatchPlan> patches;
    std::vector<RankPlan> ranks;
};

/// `safeclip plan`: the work plan of a run on nRanks ranks (groups, patches, tiles per rank, memory
/// per rank, expected reads), computed without MPI exactly as `run` computes it: the same groups,
/// tile plans (halo from haloSigma() over the warp headers) and memory model. With shardCount > 1
/// only the patches of `run --shard shardIndex/shardCount`.
/// @throws ConfigError (no manifest, bad -n), InputError (unreadable manifest)
RunPlan makePlan(const Config& cfg, int nRanks, int shardIndex = 0, int shardCount = 1);
/// The plan as text (`safeclip plan`) and as JSON (`safeclip plan --json`).
std::string planText(const RunPlan& plan);
std::string planJson(const RunPlan& plan);
std::string describePlan(const Config& cfg, int nRanks);  ///< planText(makePlan(cfg, nRanks))

}  // namespace safeclip::app
