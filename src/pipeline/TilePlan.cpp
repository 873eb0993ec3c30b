/// @file TilePlan.cpp  Stages "detection" (the patch's detection controls and halo, spec §0.3,
/// §6.1) and "setup" (the tile plan of geom::planTiles, the same on every rank of the group).
#include <algorithm>
#include <vector>

#include "safeclip/geom/MemoryBudget.h"
#include "safeclip/geom/Plan.h"
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
        const int halo =
            trialPass ? tileHalo(ctx.settings.detect, haloSigma(ctx.settings.detect, ctx.headerPsfSigmas))
                      : 0;
        std::vector<kernel::Box> warpBoxes;
        for (const Warp& w : ctx.warps) {
            warpBoxes.push_back(w.used ? w.reader->header().box : kernel::Box());
        }
        const int nUsed = static_cast<int>(ctx.usedWarps().size());
        const geom::TilePlan plan =
            geom::planTiles(ctx.box, parallel::sizeOf(ctx.group), ctx.settings.tileSize, halo, nUsed,
                            ctx.settings.memoryBudget);
        (void)geom::checkedPatchBudget(ctx.box, plan, parallel::sizeOf(ctx.group), ctx.settings.tileSize,
                                       warpBoxes, trialPass, ctx.settings.memoryBudget, ctx.name, 0,
                                       cosmicRayStage(ctx.settings));
    });
}

void planTiles(PatchContext& ctx) {
    guarded(ctx, "setup", [&] {
        ctx.tiles = geom::planTiles(ctx.box, parallel::sizeOf(ctx.group), ctx.settings.tileSize, ctx.halo,
                                    static_cast<int>(ctx.usedWarps().size()), ctx.settings.memoryBudget);
        // Every tile's trial and final chunk rows must fit before any stack starts: a budget that
        // cannot work fails here, naming the smallest one that does (the model of `safeclip plan`).
        // (The weights were measured before; the model still covers them, so plan and run agree.)
        std::vector<kernel::Box> warpBoxes;
        for (const Warp& w : ctx.warps) {
            warpBoxes.push_back(w.used ? w.reader->header().box : kernel::Box());
        }
        (void)geom::checkedPatchBudget(ctx.box, ctx.tiles, parallel::sizeOf(ctx.group), ctx.settings.tileSize,
                                       warpBoxes, ctx.clipStages && !ctx.resumed, ctx.settings.memoryBudget,
                                       ctx.name, 0, cosmicRayStage(ctx.settings));
    });
}

}  // namespace safeclip::pipeline
