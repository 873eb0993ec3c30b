/// @file ClipDecision.cpp  SafeClip footprint -> warp assignment (spec §6.2–6.3) and the
/// big-footprint rule (spec §7.1).
#include "safeclip/kernel/ClipDecision.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>

#include "safeclip/kernel/Error.h"

namespace safeclip::kernel {

namespace {

/// Compact decimal form of a threshold or fraction for reasons ("0.6", "0.4545").
std::string fmt(double v) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.4g", v);
    return buf;
}

void checkFraction(const char* name, double v) {
    if (!std::isfinite(v) || v < 0.0 || v > 1.0) {
        throw InvalidParameter(std::string("ClipControl.") + name + " must be in [0, 1], got " +
                               std::to_string(v));
    }
}

}  // namespace

void ClipControl::validate() const {
    checkFraction("minClipFootOverlap", minClipFootOverlap);
    checkFraction("minClipFootOverlapSingle", minClipFootOverlapSingle);
    checkFraction("minClipFootOverlapDouble", minClipFootOverlapDouble);
    checkFraction("maxClipFootOverlapDouble", maxClipFootOverlapDouble);
    if (minBigOverlap < 0) {
        throw InvalidParameter("ClipControl.minBigOverlap must be >= 0, got " +
                               std::to_string(minBigOverlap));
    }
}

WarpCounts overlapCounts(const SpanSet& footprint, const WarpMaskSpans& warp) {
    WarpCounts c;
    c.ign = footprint.intersectArea(warp.bad);
    c.det = footprint.intersectArea(warp.detGood);
    return c;
}

const char* toString(ClipRule rule) {
    switch (rule) {
        case ClipRule::Kept:
            return "kept";
        case ClipRule::Single:
            return "single";
        case ClipRule::SingleOnlyCandidate:
            return "single-only-candidate";
        case ClipRule::Double:
            return "double";
    }
    return "unknown";
}

FootprintDecision decideClip(std::int64_t nPix, std::span<const WarpCounts> counts, const ClipControl& ctrl) {
    FootprintDecision d;
    d.nPix = nPix;
    const double half = 0.5 * static_cast<double>(nPix);
    // §6.3.1: candidates in warp order.
    for (std::size_t i = 0; i < counts.size(); ++i) {
        // Upstream (pipe_tasks 5ad17f2c, SafeClipAssembleCoaddTask.detectClip, spec §6.2) counts
        // each footprint's ignored and DETECTED pixels in one warp over the whole footprint
        // (countMaskFromFootprint returns a Python int) and stores the count in a numpy uint16
        // array indexed [warp, footprint]; the assignment keeps the count modulo 65536. Every later
        // use reads the wrapped element: `ignore > overlapDet`, `overlapDet == 0` and
        // overlapDet/float(nPixel - ignore), where nPixel (the footprint area) stays unwrapped.
        // safeclip's counts here are already the merged whole-footprint counts, so the wrap is
        // applied at exactly that point.
        WarpCounts c = counts[i];
        if (ctrl.uint16Counts) {
            c.ign %= 65536;
            c.det %= 65536;
        }
        const std::int64_t good = nPix - c.ign;
        if (c.ign > c.det || static_cast<double>(good) <= half || c.det == 0) {
            continue;
        }
        Candidate cand;
        cand.warp = static_cast<int>(i);
        cand.det = c.det;
        cand.ign = c.ign;
        cand.fraction = static_cast<double>(c.det) / static_cast<double>(good);
        d.candidates.push_back(cand);
    }
    std::vector<Candidate>& cands = d.candidates;
    const std::size_t nCand = cands.size();

    auto clip = [&](std::size_t k) {
        cands[k].clipped = true;
        d.clippedWarps.push_back(cands[k].warp);
    };

    if (nCand == 0) {
        d.rule = ClipRule::Kept;
        d.reason = "no candidates";
        return d;
    }
    if (nCand == 1) {
        // §6.3.3
        if (cands[0].fraction > ctrl.minClipFootOverlapSingle) {
            clip(0);
            d.rule = ClipRule::SingleOnlyCandidate;
            d.reason =
                "only candidate, f=" + fmt(cands[0].fraction) + " > " + fmt(ctrl.minClipFootOverlapSingle);
        } else {
            d.rule = ClipRule::Kept;
            d.reason = "only candidate f<=" + fmt(ctrl.minClipFootOverlapSingle) +
                       " (f=" + fmt(cands[0].fraction) + ")";
        }
        return d;
    }

    // §6.3.4a: H = {f > minClipFootOverlap}.
    std::vector<std::size_t> high;
    // §6.3.4b: H2 = {f > minClipFootOverlapDouble}, complement = the rest of C.
    std::vector<std::size_t> high2;
    bool haveLow = false;
    double maxLow = 0.0;
    for (std::size_t k = 0; k < nCand; ++k) {
        const double f = cands[k].fraction;
        if (f > ctrl.minClipFootOverlap) {
            high.push_back(k);
        }
        if (f > ctrl.minClipFootOverlapDouble) {
            high2.push_back(k);
        } else {
            maxLow = haveLow ? std::max(maxLow, f) : f;
            haveLow = true;
        }
    }
    const bool singleFires = high.size() == 1;
    bool doubleFires = false;
    std::string doubleWhy;
    if (high2.size() != 2) {
        doubleWhy = std::to_string(high2.size()) + " above " + fmt(ctrl.minClipFootOverlapDouble);
    } else if (nCand <= 3) {
        doubleWhy = "only " + std::to_string(nCand) + " candidates (double needs > 3)";
    } else if (!haveLow) {
        // Unreachable: |C| > 3 and |H2| == 2 leave >= 2 candidates in the complement. Upstream's
        // max over an empty array would raise; treat it as "not fired".
        doubleWhy = "empty complement";
    } else if (maxLow <= ctrl.maxClipFootOverlapDouble) {
        doubleFires = true;
    } else {
        doubleWhy = "max other f=" + fmt(maxLow) + " > " + fmt(ctrl.maxClipFootOverlapDouble);
    }

    if (doubleFires) {
        // Overrides the single rule (§6.3.4b).
        clip(high2[0]);
        clip(high2[1]);
        d.rule = ClipRule::Double;
        d.reason = "2 candidates above " + fmt(ctrl.minClipFootOverlapDouble) + ", others <= " + fmt(maxLow) +
                   " <= " + fmt(ctrl.maxClipFootOverlapDouble) + " (" + std::to_string(nCand) +
                   " candidates)";
    } else if (singleFires) {
        clip(high[0]);
        d.rule = ClipRule::Single;
        d.reason = "1 of " + std::to_string(nCand) + " candidates above " + fmt(ctrl.minClipFootOverlap);
    } else {
        d.rule = ClipRule::Kept;
        d.reason = std::to_string(high.size()) + " of " + std::to_string(nCand) + " candidates above " +
                   fmt(ctrl.minClipFootOverlap) + "; double: " + doubleWhy;
    }
    return d;
}

std::vector<SpanSet> bigFootprints(const SpanSet& detAll, const SpanSet& clippedUnion,
                                   std::int64_t minBigOverlap) {
    std::vector<SpanSet> result;
    if (detAll.empty() || (clippedUnion.empty() && minBigOverlap >= 0)) {
        return result;
    }
    for (SpanSet& g : connectedComponents8(detAll)) {
        if (g.area() < minBigOverlap) {
            continue;
        }
        if (g.intersectArea(clippedUnion) > minBigOverlap) {
            result.push_back(std::move(g));
        }
    }
    return result;
}

}  // namespace safeclip::kernel
