/// @file TrialStacks.cpp  Stage "trial" (spec §5, §6.1, §6.2): per tile of this rank, both trial
/// stacks (MEAN and MEANCLIP) over the tile plus its halo, detection on their difference, and the
/// detected pixels inside the tile cut into pieces with additive per-warp counts (each warp's bad
/// and good DETECTED pixels are kept as spans for them). Pieces are gathered to the root. (Warps
/// whose image is all NaN were left out by the weights pass, as upstream's prepareInputs does; the
/// whole-warp DETECTED components of the big-footprint rule come from the weights pass too.)
#include <algorithm>
#include <chrono>
#include <iterator>

#include "safeclip/geom/MemoryBudget.h"
#include "safeclip/geom/Plan.h"
#include "safeclip/kernel/ClipDecision.h"
#include "safeclip/kernel/Detect.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/PixelOps.h"
#include "safeclip/kernel/Stack.h"
#include "safeclip/parallel/Collectives.h"
#include "safeclip/parallel/Logging.h"
#include "safeclip/parallel/Signals.h"
#include "safeclip/pipeline/Guard.h"
#include "safeclip/pipeline/Stages.h"

namespace safeclip::pipeline {

using kernel::Box;
using kernel::MaskedImage;
using kernel::SpanSet;
using parallel::log;

namespace {

/// One tile's contribution to the reduction.
struct TileResult {
    std::vector<kernel::FootprintPiece> pieces;
    std::vector<std::vector<kernel::Span>> bad, detGood;  ///< per used warp, inside the tile
};

TileResult trialTile(const PatchContext& ctx, const Box& tile, const std::vector<Warp*>& warps,
                     const std::vector<float>& weights) {
    const MaskBits& bits = ctx.bits;
    TileResult out;
    const std::size_t n = warps.size();
    out.bad.resize(n);
    out.detGood.resize(n);
    std::vector<kernel::Span> detAllRow;  // appendMaskRuns3's third list, not needed here
    const Box hb = tile.grown(ctx.halo).intersect(ctx.box);
    kernel::ImageF dImage(hb);
    kernel::ImageF dVar(hb);
    std::vector<MaskedImage> bufs(n);
    MaskedImage mean;  // trial outputs of one chunk, reused across chunks
    MaskedImage clip;
    const int rows = geom::stackChunkRows(hb, static_cast<int>(n), geom::trialFixedBytes(hb),
                                          ctx.settings.memoryBudget, ctx.name, ctx.tiles.tileSize, ctx.box);
    for (const Box& chunk : geom::rowChunks(hb, rows)) {
        std::vector<const MaskedImage*> ptrs;
        const int ty0 = std::max(chunk.y0, tile.y0);
        const int ty1 = std::min(chunk.y1(), tile.y1());
        for (std::size_t i = 0; i < n; ++i) {
            warps[i]->reader->read(chunk, bufs[i]);
            MaskedImage& b = bufs[i];
            paintCosmicRays(*warps[i], chunk, b.mask.data().data(), bits.cr);
            for (int y = ty0; y < ty1; ++y) {
                const kernel::MaskPixel* m = b.mask.row(y) + (tile.x0 - chunk.x0);
                kernel::appendMaskRuns3(out.bad[i], out.detGood[i], detAllRow, y, tile.x0, m, tile.width,
                                        bits.bad, bits.det);
                detAllRow.clear();
            }
            kernel::scaleInPlace(b, warps[i]->scale);
            kernel::clearMaskBits(b.mask, bits.remove);
            ptrs.push_back(&b);
        }
        mean.reshape(chunk);  // every pixel is written by the stacker
        clip.reshape(chunk);
        kernel::stackRegionPair(ptrs, weights, ctx.meanCtrl, ctx.clipCtrl, chunk, mean, clip);
        kernel::differenceRows(mean, clip, chunk, dImage, dVar);
    }
    bufs.clear();
    // Detected pixels inside the tile: with the halo they equal the whole-patch detection there.
    const SpanSet detected =
        kernel::uniteAll(kernel::detectFootprints(dImage, dVar, ctx.detect)).clippedTo(tile);
    std::vector<kernel::WarpMaskSpans> local(n);
    for (std::size_t i = 0; i < n; ++i) {
        local[i].bad = SpanSet::fromSortedSpans(out.bad[i]);
        local[i].detGood = SpanSet::fromSortedSpans(out.detGood[i]);
    }
    for (const SpanSet& piece : kernel::connectedComponents8(detected)) {
        kernel::FootprintPiece p;
        p.spans = piece.spans();
        const Box bb = piece.bbox();
        for (std::size_t i = 0; i < n; ++i) {
            const kernel::WarpMaskSpans near{local[i].bad.rowsIn(bb.y0, bb.y1()),
                                             local[i].detGood.rowsIn(bb.y0, bb.y1()), SpanSet()};
            const kernel::WarpCounts c = kernel::overlapCounts(piece, near);
            p.ign.push_back(c.ign);
            p.det.push_back(c.det);
        }
        out.pieces.push_back(std::move(p));
    }
    return out;
}

}  // namespace

void trialStacks(PatchContext& ctx) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<TileResult> mine;
    std::size_t nWarps = 0;
    guarded(ctx, "trial", [&] {
        const std::vector<Warp*> warps = ctx.usedWarps();
        if (warps.empty()) {
            throw InputError("patch " + ctx.name + ": no usable warps");
        }
        nWarps = warps.size();
        const std::vector<float> weights = ctx.usedWeights();
        for (std::size_t t : ctx.myTiles()) {
            parallel::throwIfStopRequested("during the trial stacks");
            mine.push_back(trialTile(ctx, ctx.tiles.tiles[t], warps, weights));
        }
    });
    // Gather the pieces to the root.
    std::vector<kernel::FootprintPiece> pieces;
    for (TileResult& r : mine) {
        std::move(r.pieces.begin(), r.pieces.end(), std::back_inserter(pieces));
    }
    mine.clear();
    const auto gathered = parallel::gatherToRoot(ctx.group, pieces);
    if (ctx.isRoot()) {
        ctx.pieces.clear();
        for (const auto& p : gathered) {
            ctx.pieces.insert(ctx.pieces.end(), p.begin(), p.end());
        }
        log().info(
            "patch {}: trial stacks and detection of {} warps in {} tiles of {} px (halo {}) in {:.2f} s",
            ctx.name, nWarps, ctx.tiles.tiles.size(), ctx.tiles.tileSize, ctx.halo,
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
}

}  // namespace safeclip::pipeline
