/// @file Weights.cpp  Stage "weights" (spec §3): w_i = 1 / (unweighted MEANCLIP of the warp's
/// scaled variance over its good pixels), measured over the warp's whole box as upstream's
/// prepareInputs does (a warp larger than the patch box gives the same weight whatever patch box is
/// chosen inside it). Warp i is measured by group rank i mod R, streaming VARIANCE and MASK in row
/// chunks; the same file read gives the crc32 of INPUTS and the all-NaN test (io::scanFile on the
/// IMAGE bytes). The measurements are all-gathered so every rank treats bad warps alike: like
/// upstream's prepareInputs, a warp whose image is all NaN or whose weight is not finite is left out
/// with a warning (PatchSettings::skipEmptyWarps); any other unusable weight follows
/// input.on_bad_warp.
///
/// In a mode that clips, the same MASK rows give each warp's DETECTED pixels over its whole box
/// (spec §6.2: the big-footprint rule's components V_i are those of the whole warp mask); the
/// components that reach the patch box are sent to the group root for the "reduce" stage.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <string_view>

#include "safeclip/geom/MemoryBudget.h"
#include "safeclip/geom/Plan.h"
#include "safeclip/io/Checkpoint.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/SampleStats.h"
#include "safeclip/parallel/Collectives.h"
#include "safeclip/parallel/Logging.h"
#include "safeclip/pipeline/Driver.h"
#include "safeclip/pipeline/Guard.h"
#include "safeclip/pipeline/Stages.h"

