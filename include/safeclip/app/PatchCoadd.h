#pragma once
/// @file PatchCoadd.h  SafeClip on one patch (spec §3–§8), by a group of ranks (or serially),
/// tile by tile, streaming the warps in row chunks under the memory budget.
///
/// Stages (every rank of the group takes part; each stage ends with an agreement so that a
/// failure on one rank never leaves the others in a collective):
///  W  weights (§3): warp i is measured by group rank i mod R (reads its VARIANCE and MASK), then
///     all-gathered;
///  1  per tile (tiles dealt to ranks by geom::assignToRanks): both trial stacks (§5) over the
///     tile plus a halo, detection (§6.1) on the difference, the detected pixels inside the tile
///     cut into pieces with additive per-warp counts (§6.2), and each warp's bad and DETECTED
///     pixels as spans;
///  R  reduction on the group root: pieces are merged into whole footprints, decided once each
///     (§6.3), the big-footprint rule (§7.1) sees whole DETECTED components; each warp's CLIPPED
///     spans are broadcast;
///  2  per tile: the final stack (§7.2); tiles are gathered to the group root, which
///     post-processes (§8) and writes the FITS atomically.
/// Each pixel is computed from the same inputs in the same order whatever the tiling, so the
/// output bytes do not depend on rank count, tile size or memory budget.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "safeclip/app/Config.h"
#include "safeclip/kernel/Box.h"
#include "safeclip/kernel/Detect.h"
#include "safeclip/parallel/Comm.h"

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
    std::int64_t nSingle = 0;             ///< footprints clipped by the single rule (§6.3.4a)
    std::int64_t nSingleOnly = 0;         ///< by the only-candidate rule (§6.3.3)
    std::int64_t nDouble = 0;             ///< by the double rule (§6.3.4b)
    std::int64_t nClippedWarpPixels = 0;   ///< Σ over warps of CLIPPED pixels
    std::int64_t nCoaddClippedPixels = 0;  ///< coadd pixels with CLIPPED
    int nTiles = 0;
    int tileSize = 0;
    int halo = 0;  ///< tile halo in px (0 in coadd.mode = mean)
    double seconds = 0;
};

/// Checkpointing of a patch (`safeclip run`): the stage-R state (weights, decisions, CLIPPED
/// spans) and every finished final tile go to HDF5 files under `dir`, published atomically.
struct CheckpointOptions {
    std::string dir;      ///< "" = no checkpoints
    bool resume = false;  ///< reuse valid checkpoints (refuse ones from another config or input list)
    bool restart = false; ///< ignore and replace checkpoints of another config or input list
    double tileInterval = 0.0;  ///< seconds of final-stack work between tile checkpoints (0 = every tile)
};

/// Halo around a tile for detection to give exactly the whole-patch footprints inside the tile:
/// the smoothing radius r, the growth radius, and minPixels-1 so that the minPixels cut sees
/// enough of every component that reaches the tile.
int detectionHalo(const kernel::DetectControl& ctrl);

/// The PSF sigma (px) the tile halo is computed from, the same in `safeclip plan` and `run`:
/// detect.psf_sigma when > 0, else the largest header PSF sigma (PSFSIGMA, else FWHM) over the
/// warps whose header opens (`headerSigmas`, nullopt: no card); 0 when none is known. Detection
/// itself smooths with the weight-averaged sigma, which is <= this maximum, and the halo is
/// monotone in sigma, so the halo covers detection's need and the pixels do not depend on it.
double haloSigma(const Config& cfg, const std::vector<std::optional<double>>& headerSigmas);

/// The tile halo for `sigma`: detectionHalo of the detect.* keys of cfg with psfSigma = sigma.
int tileHalo(const Config& cfg, double sigma);

/// The configuration keys that change pixels, as "key = value" lines (written to the coadd's CONFIG
/// table). Execution keys (memory, tiles, logging, paths, policies) are excluded so that outputs are
/// byte-identical across budgets, tile sizes and rank counts.
std::vector<std::string> scienceConfig(const Config& cfg);
/// FNV-1a-64 hash of scienceConfig() (the coadd's SCCFGHSH card; used by --resume).
std::string scienceConfigHash(const Config& cfg);

/// Coadd one patch and write `outPath` atomically (on the group's rank 0).
/// @param box the patch box; an empty box means "the warps' common box" (all warps must agree).
/// @param group ranks that share this patch (collective over it); nullptr = serial, no MPI.
/// @returns the result (complete on group rank 0).
/// @throws InputError, ConfigError, OutputError (on every rank of the group alike)
PatchResult coaddPatch(const std::string& name, const kernel::Box& box, const std::vector<WarpInput>& warps,
                       const Config& cfg, const std::string& outPath, const parallel::Comm* group = nullptr,
                       const CheckpointOptions& checkpoints = {});

}  // namespace safeclip::app
