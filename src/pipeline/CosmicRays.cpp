/// @file CosmicRays.cpp  Stage "cosmic_rays" (optional: cosmic_rays.detect): LSST's single-frame
/// cosmic-ray detection (kernel::findCosmicRays, meas_algorithms findCosmicRays) run on each warp
/// before any stack, for warps that arrive with cosmic rays unflagged. The pixels it finds are not
/// repaired in the warp: they get the CR plane in every read of the warp (paintCosmicRays), and
/// with the stage on CR is a bad plane (MaskPlanes.cpp), so they are left out of the weights, both
/// trial stacks, the overlap counts and the final stack, and map to REJECTED in the coadd. The
/// coadd records them: n_cr_pixels / n_cosmic_rays per warp in INPUTS and every span in CR_SPANS.
///
/// Warp i is searched by group rank i mod R over its whole box (the weights stage, next, samples
/// the whole warp too), tile by tile when the whole box does not fit memory.max_per_rank
/// (geom::cosmicRayTiles). Exactness of the tiles: the kernel's answer for a cluster of CRs depends
/// only on pixels near it (kernel/CosmicRays.h, "Reach"), so a tile keeps the CR pixels inside it
/// from a run on the tile plus a halo, after checking that every cluster of first-pass candidates
/// that can reach the tile lies at least edgeMargin() inside that box; when one does not (a long
/// track), the halo doubles and the tile is searched again, up to the whole warp. So the CR pixels
/// do not depend on the tiles, the budget or the rank count. The results are all-gathered; the stage
/// runs again on --resume (it is deterministic; its spans are not checkpointed).
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
    // The margin a cluster needs, its growth, the linking distance around the tile, and 16 px of
    // slack so that most clusters never widen it; rounded up to a multiple of 8.
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

/// The part of `hb` at least `margin` px inside it on every side that is not an edge of the warp
/// (there the data end, for the tile as for the whole warp).
Box trustedInterior(const Box& hb, const Box& warp, int margin) {
    const int left = hb.x0 == warp.x0 ? 0 : margin;
    const int right = hb.x1() == warp.x1() ? 0 : margin;
    const int bottom = hb.y0 == warp.y0 ? 0 : margin;
    const int top = hb.y1() == warp.y1() ? 0 : margin;
    return Box{hb.x0 + left, hb.y0 + bottom, std::max(0, hb.width - left - right),
               std::max(0, hb.height - bottom - top)};
}

/// True when every cluster of first-pass candidates that can reach `tile` lies inside the trusted
/// interior of `hb`: then the kernel's CR pixels inside the tile are those of the whole warp.
/// Clusters are formed conservatively (candidates dilated by the linking distance, 8-connected).
bool tileIsExact(const kernel::CosmicRayResult& res, const Box& tile, const Box& hb, const Box& warp,
                 const kernel::CosmicRayControl& ctrl) {
    if (hb == warp || res.firstPass.empty()) {
        return true;
    }
    const Box trusted = trustedInterior(hb, warp, ctrl.edgeMargin());
    const Box near = tile.grown(ctrl.niteration + 1 + ctrl.linkDistance());
    // Disks of radius r link pixels up to ~2r + 1 apart: with r = ceil(3L/4) every pair within
    // Chebyshev distance L (Euclidean L·sqrt(2) on a diagonal) is linked.
    const int r = (3 * ctrl.linkDistance() + 3) / 4;
    const SpanSet linked = res.firstPass.dilateDisk(r, hb);
    for (const SpanSet& c : kernel::connectedComponents8(linked)) {
        const Box bb = c.bbox();
        if (!bb.intersect(near).empty() && !trusted.contains(bb)) {
            return false;
        }
    }
    return true;
}

/// The CR pixels of warp `w` inside `tile` and the CRs whose first pixel lies in it.
std::pair<SpanSet, std::int64_t> searchTile(const PatchContext& ctx, const Warp& w, const Box& warpBox,
                                            const Box& tile, double psfSigma, kernel::MaskedImage& buf) {
    const CosmicRaySettings& cr = ctx.settings.cosmicRays;
    kernel::CosmicRayControl ctrl = cr.control;
    ctrl.keepCRs = true;  // find only: the warp's pixels are never changed
    int halo = cosmicRayHalo(ctrl);
    for (;;) {
        const Box hb = tile.grown(halo).intersect(warpBox);
        const std::int64_t need = geom::cosmicRayBytes(hb, ctrl.nCrPixelMax);
        if (need > ctx.settings.memoryBudget) {
            throw ConfigError("memory.max_per_rank = " + geom::formatByteSize(ctx.settings.memoryBudget) +
                              ": a cosmic-ray cluster in " + w.input.path + " near tile " + tile.str() +
                              " needs the tile with a halo of " + std::to_string(halo) + " px (" + hb.str() +
                              ", " + geom::formatByteSize(need) + "); raise memory.max_per_rank");
        }
        w.reader->read(hb, buf);
        // CR on the scratch copy only; pixels with a bad plane (CR included) are never candidates,
        // and as upstream none may touch an INTRP pixel.
        const kernel::CosmicRayResult res =
            kernel::findCosmicRays(buf, psfSigma, cr.background, ctrl, ctx.bits.bad,
                                   ctx.bits.cr != 0 ? ctx.bits.cr : 1U, ctx.bits.intrp);
        if (tileIsExact(res, tile, hb, warpBox, ctrl)) {
            std::int64_t n = 0;
            for (const SpanSet& one : res.crs) {
                const kernel::Span& first = one.spans().front();
                n += tile.contains(first.x0, first.y) ? 1 : 0;
            }
            return {res.pixels.clippedTo(tile), n};
        }
        log().debug("{}: a cosmic-ray cluster reaches the edge of {} around tile {}: halo {} -> {} px",
                    w.input.path, hb.str(), tile.str(), halo, 2 * halo);
        halo *= 2;
    }
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
                          ": no PSFSIGMA or FWHM card, which the cosmic-ray stage needs (or set "
                          "cosmic_rays.psf_sigma)";
            mine.push_back(std::move(out));
            continue;
        }
        const Box warpBox = w.reader->header().box;
        std::vector<SpanSet> found;
        std::int64_t pixels = 0;
        try {
            for (const Box& tile : geom::cosmicRayTiles(warpBox, cosmicRayHalo(cr.control),
                                                        ctx.settings.memoryBudget, cr.control.nCrPixelMax)) {
                parallel::throwIfStopRequested("during the cosmic-ray search");
                auto [spans, count] = searchTile(ctx, w, warpBox, tile, sigma, buf);
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
