#pragma once
/// @file MemoryBudget.h  The one memory model of a patch (memory.max_per_rank): the bytes per pixel
/// of every buffer the patch stages hold, the rows per chunk of each stage under the budget, the
/// tile plan's cost, and the warp bytes a patch reads. Used by the pipeline's stages (weights,
/// trial, final, and comparewarp's cw_stats and cw_compare: src/pipeline/), geom::planTiles and
/// `safeclip plan`, so the plan and the run cannot disagree. Pure: no MPI, no I/O. Not counted in the
/// expected reads: the weights stage's CRC-32 of every warp file (io::fileChecksum reads each file once,
/// outside warpBytesRead). Chunking never changes the pixels; the rows computed here are exactly the ones the
/// run uses.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "safeclip/geom/Plan.h"
#include "safeclip/kernel/Box.h"

namespace safeclip::geom {

using kernel::Box;

// ---- bytes per pixel ----------------------------------------------------------------------------
/// Weights: the VARIANCE and MASK row chunks of the warp being measured (4 + 4 B/px of a chunk).
/// The all-NaN test reads the IMAGE bytes in the checksum pass (io::scanFile), not here; only an
/// IMAGE that is not plain float32 (tile-compressed, scaled) is read through these buffers,
/// after the sample is taken.
inline constexpr std::int64_t kWeightsChunkBytesPerPixel = 8;
/// Weights: the warp-sized variance sample (4 B/px of the warp's whole box: upstream measures the
/// weight over the whole warp), plus kernel::sampleQuantilesScratchBytes of the quantile selection.
inline constexpr std::int64_t kWeightsSampleBytesPerPixel = 4;
/// Trial and final: each warp's row-chunk buffer, IMAGE + MASK + VARIANCE (4 + 4 + 4 B/px).
inline constexpr std::int64_t kWarpChunkBytesPerPixel = 12;
/// Trial (and the same reserve in the final stage): the two trial-stack outputs of a chunk
/// (mean and clipped mean, 12 B/px each).
inline constexpr std::int64_t kStackOutputBytesPerPixel = 24;
/// Trial: the difference image and its variance on the tile plus halo, and detection's working
/// copy of them (16 B/px of the tile plus halo, fixed for the tile).
inline constexpr std::int64_t kTrialFixedBytesPerPixel = 16;
/// Final: the gathered patch on the group root (image, mask, variance 12 B/px + NIMAGE 2 B/px),
/// or the finished tiles a non-root rank keeps for the gather.
inline constexpr std::int64_t kFinalFixedBytesPerPixel = 14;
/// Warp bytes read per pixel: VARIANCE + MASK of the whole warp in the weights pass, all three
/// planes in the trial and final stacks (io::warpBytesRead counts 4 B per plane and pixel requested).
inline constexpr std::int64_t kWeightsReadBytesPerPixel = 8;
inline constexpr std::int64_t kStackReadBytesPerPixel = 12;
/// Cosmic rays (optional stage): one warp's IMAGE + MASK + VARIANCE on a tile plus halo (12 B/px)
/// and kernel::findCosmicRays' per-pixel CR flags (1 B/px).
inline constexpr std::int64_t kCosmicRayBytesPerPixel = 13;
/// Cosmic rays: the kernel's bookkeeping per CR pixel it may hold (saved values, spans, the CR
/// sets), reserved for nCrPixelMax pixels.
inline constexpr std::int64_t kCosmicRayBytesPerCrPixel = 64;
/// comparewarp "cw_stats" (one whole warp at a time, by design: the template weight and the
/// ScaleVariance factor are statistics of the whole PSF-matched warp): the warp read whole (12 B/px),
/// its PSF-matched copy (12 B/px), the template-weight variance sample (4 B/px) and ScaleVariance's
/// samples and background (8 B/px).
inline constexpr std::int64_t kCompareWarpStatsBytesPerPixel = 36;
/// comparewarp "cw_compare", per used warp: its PSF-matched copy on the tile plus halo (12 B/px).
inline constexpr std::int64_t kCompareWarpMatchedBytesPerPixel = 12;
/// comparewarp "cw_compare", fixed per pixel of the tile plus halo: one raw warp read (12), the
/// template (12), the difference image and variance (8) and detection's working copy (16).
inline constexpr std::int64_t kCompareWarpTileFixedBytesPerPixel = 48;
/// Cap of the warp buffers of one row chunk (all warps together; weights, trial and final stacks):
/// each warp's rows are then still in cache when they are used (measured on 16 x 2048² and
/// 64 x 1024²: 7-10 % less CPU than a 64 MiB cap; larger chunks also add page faults: 19 % of the
/// time at one 805 MiB chunk). Chunking never changes the pixels.
inline constexpr std::int64_t kChunkCap = 8LL << 20;
/// planTiles: a tile size fits when the stage's fixed arrays plus this many rows of chunk buffers do.
inline constexpr int kPlanChunkRows = 8;

// ---- stage W: weights ---------------------------------------------------------------------------
/// The weights pass's sample for a warp whose whole box is `warp`: 4 B/px plus the quantile
/// selection's scratch.
std::int64_t weightsSampleBytes(const Box& warp);

/// Rows per VARIANCE+MASK chunk of the weights pass over the warp box `warp` (1..warp.height, at
/// most kChunkCap).
/// @throws ConfigError "memory.max_per_rank = X cannot hold one warp's variance sample for the
///         weights (Y for the warp box BOX)" when the sample plus one row does not fit.
int weightsChunkRows(const Box& warp, std::int64_t budgetBytes);

// ---- optional stage: cosmic rays --------------------------------------------------------------
/// The "cosmic_rays" stage as the model needs it (absent: the stage is off).
struct CosmicRayStage {
    int cellSize = 0;     ///< cosmic_rays.cell_size
    int halo = 0;         ///< pipeline::cosmicRayHalo
    int nCrPixelMax = 0;  ///< cosmic_rays.n_cr_pixel_max
};

/// Bytes the stage holds for one cell plus halo `haloBox`: 13 B/px plus the reserve for the CR
/// pixels the kernel may hold there (nCrPixelMax, at most every pixel of the box).
std::int64_t cosmicRayBytes(const Box& haloBox, int nCrPixelMax);

/// The stage's cells over a warp's whole box: squares of `cellSize` px from the warp's origin (the
/// last row and column narrower). A science setting, like upstream's per-detector runs: they do not
/// depend on ranks, tiles or budget.
std::vector<Box> cosmicRayCells(const Box& warp, int cellSize);

/// The largest cosmicRayBytes of `warp`'s cells plus `halo`.
/// @throws ConfigError "memory.max_per_rank = X cannot hold a cosmic-ray cell (cosmic_rays.cell_size
///         = C px plus a halo of H px: Y); raise memory.max_per_rank or lower cosmic_rays.cell_size"
std::int64_t cosmicRayPeakBytes(const Box& warp, const CosmicRayStage& stage, std::int64_t budgetBytes);

// ---- comparewarp mode ------------------------------------------------------------------------------
/// The comparewarp stages as the model needs them (absent: another mode). Their buffers are kept from
/// warp to warp (cw_stats) and from tile to tile (cw_compare), so a stage's peak is its largest warp
/// or its largest tile plus halo.
struct CompareWarpStage {
    /// pipeline::CompareWarpGeometry::maxRadius: a PSF-matched companion is read on the tile grown by
    /// halo − matchRadius (a warp matched here on the tile grown by the halo).
    int matchRadius = 0;
    /// per warp, as warpBoxes: read from its PSF-matched companion (the manifest's "psf_matched").
    /// Only the expected reads use it; empty = none.
    std::vector<bool> psfMatched;
    /// preserve_contained_by_source: after its tiles the group root detects the template's sources
    /// over the whole patch (checkedCompareWarpTemplateBytes; the tiles' buffers are freed by then).
    bool templateOnRoot = false;
};

/// "cw_stats" bytes for a warp whose whole box is `warp` (kCompareWarpStatsBytesPerPixel).
std::int64_t compareWarpStatsBytes(const Box& warp);

/// compareWarpStatsBytes.
/// @throws ConfigError naming memory.max_per_rank when they exceed budgetBytes.
std::int64_t checkedCompareWarpStatsBytes(const Box& warp, std::int64_t budgetBytes);

/// "cw_compare" bytes of one tile plus halo `haloBox` with nWarps used warps (not chunked: every
/// PSF-matched warp of the tile is held at once for the template).
std::int64_t compareWarpTileBytes(const Box& haloBox, int nWarps);

/// compareWarpTileBytes.
/// @throws ConfigError naming memory.max_per_rank (and tile.size) when they exceed budgetBytes.
std::int64_t checkedCompareWarpTileBytes(const Box& haloBox, int nWarps, std::int64_t budgetBytes);

/// comparewarp template detection on the group root (preserve_contained_by_source; detectTemplate's
/// threshold is a statistic of the whole patch): the gathered template tiles and the assembled
/// template (4 + 4 B/px of the patch), its smoothed copy (4 B/px) and the STDEVCLIP sample (4 B/px).
inline constexpr std::int64_t kCompareWarpTemplateDetectBytesPerPixel = 16;

/// "cw_compare" template-detection bytes on the root for `patch`.
/// @throws ConfigError naming memory.max_per_rank when they exceed the budget.
std::int64_t checkedCompareWarpTemplateBytes(const Box& patch, std::int64_t budgetBytes);

/// planTiles' cost of tiles of `side` px in coadd.mode = comparewarp: tilePlanBytes (the final
/// stack) or compareWarpTileBytes of the largest tile plus halo (clipped to the patch) of that
/// tiling, whichever is larger. A size whose cost fits the budget passes every cw_compare check.
std::int64_t compareWarpTilePlanBytes(const Box& patch, int side, int halo, int nWarps);

// ---- stages 1 and 2: trial and final stacks ----------------------------------------------------
/// The trial stage's fixed arrays for a tile whose box plus halo (clipped to the patch) is `haloBox`.
std::int64_t trialFixedBytes(const Box& haloBox);

/// The final stage's fixed arrays: the whole patch on the rank that gathers it (`gathersPatch`),
/// else `ownTilesArea` pixels of this rank's finished tiles.
std::int64_t finalFixedBytes(const Box& patch, std::int64_t ownTilesArea, bool gathersPatch);

/// Rows per chunk of `box` (a tile plus halo in the trial stage, a tile in the final stage) so that
/// nWarps chunk buffers (12 B/px each) and the two stack outputs (24 B/px) fit in budgetBytes
/// beside `fixedBytes`, and the warp buffers stay under kChunkCap. Returns >= 1.
/// @throws ConfigError "memory.max_per_rank = X is smaller than the fixed arrays of patch NAME (Y for
///         tiles of T px and the gathered patch BOX)" when fixedBytes alone does not fit, or
///         rowsPerChunk's "cannot hold one row" error.
int stackChunkRows(const Box& box, int nWarps, std::int64_t fixedBytes, std::int64_t budgetBytes,
                   const std::string& patchName, int tileSize, const Box& patch);

// ---- the tile plan --------------------------------------------------------------------------------
/// planTiles' cost of tiles of `side` px: the larger fixed arrays (trial on side + 2 halo, or the
/// gathered patch) plus kPlanChunkRows rows of nWarps chunk buffers and stack outputs.
std::int64_t tilePlanBytes(const Box& patch, int side, int halo, int nWarps);

/// TilePlan::fixedBytes: max(trial fixed arrays of `firstTile` plus halo, the gathered patch).
std::int64_t tilePlanFixedBytes(const Box& patch, const Box& firstTile, int halo);

// ---- reads and memory of one patch ---------------------------------------------------------------
/// What one rank of a patch's group reads and holds, by the model above.
struct RankBudget {
    int tiles = 0;                    ///< tiles this rank stacks
    std::int64_t warpBytesRead = 0;   ///< expected io::warpBytesRead() increase for this patch
    std::int64_t peakBytes = 0;       ///< largest modelled stage footprint (<= the budget when it fits)
    int weightsRows = 0;              ///< rows per chunk: weights pass
    int trialRows = 0;                ///< rows per chunk: trial stacks (smallest over its tiles; 0: none)
    int finalRows = 0;                ///< rows per chunk: final stack (smallest over its tiles; 0: none)
    std::int64_t cwStatsBytes = 0;    ///< comparewarp: cw_stats bytes of its largest warp (0: none)
    std::int64_t cwCompareBytes = 0;  ///< comparewarp: cw_compare bytes of its largest tile (0: none)
};

/// The model of one patch on a group of ranks, with the run's tile plan (`tiles`, `owner`, `halo`).
/// @param warpBoxes per warp in input order: its whole box, or an empty box for a warp that is not
///        read (it did not open); warp i is measured for the weights (over its whole box) by group
///        rank i mod groupSize, as the run does.
/// @param trialPass false in coadd.mode = mean (no trial stacks).
/// @param extraRootReads bytes the group root reads besides the stages (input.validate_pixels).
/// @param compareWarp coadd.mode = comparewarp (then trialPass is false): cw_stats (warp i on group
///        rank i mod groupSize, as the weights) and cw_compare (each rank's tiles plus halo; on the
///        root, the larger of that and the whole-patch template detection when templateOnRoot).
/// @throws ConfigError (the texts above) when the budget is too small for a stage.
std::vector<RankBudget> patchBudget(const Box& patch, const std::vector<Box>& tiles,
                                    const std::vector<int>& owner, int halo, int groupSize,
                                    const std::vector<Box>& warpBoxes, bool trialPass,
                                    std::int64_t budgetBytes, const std::string& patchName, int tileSize,
                                    std::int64_t extraRootReads = 0,
                                    const std::optional<CosmicRayStage>& cosmicRays = std::nullopt,
                                    const std::optional<CompareWarpStage>& compareWarp = std::nullopt);

/// A budget below which no tile plan can work: the gathered patch (final stage, group root) or
/// the weights pass's sample plus one row of a patch-sized warp does not fit, whatever the tiles. planTiles
/// does not shrink its automatic tiles under such a budget (tiny tiles would not help).
bool budgetCannotWork(const Box& patch, std::int64_t budgetBytes);

/// The smallest memory.max_per_rank under which the patch works by this model: the tile plan that
/// planTiles makes with that budget (tileSize 0: automatic, which depends on the budget) passes
/// patchBudget, and with one byte less it does not. Found by bisection over the model.
std::int64_t smallestWorkingBudget(const Box& patch, int groupSize, int tileSize, int halo,
                                   const std::vector<Box>& warpBoxes, bool trialPass,
                                   const std::optional<CosmicRayStage>& cosmicRays = std::nullopt,
                                   const std::optional<CompareWarpStage>& compareWarp = std::nullopt);

/// patchBudget of `plan` (planTiles' plan under budgetBytes, with the configured `tileSize`). When
/// the budget is too small: ConfigError "<patchBudget's reason>; the smallest memory.max_per_rank
/// that works for patch NAME is X (N bytes)". Used by the "budget" stage before any pixel is read,
/// the "setup" stage before any stack, and by `safeclip plan`.
std::vector<RankBudget> checkedPatchBudget(const Box& patch, const TilePlan& plan, int groupSize,
                                           int tileSize, const std::vector<Box>& warpBoxes, bool trialPass,
                                           std::int64_t budgetBytes, const std::string& patchName,
                                           std::int64_t extraRootReads = 0,
                                           const std::optional<CosmicRayStage>& cosmicRays = std::nullopt,
                                           const std::optional<CompareWarpStage>& compareWarp = std::nullopt);

/// Expected warp bytes read by the whole group for one patch: weights (8 B/px of each read warp's
/// whole box) + trial (12 B/px of every tile plus halo per read warp, when trialPass) + final
/// (12 B/px of every tile per read warp). `warpBoxes` as in patchBudget.
/// With the cosmic-ray stage: plus 12 B/px of each of its cells plus halo per read warp.
/// In comparewarp mode: plus 12 B/px of each read warp's whole box (cw_stats) and, per tile and
/// read warp, 12 B/px of the tile plus halo (a companion: of the tile grown by halo − matchRadius).
std::int64_t expectedWarpBytesRead(const Box& patch, const std::vector<Box>& tiles, int halo,
                                   const std::vector<Box>& warpBoxes, bool trialPass,
                                   const std::optional<CosmicRayStage>& cosmicRays = std::nullopt,
                                   const std::optional<CompareWarpStage>& compareWarp = std::nullopt);

}  // namespace safeclip::geom
