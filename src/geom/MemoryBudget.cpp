#include "safeclip/geom/MemoryBudget.h"

#include <algorithm>
#include <cmath>

#include "safeclip/geom/Plan.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/SampleStats.h"

namespace safeclip::geom {

std::int64_t weightsSampleBytes(const Box& warp) {
    return warp.area() * kWeightsSampleBytesPerPixel + kernel::sampleQuantilesScratchBytes(warp.area());
}

int weightsChunkRows(const Box& warp, std::int64_t budgetBytes) {
    const std::int64_t sampleBytes = weightsSampleBytes(warp);
    const std::int64_t rowBytes = static_cast<std::int64_t>(warp.width) * kWeightsChunkBytesPerPixel;
    if (budgetBytes - sampleBytes < rowBytes) {
        throw ConfigError("memory.max_per_rank = " + formatByteSize(budgetBytes) +
                          " cannot hold one warp's variance sample for the weights (" +
                          formatByteSize(sampleBytes) + " for the warp box " + warp.str() +
                          "); the weights pass alone needs at least " +
                          formatByteSize(sampleBytes + rowBytes) + " (" +
                          std::to_string(sampleBytes + rowBytes) + " bytes)");
    }
    return static_cast<int>(std::clamp<std::int64_t>(
        std::min<std::int64_t>((budgetBytes - sampleBytes) / rowBytes, kChunkCap / rowBytes), 1,
        warp.height));
}

std::int64_t cosmicRayBytes(const Box& haloBox, int nCrPixelMax) {
    const std::int64_t crPixels = std::min<std::int64_t>(std::max(0, nCrPixelMax), haloBox.area());
    return haloBox.area() * kCosmicRayBytesPerPixel + crPixels * kCosmicRayBytesPerCrPixel;
}

std::vector<Box> cosmicRayCells(const Box& warp, int cellSize) {
    std::vector<Box> cells;
    const int s = std::max(1, cellSize);
    for (int y = warp.y0; y < warp.y1(); y += s) {
        for (int x = warp.x0; x < warp.x1(); x += s) {
            cells.push_back(Box{x, y, std::min(s, warp.x1() - x), std::min(s, warp.y1() - y)});
        }
    }
    return cells;
}

std::int64_t cosmicRayPeakBytes(const Box& warp, const CosmicRayStage& stage, std::int64_t budgetBytes) {
    std::int64_t peak = 0;
    for (const Box& c : cosmicRayCells(warp, stage.cellSize)) {
        peak = std::max(peak, cosmicRayBytes(c.grown(stage.halo).intersect(warp), stage.nCrPixelMax));
    }
    if (peak > budgetBytes) {
        throw ConfigError(
            "memory.max_per_rank = " + formatByteSize(budgetBytes) +
            " cannot hold a cosmic-ray cell (cosmic_rays.cell_size = " + std::to_string(stage.cellSize) +
            " px plus a halo of " + std::to_string(stage.halo) +
            " px, and 64 B for each of up to cosmic_rays.n_cr_pixel_max = " +
            std::to_string(stage.nCrPixelMax) + " CR pixels: " + formatByteSize(peak) +
            "); raise memory.max_per_rank or lower cosmic_rays.cell_size or cosmic_rays.n_cr_pixel_max");
    }
    return peak;
}

std::int64_t compareWarpStatsBytes(const Box& warp) {
    return warp.area() * kCompareWarpStatsBytesPerPixel;
}

std::int64_t checkedCompareWarpStatsBytes(const Box& warp, std::int64_t budgetBytes) {
    const std::int64_t bytes = compareWarpStatsBytes(warp);
    if (bytes > budgetBytes) {
        throw ConfigError("memory.max_per_rank = " + formatByteSize(budgetBytes) +
                          " cannot hold one whole warp and its PSF-matched copy for the comparewarp "
                          "statistics (" +
                          formatByteSize(bytes) + " for the warp box " + warp.str() +
                          "); raise memory.max_per_rank");
    }
    return bytes;
}

std::int64_t compareWarpTileBytes(const Box& haloBox, int nWarps) {
    return haloBox.area() *
           (kCompareWarpTileFixedBytesPerPixel +
            kCompareWarpMatchedBytesPerPixel * static_cast<std::int64_t>(std::max(1, nWarps)));
}

std::int64_t checkedCompareWarpTileBytes(const Box& haloBox, int nWarps, std::int64_t budgetBytes) {
    const std::int64_t bytes = compareWarpTileBytes(haloBox, nWarps);
    if (bytes > budgetBytes) {
        throw ConfigError("memory.max_per_rank = " + formatByteSize(budgetBytes) +
                          " cannot hold the PSF-matched warps of one comparewarp tile (" +
                          formatByteSize(bytes) + " for " + std::to_string(nWarps) +
                          " warps on the tile plus halo " + haloBox.str() +
                          "); raise memory.max_per_rank or lower tile.size");
    }
    return bytes;
}

std::int64_t checkedCompareWarpTemplateBytes(const Box& patch, std::int64_t budgetBytes) {
    const std::int64_t bytes = patch.area() * kCompareWarpTemplateDetectBytesPerPixel;
    if (bytes > budgetBytes) {
        throw ConfigError("memory.max_per_rank = " + formatByteSize(budgetBytes) +
                          " cannot hold the comparewarp template of patch box " + patch.str() + " (" +
                          formatByteSize(bytes) +
                          " to detect its sources); raise memory.max_per_rank or set "
                          "comparewarp.preserve_contained_by_source = false");
    }
    return bytes;
}

namespace {

/// The largest extent, over the tiles of `side` px of [0, length), of a tile grown by `halo` on
/// both sides and clipped to [0, length) (geom::tiles: from the origin, the last one narrower).
std::int64_t largestHaloExtent(int length, int side, int halo) {
    std::int64_t best = 0;
    const std::int64_t s = std::max(1, side);
    for (std::int64_t x = 0; x < length; x += s) {
        const std::int64_t lo = std::max<std::int64_t>(0, x - halo);
        const std::int64_t hi = std::min<std::int64_t>(length, x + s + halo);
        best = std::max(best, hi - lo);
    }
    return best;
}

}  // namespace

std::int64_t compareWarpTilePlanBytes(const Box& patch, int side, int halo, int nWarps) {
    const Box largest{0, 0, static_cast<int>(largestHaloExtent(patch.width, side, halo)),
                      static_cast<int>(largestHaloExtent(patch.height, side, halo))};
    return std::max(tilePlanBytes(patch, side, halo, nWarps), compareWarpTileBytes(largest, nWarps));
}

std::int64_t trialFixedBytes(const Box& haloBox) {
    return haloBox.area() * kTrialFixedBytesPerPixel;
}

std::int64_t finalFixedBytes(const Box& patch, std::int64_t ownTilesArea, bool gathersPatch) {
    return (gathersPatch ? patch.area() : ownTilesArea) * kFinalFixedBytesPerPixel;
}

int stackChunkRows(const Box& box, int nWarps, std::int64_t fixedBytes, std::int64_t budgetBytes,
                   const std::string& patchName, int tileSize, const Box& patch) {
    nWarps = std::max(1, nWarps);  // (a patch without warps never stacks; no division by zero)
    const std::int64_t avail = budgetBytes - fixedBytes;
    if (avail <= 0) {
        throw ConfigError("memory.max_per_rank = " + formatByteSize(budgetBytes) +
                          " is smaller than the fixed arrays of patch " + patchName + " (" +
                          formatByteSize(fixedBytes) + " for tiles of " + std::to_string(tileSize) +
                          " px and the gathered patch " + patch.str() + ")");
    }
    const std::int64_t rowBytes =
        static_cast<std::int64_t>(std::max(1, box.width)) *
        (static_cast<std::int64_t>(nWarps) * kWarpChunkBytesPerPixel + kStackOutputBytesPerPixel);
    if (avail < rowBytes) {  // rowsPerChunk would name the remainder as if it were the budget
        throw ConfigError("memory.max_per_rank = " + formatByteSize(budgetBytes) + " leaves " +
                          formatByteSize(avail) + " beside the fixed arrays of patch " + patchName + " (" +
                          formatByteSize(fixedBytes) + "), less than one row of " + std::to_string(nWarps) +
                          " warps of width " + std::to_string(box.width) + " (" + formatByteSize(rowBytes) +
                          ")");
    }
    const std::int64_t capRows = std::max<std::int64_t>(
        1,
        kChunkCap / (static_cast<std::int64_t>(nWarps) * kWarpChunkBytesPerPixel * std::max(1, box.width)));
    return static_cast<int>(std::min<std::int64_t>(
        rowsPerChunk(box, nWarps, kWarpChunkBytesPerPixel, kStackOutputBytesPerPixel, avail), capRows));
}

std::int64_t tilePlanBytes(const Box& patch, int side, int halo, int nWarps) {
    const std::int64_t h = side + 2 * static_cast<std::int64_t>(halo);
    return std::max(h * h * kTrialFixedBytesPerPixel, patch.area() * kFinalFixedBytesPerPixel) +
           kPlanChunkRows * h *
               (kWarpChunkBytesPerPixel * static_cast<std::int64_t>(nWarps) + kStackOutputBytesPerPixel);
}

std::int64_t tilePlanFixedBytes(const Box& patch, const Box& firstTile, int halo) {
    return std::max(trialFixedBytes(firstTile.grown(halo).intersect(patch)), finalFixedBytes(patch, 0, true));
}

namespace {

/// cw_compare's warp reads for one tile: every read warp on the tile plus halo, a PSF-matched
/// companion on the tile grown by halo − matchRadius (12 B/px).
std::int64_t compareWarpTileReads(const Box& patch, const Box& tile, int halo,
                                  const std::vector<Box>& warpBoxes, const CompareWarpStage& stage) {
    std::int64_t bytes = 0;
    for (std::size_t i = 0; i < warpBoxes.size(); ++i) {
        if (warpBoxes[i].empty()) {
            continue;
        }
        const bool companion = i < stage.psfMatched.size() && stage.psfMatched[i];
        bytes += tile.grown(companion ? halo - stage.matchRadius : halo).intersect(patch).area() *
                 kStackReadBytesPerPixel;
    }
    return bytes;
}

}  // namespace

std::vector<RankBudget> patchBudget(const Box& patch, const std::vector<Box>& tiles,
                                    const std::vector<int>& owner, int halo, int groupSize,
                                    const std::vector<Box>& warpBoxes, bool trialPass,
                                    std::int64_t budgetBytes, const std::string& patchName, int tileSize,
                                    std::int64_t extraRootReads,
                                    const std::optional<CosmicRayStage>& cosmicRays,
                                    const std::optional<CompareWarpStage>& compareWarp) {
    groupSize = std::max(1, groupSize);
    std::vector<RankBudget> out(static_cast<std::size_t>(groupSize));
    int nUsed = 0;
    // Weights: warp i on group rank i mod groupSize, over the warp's whole box (spec §3: upstream
    // measures the whole warp), one warp at a time.
    std::vector<std::int64_t> weightsPeak(out.size(), 0);
    for (std::size_t i = 0; i < warpBoxes.size(); ++i) {
        const Box& wb = warpBoxes[i];
        if (wb.empty()) {
            continue;
        }
        ++nUsed;
        RankBudget& b = out[i % static_cast<std::size_t>(groupSize)];
        const int rows = weightsChunkRows(wb, budgetBytes);
        b.weightsRows = b.weightsRows == 0 ? rows : std::min(b.weightsRows, rows);
        weightsPeak[i % static_cast<std::size_t>(groupSize)] = std::max(
            weightsPeak[i % static_cast<std::size_t>(groupSize)],
            weightsSampleBytes(wb) + static_cast<std::int64_t>(rows) * wb.width * kWeightsChunkBytesPerPixel);
        b.warpBytesRead += wb.area() * kWeightsReadBytesPerPixel;
        if (cosmicRays) {  // the same rank finds the warp's cosmic rays first, cell by cell
            weightsPeak[i % static_cast<std::size_t>(groupSize)] =
                std::max(weightsPeak[i % static_cast<std::size_t>(groupSize)],
                         cosmicRayPeakBytes(wb, *cosmicRays, budgetBytes));
            for (const Box& c : cosmicRayCells(wb, cosmicRays->cellSize)) {
                b.warpBytesRead += c.grown(cosmicRays->halo).intersect(wb).area() * kStackReadBytesPerPixel;
            }
        }
        if (compareWarp) {  // cw_stats: the same rank reads the whole warp (or its companion) again
            b.cwStatsBytes = std::max(b.cwStatsBytes, checkedCompareWarpStatsBytes(wb, budgetBytes));
            b.warpBytesRead += wb.area() * kStackReadBytesPerPixel;
        }
    }
    std::vector<std::int64_t> ownArea(out.size(), 0);
    for (std::size_t t = 0; t < tiles.size(); ++t) {
        ownArea[static_cast<std::size_t>(owner[t])] += tiles[t].area();
    }
    const std::int64_t perPixelRow =
        kWarpChunkBytesPerPixel * static_cast<std::int64_t>(nUsed) + kStackOutputBytesPerPixel;
    std::vector<std::int64_t> trialPeak(out.size(), 0);
    std::vector<std::int64_t> finalPeak(out.size(), 0);
    for (std::size_t r = 0; r < out.size(); ++r) {
        RankBudget& b = out[r];
        const std::int64_t finalFixed = finalFixedBytes(patch, ownArea[r], r == 0);
        finalPeak[r] = r == 0 ? finalFixed : 0;  // the root holds the patch even without tiles
        for (std::size_t t = 0; t < tiles.size(); ++t) {
            if (owner[t] != static_cast<int>(r)) {
                continue;
            }
            ++b.tiles;
            const Box& tile = tiles[t];
            if (trialPass) {
                const Box hb = tile.grown(halo).intersect(patch);
                const int rows =
                    stackChunkRows(hb, nUsed, trialFixedBytes(hb), budgetBytes, patchName, tileSize, patch);
                b.trialRows = b.trialRows == 0 ? rows : std::min(b.trialRows, rows);
                trialPeak[r] = std::max(trialPeak[r], trialFixedBytes(hb) + static_cast<std::int64_t>(rows) *
                                                                                hb.width * perPixelRow);
                b.warpBytesRead += hb.area() * kStackReadBytesPerPixel * nUsed;
            }
            if (compareWarp) {
                const Box hb = tile.grown(halo).intersect(patch);
                b.cwCompareBytes =
                    std::max(b.cwCompareBytes, checkedCompareWarpTileBytes(hb, nUsed, budgetBytes));
                b.warpBytesRead += compareWarpTileReads(patch, tile, halo, warpBoxes, *compareWarp);
            }
            const int rows = stackChunkRows(tile, nUsed, finalFixed, budgetBytes, patchName, tileSize, patch);
            b.finalRows = b.finalRows == 0 ? rows : std::min(b.finalRows, rows);
            finalPeak[r] = std::max(finalPeak[r],
                                    finalFixed + static_cast<std::int64_t>(rows) * tile.width * perPixelRow);
            b.warpBytesRead += tile.area() * kStackReadBytesPerPixel * nUsed;
        }
        if (compareWarp && compareWarp->templateOnRoot && r == 0) {  // after the tiles, on the root
            b.cwCompareBytes =
                std::max(b.cwCompareBytes, checkedCompareWarpTemplateBytes(patch, budgetBytes));
        }
        b.peakBytes =
            std::max({weightsPeak[r], b.cwStatsBytes, trialPeak[r], b.cwCompareBytes, finalPeak[r]});
    }
    out[0].warpBytesRead += extraRootReads;
    return out;
}

bool budgetCannotWork(const Box& patch, std::int64_t budgetBytes) {
    return budgetBytes <= finalFixedBytes(patch, 0, true) ||
           budgetBytes - weightsSampleBytes(patch) <
               static_cast<std::int64_t>(patch.width) * kWeightsChunkBytesPerPixel;
}

namespace {

int countUsed(const std::vector<Box>& warpBoxes) {
    return static_cast<int>(
        std::count_if(warpBoxes.begin(), warpBoxes.end(), [](const Box& b) { return !b.empty(); }));
}

bool budgetWorks(const Box& patch, int groupSize, int tileSize, int halo, const std::vector<Box>& warpBoxes,
                 bool trialPass, std::int64_t budgetBytes, const std::optional<CosmicRayStage>& cosmicRays,
                 const std::optional<CompareWarpStage>& compareWarp) {
    const TilePlan plan = planTiles(patch, groupSize, tileSize, halo, countUsed(warpBoxes), budgetBytes,
                                    compareWarp.has_value());
    try {
        (void)patchBudget(patch, plan.tiles, plan.owner, halo, groupSize, warpBoxes, trialPass, budgetBytes,
                          "", plan.tileSize, 0, cosmicRays, compareWarp);
        return true;
    } catch (const ConfigError&) {
        return false;
    }
}

}  // namespace

std::int64_t smallestWorkingBudget(const Box& patch, int groupSize, int tileSize, int halo,
                                   const std::vector<Box>& warpBoxes, bool trialPass,
                                   const std::optional<CosmicRayStage>& cosmicRays,
                                   const std::optional<CompareWarpStage>& compareWarp) {
    constexpr std::int64_t kMax = std::int64_t{1} << 62;
    std::int64_t lo = 0;  // does not work (a budget is >= 1 byte)
    std::int64_t hi = 1 << 20;
    while (
        !budgetWorks(patch, groupSize, tileSize, halo, warpBoxes, trialPass, hi, cosmicRays, compareWarp)) {
        lo = hi;
        if (hi >= kMax / 2) {
            return kMax;  // nothing sensible works (cannot happen for a manifest's box)
        }
        hi *= 2;
    }
    // Invariant: lo does not work, hi works.
    while (hi - lo > 1) {
        const std::int64_t mid = lo + (hi - lo) / 2;
        (budgetWorks(patch, groupSize, tileSize, halo, warpBoxes, trialPass, mid, cosmicRays, compareWarp)
             ? hi
             : lo) = mid;
    }
    return hi;
}

std::vector<RankBudget> checkedPatchBudget(const Box& patch, const TilePlan& plan, int groupSize,
                                           int tileSize, const std::vector<Box>& warpBoxes, bool trialPass,
                                           std::int64_t budgetBytes, const std::string& patchName,
                                           std::int64_t extraRootReads,
                                           const std::optional<CosmicRayStage>& cosmicRays,
                                           const std::optional<CompareWarpStage>& compareWarp) {
    try {
        return patchBudget(patch, plan.tiles, plan.owner, plan.halo, groupSize, warpBoxes, trialPass,
                           budgetBytes, patchName, plan.tileSize, extraRootReads, cosmicRays, compareWarp);
    } catch (const ConfigError& e) {
        const std::int64_t need = smallestWorkingBudget(patch, groupSize, tileSize, plan.halo, warpBoxes,
                                                        trialPass, cosmicRays, compareWarp);
        throw ConfigError(std::string(e.what()) + "; the smallest memory.max_per_rank that works for patch " +
                          patchName + " is " + formatByteSize(need) + " (" + std::to_string(need) +
                          " bytes)");
    }
}

std::int64_t expectedWarpBytesRead(const Box& patch, const std::vector<Box>& tiles, int halo,
                                   const std::vector<Box>& warpBoxes, bool trialPass,
                                   const std::optional<CosmicRayStage>& cosmicRays,
                                   const std::optional<CompareWarpStage>& compareWarp) {
    std::int64_t weights = 0;
    for (const Box& wb : warpBoxes) {
        weights += wb.area() * kWeightsReadBytesPerPixel;  // empty box: a warp that is not read
        if (compareWarp) {
            weights += wb.area() * kStackReadBytesPerPixel;  // cw_stats: the whole warp again
        }
        if (cosmicRays && !wb.empty()) {
            for (const Box& c : cosmicRayCells(wb, cosmicRays->cellSize)) {
                weights += c.grown(cosmicRays->halo).intersect(wb).area() * kStackReadBytesPerPixel;
            }
        }
    }
    std::int64_t perWarp = 0;
    for (const Box& tile : tiles) {
        if (trialPass) {
            perWarp += tile.grown(halo).intersect(patch).area() * kStackReadBytesPerPixel;
        }
        perWarp += tile.area() * kStackReadBytesPerPixel;
        if (compareWarp) {
            weights += compareWarpTileReads(patch, tile, halo, warpBoxes, *compareWarp);
        }
    }
    return weights + perWarp * countUsed(warpBoxes);
}

}  // namespace safeclip::geom
