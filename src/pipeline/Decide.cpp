/// @file Decide.cpp  Stage "reduce" (spec §6.3, §7.1): the root merges the tiles' pieces into
/// whole footprints (kernel::mergePieces: the 8-connected components of their union, the same as
/// detection on the whole patch) with summed per-warp counts, decides each footprint once
/// (kernel::decideClip), then applies the big-footprint rule to whole DETECTED components; every
/// warp's CLIPPED spans are then broadcast to the group.
#include <chrono>

#include "safeclip/kernel/ClipDecision.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/FootprintMerge.h"
#include "safeclip/parallel/Collectives.h"
#include "safeclip/parallel/Logging.h"
#include "safeclip/pipeline/Guard.h"
#include "safeclip/pipeline/Stages.h"

namespace safeclip::pipeline {

using kernel::SpanSet;
using parallel::log;

namespace {

std::string joinVisits(const std::vector<const Warp*>& warps) {
    std::string out;
    for (const Warp* w : warps) {
        if (!out.empty()) {
            out += ",";
        }
        out += std::to_string(w->visit);
    }
    return out;
}

void record(kernel::DecisionTable& table, std::int64_t id, const SpanSet& f,
            const kernel::FootprintDecision& d, const std::vector<Warp*>& warps) {
    const kernel::Box bb = f.bbox();
    std::vector<const Warp*> clipped;
    for (int i : d.clippedWarps) {
        clipped.push_back(warps[static_cast<std::size_t>(i)]);
    }
    table.footprints.push_back({id, bb.x0, bb.y0, bb.x1() - 1, bb.y1() - 1, f.area(),
                                kernel::toString(d.rule), d.reason, joinVisits(clipped)});
    for (const kernel::Candidate& c : d.candidates) {
        table.candidates.push_back({id, warps[static_cast<std::size_t>(c.warp)]->visit, c.det, c.ign,
                                    c.fraction, c.clipped ? 1 : 0});
    }
}

/// Root only.
void decide(PatchContext& ctx) {
    const auto t0 = std::chrono::steady_clock::now();
    auto warps = ctx.usedWarps();
    kernel::MergedFootprints merged;
    try {
        merged = kernel::mergePieces(ctx.pieces, warps.size());
    } catch (const Error& e) {
        throw Error("patch " + ctx.name + ": " + e.what(), e.code());
    }
    ctx.pieces.clear();
    const std::vector<SpanSet>& footprints = merged.footprints;
    ctx.result.nFootprints = static_cast<std::int64_t>(footprints.size());
    std::vector<std::vector<const SpanSet*>> clippedBy(warps.size());
    for (std::size_t j = 0; j < footprints.size(); ++j) {
        const kernel::FootprintDecision d =
            kernel::decideClip(footprints[j].area(), merged.counts[j], ctx.settings.clipRules);
        for (int i : d.clippedWarps) {
            clippedBy[static_cast<std::size_t>(i)].push_back(&footprints[j]);
        }
        if (!d.clippedWarps.empty()) {
            ++ctx.result.nClippedFootprints;
        }
        record(ctx.decisions, static_cast<std::int64_t>(j), footprints[j], d, warps);
    }
    std::int64_t clippedPixels = 0;
    for (std::size_t i = 0; i < warps.size(); ++i) {
        Warp& w = *warps[i];
        if (!clippedBy[i].empty()) {
            std::vector<SpanSet> parts;
            for (const SpanSet* f : clippedBy[i]) {
                parts.push_back(*f);
            }
            const SpanSet unionClipped = kernel::uniteAll(parts);
            // detAll: the warp's whole-mask DETECTED components that reach the patch (weights
            // stage); a component may extend beyond the patch box, CLIPPED stops at it.
            const std::vector<SpanSet> big =
                kernel::bigFootprints(w.detAll, unionClipped, ctx.settings.clipRules.minBigOverlap);
            w.nBigFootprints = static_cast<std::int64_t>(big.size());
            parts.assign(1, unionClipped);
            for (const SpanSet& g : big) {
                parts.push_back(g.clippedTo(ctx.box));
            }
            w.clipped = kernel::uniteAll(parts);
            w.nClippedPixels = w.clipped.area();
            clippedPixels += w.nClippedPixels;
        }
        w.detAll = SpanSet();
    }
    log().info(
        "patch {}: {} footprints (psf sigma {:.3f} px from {}), {} clipped in at least one warp; {} CLIPPED "
        "warp "
        "pixels; {:.2f} s",
        ctx.name, footprints.size(), ctx.detect.psfSigma, ctx.psfSource, ctx.result.nClippedFootprints,
        clippedPixels, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

/// Every rank of the group gets each warp's CLIPPED spans (and the counts for the INPUTS table).
void broadcastClipped(PatchContext& ctx) {
    std::vector<std::pair<std::vector<kernel::Span>, std::pair<std::int64_t, std::int64_t>>> clipped;
    if (ctx.isRoot()) {
        for (const Warp& w : ctx.warps) {
            clipped.push_back({w.clipped.spans(), {w.nClippedPixels, w.nBigFootprints}});
        }
    }
    parallel::broadcastFromRoot(ctx.group, clipped);
    if (!ctx.isRoot()) {
        for (std::size_t i = 0; i < ctx.warps.size(); ++i) {
            ctx.warps[i].clipped = SpanSet::fromSortedSpans(std::move(clipped[i].first));
            ctx.warps[i].nClippedPixels = clipped[i].second.first;
            ctx.warps[i].nBigFootprints = clipped[i].second.second;
        }
    }
}

}  // namespace

void decideClipping(PatchContext& ctx) {
    guardedOnRoot(ctx, "reduce", [&] { decide(ctx); });
    broadcastClipped(ctx);
}

}  // namespace safeclip::pipeline
