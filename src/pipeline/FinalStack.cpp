/// @file FinalStack.cpp  Stage "final" (spec §7.2): per tile of this rank, the weighted MEAN of the
/// warps with CLIPPED painted into their masks and used as a bad plane; the exposure count nImage
/// and each warp's used pixels. The root stacks its tiles straight into the patch; the other ranks'
/// tiles are gathered to it. With checkpoints, finished tiles are saved every
/// checkpoint.tile_interval seconds and reloaded on --resume.
#include <algorithm>
#include <chrono>
#include <filesystem>

#include "safeclip/geom/MemoryBudget.h"
#include "safeclip/geom/Plan.h"
#include "safeclip/io/Checkpoint.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/PixelOps.h"
#include "safeclip/kernel/Stack.h"
#include "safeclip/parallel/Collectives.h"
#include "safeclip/parallel/Logging.h"
#include "safeclip/parallel/Signals.h"
#include "safeclip/parallel/TileGather.h"
#include "safeclip/pipeline/Guard.h"
#include "safeclip/pipeline/PatchCheckpoint.h"
#include "safeclip/pipeline/Stages.h"

namespace safeclip::pipeline {

using kernel::Box;
using kernel::MaskedImage;
using parallel::log;

namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// Final stack of this rank's tiles: into `direct`/`directN` (the root's patch) when given,
/// else into tiles returned for the gather.
std::vector<parallel::Tile> stackTiles(PatchContext& ctx, MaskedImage* direct, kernel::ImageU16* directN) {
    const auto t0 = Clock::now();
    const MaskBits& bits = ctx.bits;
    auto warps = ctx.usedWarps();
    if (warps.empty()) {
        throw InputError("patch " + ctx.name + ": no usable warps");
    }
    const kernel::StackControl& ctrl = ctx.finalCtrl;
    std::vector<MaskedImage> bufs(warps.size());
    const std::vector<float> weights = ctx.usedWeights();
    std::vector<parallel::Tile> out;
    const auto tiles = ctx.myTiles();
    const bool checkpointing = !ctx.ckpt.dir.empty();
    std::size_t done = 0;
    auto lastLog = Clock::now();
    auto lastCheckpoint = Clock::now();  // tile checkpoints every checkpoint.tile_interval s of work
    int rows = 0;
    double ckptSeconds = 0;      // time spent writing tile checkpoints on this rank
    std::int64_t ckptBytes = 0;  // their size
    int ckptTiles = 0;           // how many were written
    const io::CheckpointKey key = checkpointing ? checkpointKey(ctx) : io::CheckpointKey{};
    ctx.usedLocal.assign(ctx.warps.size(), 0);
    std::vector<std::size_t> warpIndex;  // position of each used warp in ctx.warps
    warpIndex.reserve(warps.size());
    for (Warp* w : warps) {
        warpIndex.push_back(static_cast<std::size_t>(w - ctx.warps.data()));
    }
    std::int64_t ownTilesArea = 0;
    for (std::size_t t : tiles) {
        ownTilesArea += ctx.tiles.tiles[t].area();
    }
    const std::int64_t finalFixed = geom::finalFixedBytes(ctx.box, ownTilesArea, direct != nullptr);
    for (std::size_t t : tiles) {
        parallel::throwIfStopRequested("during the final stack");
        const Box& tile = ctx.tiles.tiles[t];
        const std::string tilePath = checkpointing ? tileCheckpointPath(ctx.ckpt.dir, ctx.name, tile) : "";
        parallel::Tile reloaded;
        std::vector<std::int64_t> tileUsed;
        bool reload = false;
        if (checkpointing && ctx.ckpt.resume) {
            // A rejected tile checkpoint leaves nothing behind: its outputs are only filled on success,
            // and then the tile is computed (and its pixels counted) exactly once, below.
            std::string why;
            reload =
                io::readTileCheckpoint(tilePath, key, tile, reloaded.pixels, reloaded.nImage, tileUsed, &why);
            if (reload && tileUsed.size() != ctx.warps.size()) {
                why = tilePath + ": tile checkpoint lists " + std::to_string(tileUsed.size()) +
                      " warps, the patch has " + std::to_string(ctx.warps.size());
                reload = false;
            }
            if (!reload && !why.empty()) {
                log().warn("ignoring tile checkpoint: {}; the tile is recomputed", why);
            }
        }
        if (reload) {
            log().debug("patch {}: tile {} reloaded from its checkpoint", ctx.name, tile.str());
            for (std::size_t i = 0; i < ctx.warps.size(); ++i) {
                ctx.usedLocal[i] += tileUsed[i];
            }
            if (direct != nullptr) {
                parallel::gatherTiles(static_cast<const parallel::Comm*>(nullptr), 0, {reloaded}, *direct,
                                      *directN);
            } else {
                out.push_back(std::move(reloaded));
            }
            ++done;
            continue;
        }
        parallel::Tile result;
        if (direct == nullptr) {
            result = parallel::Tile{MaskedImage(tile), kernel::ImageU16(tile, 0)};
        }
        MaskedImage& target = direct != nullptr ? *direct : result.pixels;
        kernel::ImageU16& targetN = direct != nullptr ? *directN : result.nImage;
        rows = geom::stackChunkRows(tile, static_cast<int>(warps.size()), finalFixed,
                                    ctx.settings.memoryBudget, ctx.name, ctx.tiles.tileSize, ctx.box);
        tileUsed.assign(ctx.warps.size(), 0);
        for (const Box& chunk : geom::rowChunks(tile, rows)) {
            std::vector<const MaskedImage*> ptrs;
            for (std::size_t i = 0; i < warps.size(); ++i) {
                warps[i]->reader->read(chunk, bufs[i]);
                MaskedImage& b = bufs[i];
                paintCosmicRays(*warps[i], chunk, b.mask.data().data(), bits.cr);
                if (!warps[i]->clipped.empty()) {
                    warps[i]->clipped.rowsIn(chunk.y0, chunk.y1()).paint(b.mask, bits.clipped);
                }
                if (!warps[i]->noData.empty()) {
                    // comparewarp (spec §10 step 9, doUsePsfMatchedPolygons): where the warp − template
                    // difference has no value, clear the bad planes B, then set NO_DATA.
                    const kernel::SpanSet rows = warps[i]->noData.rowsIn(chunk.y0, chunk.y1());
                    for (const kernel::Span& sp : rows.spans()) {
                        for (int x = std::max(sp.x0, chunk.x0); x <= std::min(sp.x1, chunk.x1() - 1); ++x) {
                            kernel::MaskPixel& mp = b.mask(x, sp.y);
                            mp = (mp & ~bits.bad) | bits.noData;
                        }
                    }
                }
                kernel::scaleInPlace(b, warps[i]->scale);
                tileUsed[warpIndex[i]] += kernel::countAccepted(b, ctrl.andMask, chunk, targetN);
                kernel::clearMaskBits(b.mask, bits.remove);
                ptrs.push_back(&b);
            }
            kernel::stackRegion(ptrs, weights, ctrl, chunk, target);
        }
        for (std::size_t i = 0; i < ctx.warps.size(); ++i) {
            ctx.usedLocal[i] += tileUsed[i];
        }
        if (checkpointing && secondsSince(lastCheckpoint) >= ctx.ckpt.tileInterval) {
            const auto tc = Clock::now();
            if (direct != nullptr) {
                io::writeTileCheckpoint(tilePath, key, kernel::cutout(*direct, tile),
                                        kernel::cutout(*directN, tile), tileUsed);
            } else {
                io::writeTileCheckpoint(tilePath, key, result.pixels, result.nImage, tileUsed);
            }
            ckptSeconds += secondsSince(tc);
            std::error_code ec;
            ckptBytes += static_cast<std::int64_t>(std::filesystem::file_size(tilePath, ec));
            ++ckptTiles;
            lastCheckpoint = Clock::now();
            maybeInjectFailure("tile-checkpoint");
        }
        if (direct == nullptr) {
            out.push_back(std::move(result));
        }
        ++done;
        if (ctx.isRoot() && secondsSince(lastLog) > 10.0) {
            lastLog = Clock::now();
            log().info("patch {}: final stack: {}/{} of this rank's tiles", ctx.name, done, tiles.size());
        }
    }
    log().debug("patch {}: final stack of {} warps on {} tiles ({} rows per chunk) in {:.2f} s", ctx.name,
                warps.size(), tiles.size(), rows, secondsSince(t0));
    if (checkpointing) {
        log().info("patch {}: {} of {} tile checkpoints (checkpoint.tile_interval = {} s), {} in {:.2f} s",
                   ctx.name, ckptTiles, tiles.size(), ctx.ckpt.tileInterval, geom::formatByteSize(ckptBytes),
                   ckptSeconds);
    }
    return out;
}

}  // namespace

void finalStack(PatchContext& ctx) {
    std::vector<parallel::Tile> mine;
    guarded(
        ctx, "final",
        [&] {
            maybeInjectFailure("final");  // after the decision checkpoint
            if (ctx.isRoot()) {
                ctx.coadd = MaskedImage(ctx.box);
                ctx.nImage = kernel::ImageU16(ctx.box, 0);
            }
            mine = stackTiles(ctx, ctx.isRoot() ? &ctx.coadd : nullptr, ctx.isRoot() ? &ctx.nImage : nullptr);
        },
        /*injectAtStart=*/false);
    parallel::gatherTiles(ctx.group, 0, mine, ctx.coadd, ctx.nImage);
    mine.clear();
    for (const auto& counts : parallel::gatherToRoot(ctx.group, ctx.usedLocal)) {
        for (std::size_t i = 0; i < counts.size() && i < ctx.warps.size(); ++i) {
            ctx.warps[i].nUsedPixels += counts[i];
        }
    }
}

}  // namespace safeclip::pipeline
