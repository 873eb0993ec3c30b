/// @file CosmicRays.cpp  Stage "cosmic_rays" (optional: cosmic_rays.detect): LSST's single-frame
/// cosmic-ray detection (kernel::findCosmicRays, meas_algorithms findCosmicRays) run on each warp
/// before any stack, for warps that arrive with cosmic rays unflagged. The pixels it finds are not
/// repaired in the warp: they get the CR plane in every read of the warp (paintCosmicRays), and
/// with the stage on CR is a bad plane (MaskPlanes.cpp), so they are left out of the weights, both
/// trial stacks, the overlap counts and the final stack, and map to REJECTED in the coadd. The
/// coadd records them: n_cr_pixels / n_cosmic_rays per warp in INPUTS and every span in CR_SPANS.
///
/// Warp i is searched by group rank i mod R over its whole box (the weights stage, next, samples
/// the whole warp too), in cells of cosmic_rays.cell_size px (geom::cosmicRayCells): each cell is
/// searched with a halo of cosmicRayHalo px around it and keeps the CR pixels inside it. The cells
/// are a science setting, as upstream's per-detector runs are: they do not depend on ranks, tiles
/// or memory.max_per_rank, so neither do the CR pixels. A warp no larger than a cell is searched
/// whole, as upstream searches an exposure; in a larger warp a CR whose first-pass cluster reaches
/// farther than the halo beyond its cell's edge (kernel/CosmicRays.h, "Reach") can be decided
/// otherwise than in a whole-warp search (in practice only chains of first-pass candidates along a
/// bright satellite trail reach so far). The results are all-gathered; the stage runs again on
/// --resume (it is deterministic; its spans are not checkpointed).
#include "safeclip/kernel/CosmicRays.h"

#include <algorithm>
#include <chrono>

#include "safeclip/geom/MemoryBudget.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/parallel/Collectives.h"
#include "safeclip/parallel/Logging.h"
#include "safeclip/parallel/Signals.h"
#include "safeclip/pipeline/Driver.h"
#include "safeclip/pipeline/Guard.h"
#include "safeclip/pipeline/Stages.h"

namespace safeclip::pipeline {

using kernel::Box;
using kernel::SpanSet;
using parallel::log;

int cosmicRayHalo(const kernel::CosmicRayControl& ctrl) {
    // The margin a cluster needs (kernel/CosmicRays.h, "Reach"), its growth, the linking distance
    // around the cell, and 16 px of slack; rounded up to a multiple of 8 (40 px by default).
    const int h = ctrl.edgeMargin() + ctrl.niteration + 1 + ctrl.linkDistance() + 16;
    return (h + 7) / 8 * 8;
}

namespace {

/// One warp's result, from the rank that searched it.
struct WarpCosmicRays {
    std::int64_t index = 0;
    std::vector<kernel::Span> spans;
    std::int64_t nCosmicRays = 0;
    std::string problem;  ///< "" or why the warp cannot be searched (then input.on_bad_warp)

