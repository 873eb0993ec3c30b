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
#include "safeclip/geom/MemoryBudget.h"
#include "safeclip/kernel/Box.h"
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

/// One patch of a plan: the plan facts `run` uses (and reports in report.json) and the memory model's
/// figures (geom/MemoryBudget.h).
struct PatchPlan {
    std::string name;
    kernel::Box box;
    int warps = 0;        ///< in the manifest
    int warpsOpened = 0;  ///< whose header opens (the plan counts them all as used)
    int group = 0;
    std::vector<int> ranks;  ///< world ranks of the group (group rank i = ranks[i])
    double haloSigma = 0;    ///< haloSigma(): detect.psf_sigma, else the largest header PSF sigma
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

/// Collective over comm. Returns the process exit code (same on every rank).
/// Before any work, world rank 0 refuses an output that is an input (outputsReplacingInputs, exit
/// 2) and takes the lock on output.dir (OutputDirLock, exit 4 naming the holder).
int runManifest(const Config& cfg, const RunOptions& opts, const parallel::Comm& comm);

/// The first of `outputs` that is, or would replace, one of `inputs`, as {output, input}; {"", ""}
/// when none does. The same file is the same device and inode (symbolic links followed) or the same
/// normalized absolute path (symbolic links of existing parents resolved), so an output that does
/// not exist yet but names an input is found too. Reads only metadata (stat).
std::pair<std::string, std::string> outputReplacingInput(const std::vector<std::string>& outputs,
                                                         const std::vector<std::string>& inputs);

/// `run`'s exclusive hold on output.dir, so two runs (a requeued Slurm job and a resubmitted one)
/// cannot sweep or replace each other's files: flock(2) on <dir>/.safeclip.lock, which holds the
/// holder's "host pid start-time" (UTC). A run with --shard K/N holds that file shared (the shards
/// of one run may share output.dir) and <dir>/.safeclip.shard-K-of-N.lock exclusively. The kernel
/// drops the lock when the process ends, however it ends; the (empty) lock files stay.
class OutputDirLock {
public:
    /// @throws OutputError "DIR: in use by another safeclip run (host H, pid P, started T; lock
    ///         FILE)" when another process holds it, or when the lock file cannot be opened.
    OutputDirLock(const std::string& dir, int shardIndex = 0, int shardCount = 1);
    ~OutputDirLock();
    OutputDirLock(const OutputDirLock&) = delete;
    OutputDirLock& operator=(const OutputDirLock&) = delete;
    /// "host pid start-time" of this process, as written into the lock file.
    [[nodiscard]] static std::string holderText();

private:
    int m_dirFd = -1;    ///< .safeclip.lock
    int m_shardFd = -1;  ///< .safeclip.shard-K-of-N.lock (sharded runs only)
    bool m_exclusive = false;
};

}  // namespace safeclip::app
