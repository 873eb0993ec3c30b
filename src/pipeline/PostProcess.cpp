/// @file PostProcess.cpp  Stage "post" (spec §7.2.4-5, §8) on the root: INEXACT_PSF, NO_DATA,
/// interpolation and the variance fix of the gathered coadd (kernel::postProcessCoadd), and the
/// patch's summary counts.
#include "safeclip/kernel/Interp.h"
#include "safeclip/parallel/Logging.h"
#include "safeclip/pipeline/Guard.h"
#include "safeclip/pipeline/Stages.h"

namespace safeclip::pipeline {

using parallel::log;

void postProcess(PatchContext& ctx) {
    guardedOnRoot(ctx, "post", [&] {
        const MaskBits& b = ctx.bits;
        const kernel::PostBits pb{b.noData, b.intrp, b.inexactPsf,
                                  static_cast<kernel::MaskPixel>(b.sensorEdge | b.clipped | b.rejected)};
        const kernel::PostResult post = kernel::postProcessCoadd(ctx.coadd, pb, ctx.settings.interp);
        log().info("patch {}: post-processing: {} NO_DATA pixels, {} interpolated (fallback {:.4g})",
                   ctx.name, post.nNoData, post.nInterpolated, post.fallbackValue);
        PatchResult& r = ctx.result;
        for (const kernel::MaskPixel m : ctx.coadd.mask.data()) {
            if ((m & b.clipped) != 0) {
                ++r.nCoaddClippedPixels;
            }
        }
        for (const kernel::FootprintRow& f : ctx.decisions.footprints) {
            r.nSingle += f.rule == "single" ? 1 : 0;
            r.nSingleOnly += f.rule == "single-only-candidate" ? 1 : 0;
            r.nDouble += f.rule == "double" ? 1 : 0;
        }
        for (const Warp& w : ctx.warps) {
            if (w.used) {
                ++r.nUsed;
                r.nClippedWarpPixels += w.nClippedPixels;
                r.nBigFootprints += w.nBigFootprints;
            } else {
                r.skippedWarps.push_back(w.input.path + ": " + w.status);
            }
        }
    });
}

}  // namespace safeclip::pipeline
