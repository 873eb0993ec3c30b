/// @file MaskPlanes.cpp  The settings' mask planes (by name) as bits of the patch's mask
/// dictionary, and the stack controls that use them. Part of the "open" stage: the bits are known
/// only once every warp has conformed to the dictionary (a plane may exist only in the warps' MP_*
/// cards, e.g. NOT_DEBLENDED or a survey's own plane).
#include "safeclip/kernel/Error.h"
#include "safeclip/pipeline/Stages.h"

namespace safeclip::pipeline {

using kernel::MaskPixel;

namespace {

kernel::StackControl stackControl(const PatchContext& ctx, kernel::Statistic stat, MaskPixel andMask) {
    const MaskBits& bits = ctx.bits;
    kernel::StackControl c;
    c.statistic = stat;
    c.sigmaClip = ctx.settings.sigmaClip;
    c.clipIter = ctx.settings.clipIter;
    c.andMask = andMask;
    c.clippedBit = bits.clipped;
    c.noGoodPixelsMask = bits.noData;
    c.calcErrorFromInputVariance = ctx.settings.calcErrorFromInputVariance;
    // §7.2.2: (A & ~NO_DATA & ~EDGE & ~CLIPPED -> REJECTED), (EDGE -> SENSOR_EDGE), (CLIPPED -> CLIPPED)
    const MaskPixel rejectedSrc = andMask & ~bits.noData & ~bits.edge & ~bits.clipped;
    c.maskMap = {{rejectedSrc, bits.rejected}, {bits.edge, bits.sensorEdge}, {bits.clipped, bits.clipped}};
    for (const auto& [plane, t] : ctx.settings.maskPropagationThresholds) {
        const MaskPixel b = ctx.dict.bitMask(plane);
        if (b == 0) {  // as stack.bad_mask_planes: a typo must not silently propagate nothing
            throw ConfigError("stack.mask_propagation_thresholds: unknown mask plane '" + plane +
                              "' (not a default plane and not in any input's MP_* cards)");
        }
        c.propagationThresholds.emplace_back(b, t);
    }
    c.validate();
    return c;
}

}  // namespace

void resolveMaskPlanes(PatchContext& ctx) {
    const kernel::MaskDict& dict = ctx.dict;
    MaskBits bits;
    for (const auto& name : ctx.settings.badMaskPlanes) {
        const int bit = dict.bitOf(name);
        if (bit < 0) {
            throw ConfigError("stack.bad_mask_planes: unknown mask plane '" + name +
                              "' (not a default plane and not in any input's MP_* cards)");
        }
        bits.bad |= static_cast<MaskPixel>(1U << static_cast<unsigned>(bit));
    }
    bits.det = dict.bitMask("DETECTED") | dict.bitMask("DETECTED_NEGATIVE");
    bits.clipped = dict.bitMask("CLIPPED");
    bits.rejected = dict.bitMask("REJECTED");
    bits.sensorEdge = dict.bitMask("SENSOR_EDGE");
    bits.inexactPsf = dict.bitMask("INEXACT_PSF");
    bits.noData = dict.bitMask("NO_DATA");
    bits.edge = dict.bitMask("EDGE");
    bits.intrp = dict.bitMask("INTRP");
    for (const auto& name : ctx.settings.removeMaskPlanes) {
        bits.remove |= dict.bitMask(name);
    }
    bits.cr = dict.bitMask("CR");
    if (ctx.settings.cosmicRays.detect) {
        // The pixels the "cosmic_rays" stage finds (and any CR the warps already carry) are left
        // out of the weights, both trial stacks, the overlap counts and the final stack; in the
        // coadd they map to REJECTED like every other bad plane (spec §7.2.2).
        bits.bad |= bits.cr;
    }
    ctx.bits = bits;
    ctx.meanCtrl = stackControl(ctx, kernel::Statistic::Mean, bits.bad);
    ctx.clipCtrl = stackControl(ctx, kernel::Statistic::MeanClip, bits.bad);
    ctx.finalCtrl = stackControl(ctx, kernel::Statistic::Mean, bits.bad | bits.clipped);
}

}  // namespace safeclip::pipeline