namespace safeclip::pipeline {

using kernel::Box;
using kernel::SpanSet;
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

/// (warp index, DETECTED spans of the components that reach the patch box), gathered to the root.
using DetectedSpans = std::vector<std::pair<std::int64_t, std::vector<kernel::Span>>>;

/// The DETECTED components of a whole warp that reach the patch box (all of them when the warp box
/// is the patch box): no other component can overlap a footprint, which lies inside the patch.
SpanSet componentsReaching(SpanSet detected, const Box& warpBox, const Box& patch) {
    if (warpBox == patch) {
        return detected;
    }
    std::vector<SpanSet> keep;
    for (SpanSet& g : kernel::connectedComponents8(detected)) {
        if (!g.clippedTo(patch).empty()) {
            keep.push_back(std::move(g));
        }
    }
    return kernel::uniteAll(keep);
}

/// True when some IMAGE pixel of the warp is not NaN, read through the warp's reader in chunks of
/// `rows` into `buf` (used only when the IMAGE is not plain float32, so io::scanFile cannot test it).
bool anyImageNotNaN(const Warp& w, const Box& warpBox, int rows, std::vector<float>& buf) {
    for (const Box& chunk : geom::rowChunks(warpBox, rows)) {
        buf.resize(static_cast<std::size_t>(chunk.area()));
        w.reader->readPlanes(chunk, buf.data(), nullptr, nullptr);
        if (std::any_of(buf.begin(), buf.end(), [](float v) { return !std::isnan(v); })) {
            return true;
        }
    }
    return false;
}

/// The weights of the warps this rank measures (warp i on group rank i mod R), and with
/// `wantDetected` their DETECTED components that reach the patch box.
std::pair<std::vector<WeightMeasure>, DetectedSpans> measureMine(PatchContext& ctx, bool wantDetected) {
    const int me = parallel::rankOf(ctx.group);
    const int n = parallel::sizeOf(ctx.group);
    std::vector<WeightMeasure> mine;
    DetectedSpans detected;
    std::vector<float> var;
    std::vector<kernel::MaskPixel> mask;
    std::unique_ptr<float[]> sample;  // warp-sized, reallocated only when the warp size changes
    std::int64_t sampleSize = -1;
    for (std::size_t i = 0; i < ctx.warps.size(); ++i) {
        Warp& w = ctx.warps[i];
        if (!w.used || static_cast<int>(i % static_cast<std::size_t>(n)) != me) {
            continue;
        }
        const Box warpBox = w.reader->header().box;
        const int rows = geom::weightsChunkRows(warpBox, ctx.settings.memoryBudget);
        if (sampleSize != warpBox.area()) {
            sample.reset();  // the old buffer goes before the new one comes: one sample at a time
            sample = std::make_unique_for_overwrite<float[]>(static_cast<std::size_t>(warpBox.area()));
            sampleSize = warpBox.area();
        }
        // The sample keeps pixel order.
        std::size_t kept = 0;
        const float s2 = w.scale * w.scale;
        const kernel::MaskPixel bad = ctx.bits.bad;
        std::vector<kernel::Span> det;
        for (const Box& chunk : geom::rowChunks(warpBox, rows)) {
            var.resize(static_cast<std::size_t>(chunk.area()));
            mask.resize(static_cast<std::size_t>(chunk.area()));
            w.reader->readPlanes(chunk, nullptr, mask.data(), var.data());
            paintCosmicRays(w, chunk, mask.data(), ctx.bits.cr);  // a bad plane when found
            float* dst = sample.get();
            for (std::size_t k = 0; k < var.size(); ++k) {
                const float v = var[k] * s2;
                if ((mask[k] & bad) == 0 && std::isfinite(v)) {
                    dst[kept++] = v;
                }
            }
            if (wantDetected) {
                for (int y = chunk.y0; y < chunk.y1(); ++y) {
                    kernel::appendMaskRuns(det, y, chunk.x0,
                                           mask.data() + static_cast<std::size_t>(y - chunk.y0) * chunk.width,
                                           chunk.width, ctx.bits.det);
                }
            }
        }
        const double meanVar =
            kernel::meanClipUnweighted({sample.get(), kept}, ctx.settings.sigmaClip, ctx.settings.clipIter);
        const double weight = 1.0 / meanVar;
        // One read of the file: its crc32 for INPUTS and, on the IMAGE bytes, the all-NaN test.
        const auto& imageBytes = w.reader->imageFloatBytes();
        const io::FileScan scan = io::scanFile(
            w.input.path, imageBytes ? *imageBytes : std::pair<std::int64_t, std::int64_t>{0, 0});
        const bool anyNotNaN = imageBytes ? scan.anyNotNaN : anyImageNotNaN(w, warpBox, rows, var);
        std::string status = "used";
        bool upstreamSkips = false;
        if (!anyNotNaN) {
            // Upstream's prepareInputs: `if numpy.isnan(tempExp.image.array).all(): continue`
            // (NaN only: an image of infinities is not "all NaN").
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
        mine.push_back(
            {static_cast<std::int64_t>(i), static_cast<float>(weight), status, scan.checksum, upstreamSkips});
        if (wantDetected && status == "used") {
            detected.emplace_back(
                static_cast<std::int64_t>(i),
                componentsReaching(SpanSet::fromSortedSpans(std::move(det)), warpBox, ctx.box).spans());
        }
    }
    return {std::move(mine), std::move(detected)};
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
    const bool wantDetected = modeHasStage(ctx.settings.mode, "reduce");  // the big-footprint rule
    std::pair<std::vector<WeightMeasure>, DetectedSpans> mine;
    guarded(ctx, "weights", [&] { mine = measureMine(ctx, wantDetected); });
    applyWeights(ctx, parallel::allGather(ctx.group, mine.first));
    ctx.requireUsedWarps();
    if (wantDetected) {
        const auto gathered = parallel::gatherToRoot(ctx.group, mine.second);
        for (const DetectedSpans& fromRank : gathered) {
            for (const auto& [index, spans] : fromRank) {
                ctx.warps[static_cast<std::size_t>(index)].detAll = SpanSet::fromSortedSpans(spans);
            }
        }
    }
    if (ctx.isRoot()) {
        log().info("patch {}: weights for {} warps in {:.2f} s", ctx.name, ctx.usedWarps().size(),
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
}

}  // namespace safeclip::pipeline
