/// @file Weights.cpp  Stage "weights" (spec §3): w_i = 1 / (unweighted MEANCLIP of the warp's
/// scaled variance over its good pixels). Warp i is measured by group rank i mod R, streaming
/// IMAGE, VARIANCE and MASK in row chunks; the measurements are all-gathered so every rank treats
/// bad warps alike: like upstream's prepareInputs, a warp whose image is all NaN or whose weight is
/// not finite is left out with a warning (PatchSettings::skipEmptyWarps); any other unusable weight
/// follows input.on_bad_warp.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "safeclip/geom/MemoryBudget.h"
#include "safeclip/geom/Plan.h"
#include "safeclip/io/Checkpoint.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/SampleStats.h"
#include "safeclip/parallel/Collectives.h"
#include "safeclip/parallel/Logging.h"
#include "safeclip/pipeline/Guard.h"
#include "safeclip/pipeline/Stages.h"

namespace safeclip::pipeline {

using parallel::log;

namespace {

/// One warp's weight measurement (by the rank that read it), all-gathered.
struct WeightMeasure {
    std::int64_t index = 0;
    float weight = 0;
    std::string status;
    std::string checksum;
    bool upstreamSkips = false;  ///< a case upstream's prepareInputs skips (all NaN, non-finite weight)

    template <class Archive>
    void serialize(Archive& ar, const unsigned int /*version*/) {
        ar& index& weight& status& checksum& upstreamSkips;
    }
};

/// (warp index, weight, status) for the warps this rank measures: warp i on group rank i mod R.
std::vector<WeightMeasure> measureMine(PatchContext& ctx) {
    const int me = parallel::rankOf(ctx.group);
    const int n = parallel::sizeOf(ctx.group);
    std::vector<WeightMeasure> mine;
    std::vector<float> img;
    std::vector<float> var;
    std::vector<kernel::MaskPixel> mask;
    // one patch-sized sample buffer, reused for every warp
    const auto sample = std::make_unique_for_overwrite<float[]>(static_cast<std::size_t>(ctx.box.area()));
    const int rows = geom::weightsChunkRows(ctx.box, ctx.settings.memoryBudget);
    for (std::size_t i = 0; i < ctx.warps.size(); ++i) {
        Warp& w = ctx.warps[i];
        if (!w.used || static_cast<int>(i % static_cast<std::size_t>(n)) != me) {
            continue;
        }
        // The sample keeps pixel order.
        std::size_t kept = 0;
        bool anyNotNaN = false;
        const float s2 = w.scale * w.scale;
        const kernel::MaskPixel bad = ctx.bits.bad;
        for (const kernel::Box& chunk : geom::rowChunks(ctx.box, rows)) {
            img.resize(static_cast<std::size_t>(chunk.area()));
            var.resize(static_cast<std::size_t>(chunk.area()));
            mask.resize(static_cast<std::size_t>(chunk.area()));
            w.reader->readPlanes(chunk, img.data(), mask.data(), var.data());
            // Upstream tests NaN only (an all-inf image is not "all NaN").
            anyNotNaN =
                anyNotNaN || std::any_of(img.begin(), img.end(), [](float v) { return !std::isnan(v); });
            float* dst = sample.get();
            for (std::size_t k = 0; k < var.size(); ++k) {
                const float v = var[k] * s2;
                if ((mask[k] & bad) == 0 && std::isfinite(v)) {
                    dst[kept++] = v;
                }
            }
        }
        const double meanVar =
            kernel::meanClipUnweighted({sample.get(), kept}, ctx.settings.sigmaClip, ctx.settings.clipIter);
        const double weight = 1.0 / meanVar;
        std::string status = "used";
        bool upstreamSkips = false;
        if (!anyNotNaN) {
            // Upstream's prepareInputs: `if numpy.isnan(tempExp.image.array).all(): continue`.
            status = "skipped: every image pixel is NaN";
            upstreamSkips = true;
        } else if (!std::isfinite(static_cast<float>(weight))) {
            // Upstream: "Non-finite weight for %s: skipping" (zero variance, or no good pixel).
            status = "skipped: non-finite weight (clipped mean variance " + std::to_string(meanVar) + ")";
            upstreamSkips = true;
        } else if (!(weight > 0)) {
            // A finite weight <= 0 (negative or infinite variance): upstream would stack it; here it
            // is a bad warp (a negative weight would be wrong science, not merely a bad number).
            status =
                "skipped: no positive finite weight (clipped mean variance " + std::to_string(meanVar) + ")";
        }
        mine.push_back({static_cast<std::int64_t>(i), static_cast<float>(weight), status,
                        io::fileChecksum(w.input.path), upstreamSkips});
    }
    return mine;
}

void applyWeights(PatchContext& ctx, const std::vector<std::vector<WeightMeasure>>& gathered) {
    for (const auto& fromRank : gathered) {
        for (const WeightMeasure& m : fromRank) {
            Warp& w = ctx.warps[static_cast<std::size_t>(m.index)];
            w.weight = m.weight;
            w.checksum = m.checksum;
            if (m.status != "used") {
                // Every rank sees the same gathered statuses and throws alike.
                const bool skip = m.upstreamSkips ? ctx.settings.skipEmptyWarps : ctx.settings.skipBadWarps;
                if (!skip) {
                    throw InputError(
                        w.input.path + ": " + m.status.substr(std::string("skipped: ").size()) +
                        (m.upstreamSkips ? " (input.on_bad_warp = strict)" : " (input.on_bad_warp = fail)"));
                }
                w.used = false;
                w.status = m.status;
                if (ctx.isRoot()) {
                    log().warn("patch {}: {}: {}", ctx.name, w.input.path, w.status);
                }
            }
        }
    }
}

}  // namespace

void measureWeights(PatchContext& ctx) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<WeightMeasure> mine;
    guarded(ctx, "weights", [&] { mine = measureMine(ctx); });
    applyWeights(ctx, parallel::allGather(ctx.group, mine));
    if (ctx.isRoot()) {
        log().info("patch {}: weights for {} warps in {:.2f} s", ctx.name, ctx.usedWarps().size(),
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
}

}  // namespace safeclip::pipeline
