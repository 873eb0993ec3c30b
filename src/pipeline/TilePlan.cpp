/// @file TilePlan.cpp  Stages "detection" (the patch's detection controls and halo, spec §0.3,
/// §6.1), "budget" (the plan of `safeclip plan`, checked from the headers before any pixel is read)
/// and "setup" (the tile plan of geom::planTiles, the same on every rank of the group). In
/// comparewarp mode both plans hold the cw_stats and cw_compare buffers too.
#include <algorithm>
#include <optional>
#include <vector>

#include "safeclip/geom/MemoryBudget.h"
#include "safeclip/geom/Plan.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/PsfMoments.h"
#include "safeclip/parallel/Collectives.h"
#include "safeclip/pipeline/Driver.h"
#include "safeclip/pipeline/Guard.h"
#include "safeclip/pipeline/Stages.h"

namespace safeclip::pipeline {

namespace {

/// detect.psf_sigma, or the CoaddPsf's determinant radius (spec §0.3, §6.1.2) for Gaussian warp
/// PSFs: the adaptive (SdssShape) moments of the mixture of the used warps' PSFSIGMA/FWHM Gaussians,
/// weighted by their coadd weights (kernel::mixtureDeterminantRadius). It lies between the smallest
/// and the largest header sigma, so the halo from the largest (haloSigma) always suffices.
double psfSigma(PatchContext& ctx) {
    if (ctx.settings.detect.psfSigma > 0) {
        ctx.psfSource = "config detect.psf_sigma";
        return ctx.settings.detect.psfSigma;
    }
    std::vector<double> sigmas;
    std::vector<double> weights;
    for (Warp* w : ctx.usedWarps()) {
        const auto& s = w->reader->header().psfSigma;
        if (!s) {
            throw ConfigError(w->input.path +
                              ": no PSFSIGMA or FWHM card and detect.psf_sigma = 0; set "
                              "detect.psf_sigma to the coadd PSF sigma in pixels");
        }
        sigmas.push_back(*s);
        weights.push_back(w->weight);
    }
    ctx.psfSource = "adaptive moments of the weight-averaged Gaussian PSFs (PSFSIGMA/FWHM)";
    return kernel::mixtureDeterminantRadius(sigmas, weights);
}

/// comparewarp's geometry from the headers of the warps that opened (a companion's PSF card when
/// the manifest names one), as `safeclip plan` computes it; nullopt when a PSF card is missing or a
/// companion does not open: "cw_setup" reports those.
std::optional<CompareWarpGeometry> headerGeometry(const PatchContext& ctx) {
    std::vector<CompareWarpPsf> psfs;
    for (const Warp& w : ctx.warps) {
        if (!w.used) {
            continue;
        }
        std::optional<double> sigma = w.reader->header().psfSigma;
        if (!w.input.psfMatchedPath.empty()) {
            try {
                sigma = io::WarpReader(w.input.psfMatchedPath).header().psfSigma;
            } catch (const Error&) {
                return std::nullopt;
            }
        }
        if (!sigma) {
            return std::nullopt;
        }
        psfs.push_back({w.input.path, *sigma, !w.input.psfMatchedPath.empty()});
    }
    return compareWarpGeometry(ctx.settings, psfs);
}

/// Per warp in input order: read from a PSF-matched companion (the manifest's "psf_matched").
std::vector<bool> psfMatchedWarps(const PatchContext& ctx) {
    std::vector<bool> out;
    for (const Warp& w : ctx.warps) {
        out.push_back(!w.input.psfMatchedPath.empty());
    }
    return out;
}

}  // namespace

void setupDetection(PatchContext& ctx) {
    guarded(ctx, "detection", [&] {
        ctx.detect = ctx.settings.detect;
        ctx.detect.psfSigma = psfSigma(ctx);
        ctx.detect.validate();
        // The halo from the largest header sigma (what `safeclip plan` computes); the max with the
        // detection's own need is a guard that never changes anything (mixture sigma <= max).
        ctx.halo =
            std::max(tileHalo(ctx.settings.detect, haloSigma(ctx.settings.detect, ctx.headerPsfSigmas)),
                     detectionHalo(ctx.detect));
        ctx.clipStages = true;
    });
}

void checkBudgetEarly(PatchContext& ctx) {
    guarded(ctx, "budget", [&] {
        // The plan `safeclip plan` makes from the headers alone (the halo from the largest header PSF
        // sigma, every warp that opened), checked before the first pixel is read: a budget that
        // cannot work fails now, not after the weights pass. The "setup" stage checks again with the
        // warps left after the weights (it can only need less).
        const bool trialPass = modeHasStage(ctx.settings.mode, "reduce") && !ctx.resumed;
        int halo = trialPass
                       ? tileHalo(ctx.settings.detect, haloSigma(ctx.settings.detect, ctx.headerPsfSigmas))
                       : 0;
        std::optional<geom::CompareWarpStage> compareWarp;
        if (ctx.settings.mode == "comparewarp") {
            const std::optional<CompareWarpGeometry> g = headerGeometry(ctx);
            if (!g) {
                return;  // "cw_setup" names the warp without a PSF card, "setup" checks the budget
            }
            halo = g->halo;
            compareWarp = compareWarpStage(*g, psfMatchedWarps(ctx));
        }
        std::vector<kernel::Box> warpBoxes;
        for (const Warp& w : ctx.warps) {
            warpBoxes.push_back(w.used ? w.reader->header().box : kernel::Box());
        }
        const int nUsed = static_cast<int>(ctx.usedWarps().size());
        const geom::TilePlan plan =
            geom::planTiles(ctx.box, parallel::sizeOf(ctx.group), ctx.settings.tileSize, halo, nUsed,
                            ctx.settings.memoryBudget, compareWarp.has_value());
        (void)geom::checkedPatchBudget(ctx.box, plan, parallel::sizeOf(ctx.group), ctx.settings.tileSize,
                                       warpBoxes, trialPass, ctx.settings.memoryBudget, ctx.name, 0,
                                       cosmicRayStage(ctx.settings), compareWarp);
    });
}

void planTiles(PatchContext& ctx) {
    guarded(ctx, "setup", [&] {
        // comparewarp: "cw_setup" has set the halo; the tiles must also hold cw_compare's buffers.
        std::optional<geom::CompareWarpStage> compareWarp;
        if (ctx.settings.mode == "comparewarp") {
            std::vector<bool> companions;
            for (const Warp& w : ctx.warps) {
                companions.push_back(w.matchedReader != nullptr);
            }
            compareWarp = geom::CompareWarpStage{ctx.cwMaxRadius, std::move(companions),
                                                 ctx.settings.compareWarp.preserveContainedBySource};
        }
        ctx.tiles = geom::planTiles(ctx.box, parallel::sizeOf(ctx.group), ctx.settings.tileSize, ctx.halo,
                                    static_cast<int>(ctx.usedWarps().size()), ctx.settings.memoryBudget,
                                    compareWarp.has_value());
        // Every tile's trial and final chunk rows must fit before any stack starts: a budget that
        // cannot work fails here, naming the smallest one that does (the model of `safeclip plan`).
        // (The weights were measured before; the model still covers them, so plan and run agree.)
        std::vector<kernel::Box> warpBoxes;
        for (const Warp& w : ctx.warps) {
            warpBoxes.push_back(w.used ? w.reader->header().box : kernel::Box());
        }
        (void)geom::checkedPatchBudget(ctx.box, ctx.tiles, parallel::sizeOf(ctx.group), ctx.settings.tileSize,
                                       warpBoxes, ctx.clipStages && !ctx.resumed, ctx.settings.memoryBudget,
                                       ctx.name, 0, cosmicRayStage(ctx.settings), compareWarp);
    });
}

}  // namespace safeclip::pipeline