    template <class Archive>
    void serialize(Archive& ar, const unsigned int /*version*/) {
        ar& index& spans& nCosmicRays& problem;
    }
};

/// The CR pixels of warp `w` inside `cell` (searched with its halo) and the CRs whose first pixel
/// lies in it.
std::pair<SpanSet, std::int64_t> searchCell(const PatchContext& ctx, const Warp& w, const Box& warpBox,
                                            const Box& cell, double psfSigma, kernel::MaskedImage& buf) {
    const CosmicRaySettings& cr = ctx.settings.cosmicRays;
    kernel::CosmicRayControl ctrl = cr.control;
    ctrl.keepCRs = true;  // find only: the warp's pixels are never changed
    const Box hb = cell.grown(cosmicRayHalo(ctrl)).intersect(warpBox);
    w.reader->read(hb, buf);
    // CR on the scratch copy only; pixels with a bad plane (CR included) are never candidates,
    // and as upstream none may touch an INTRP pixel.
    const kernel::CosmicRayResult res =
        kernel::findCosmicRays(buf, psfSigma, cr.background, ctrl, ctx.bits.bad,
                               ctx.bits.cr != 0 ? ctx.bits.cr : 1U, ctx.bits.intrp);
    std::int64_t n = 0;
    for (const SpanSet& one : res.crs) {
        const kernel::Span& first = one.spans().front();
        n += cell.contains(first.x0, first.y) ? 1 : 0;
    }
    return {res.pixels.clippedTo(cell), n};
}

/// The warps this rank searches (warp i on group rank i mod R).
std::vector<WarpCosmicRays> searchMine(const PatchContext& ctx) {
    const int me = parallel::rankOf(ctx.group);
    const int n = parallel::sizeOf(ctx.group);
    const CosmicRaySettings& cr = ctx.settings.cosmicRays;
    std::vector<WarpCosmicRays> mine;
    kernel::MaskedImage buf;
    for (std::size_t i = 0; i < ctx.warps.size(); ++i) {
        const Warp& w = ctx.warps[i];
        if (!w.used || static_cast<int>(i % static_cast<std::size_t>(n)) != me) {
            continue;
        }
        WarpCosmicRays out;
        out.index = static_cast<std::int64_t>(i);
        const double sigma = cr.psfSigma > 0 ? cr.psfSigma : w.reader->header().psfSigma.value_or(0.0);
        if (!(sigma > 0)) {
            out.problem = w.input.path +
                          ": no usable PSF width (PSFSIGMA or FWHM card missing or not > 0), which the "
                          "cosmic-ray stage needs (or set cosmic_rays.psf_sigma)";
            mine.push_back(std::move(out));
            continue;
        }
        const Box warpBox = w.reader->header().box;
        std::vector<SpanSet> found;
        std::int64_t pixels = 0;
        const geom::CosmicRayStage stage{cr.cellSize, cosmicRayHalo(cr.control), cr.control.nCrPixelMax};
        (void)geom::cosmicRayPeakBytes(warpBox, stage,
                                       ctx.settings.memoryBudget);  // throws if a cell does not fit
        const std::vector<Box> cells = geom::cosmicRayCells(warpBox, cr.cellSize);
        try {
            for (const Box& cell : cells) {
                parallel::throwIfStopRequested("during the cosmic-ray search");
                auto [spans, count] = searchCell(ctx, w, warpBox, cell, sigma, buf);
                pixels += spans.area();
                out.nCosmicRays += count;
                found.push_back(std::move(spans));
            }
        } catch (const TooManyCosmicRayPixels& e) {
            pixels = e.nPixels();
        }
        if (pixels > cr.control.nCrPixelMax) {
            out.problem = w.input.path +
                          ": too many cosmic-ray pixels (more than cosmic_rays.n_cr_pixel_max = " +
                          std::to_string(cr.control.nCrPixelMax) + ")";
        } else {
            out.spans = kernel::uniteAll(found).spans();
        }
        log().debug("cosmic rays in {}: {} CRs, {} px, in {} cells", w.input.path, out.nCosmicRays, pixels,
                    cells.size());
        mine.push_back(std::move(out));
    }
    return mine;
}

}  // namespace

void paintCosmicRays(const Warp& w, const Box& chunk, kernel::MaskPixel* mask, kernel::MaskPixel crBit) {
    if (!w.cosmicRays.empty()) {
        w.cosmicRays.rowsIn(chunk.y0, chunk.y1()).paint(mask, chunk, crBit);
    }
}

void findWarpCosmicRays(PatchContext& ctx) {
    if (!ctx.settings.cosmicRays.detect) {
        return;
    }
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<WarpCosmicRays> mine;
    guarded(ctx, "cosmic_rays", [&] { mine = searchMine(ctx); });
    std::int64_t crs = 0;
    std::int64_t pixels = 0;
    // Every rank sees the same gathered results and applies input.on_bad_warp alike.
    guarded(
        ctx, "cosmic_rays",
        [&] {
            for (auto& fromRank : parallel::allGather(ctx.group, mine)) {
                for (WarpCosmicRays& r : fromRank) {
                    Warp& w = ctx.warps[static_cast<std::size_t>(r.index)];
                    if (!r.problem.empty()) {
                        ctx.failWarp(w, r.problem);
                        continue;
                    }
                    w.cosmicRays = SpanSet::fromSortedSpans(std::move(r.spans));
                    w.nCosmicRays = r.nCosmicRays;
                    crs += w.nCosmicRays;
                    pixels += w.cosmicRays.area();
                }
            }
        },
        /*injectAtStart=*/false);
    ctx.requireUsedWarps();
    ctx.result.nCosmicRayPixels = pixels;
    if (ctx.isRoot()) {
        log().info("patch {}: cosmic rays: {} found ({} px) in {} warps in {:.2f} s", ctx.name, crs, pixels,
                   ctx.usedWarps().size(),
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
}

}  // namespace safeclip::pipeline
