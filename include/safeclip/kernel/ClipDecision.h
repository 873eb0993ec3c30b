#pragma once
/// @file ClipDecision.h  SafeClip's footprint -> warp assignment (spec §6.2–6.3) and the
/// big-footprint rule (spec §7.1). Counts are 64-bit (spec §0.4).
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "safeclip/kernel/SpanSet.h"

namespace safeclip::kernel {

/// Overlap thresholds (SafeClipAssembleCoaddConfig defaults, pipe_tasks 5ad17f2c).
struct ClipControl {
    double minClipFootOverlap = 0.6;
    double minClipFootOverlapSingle = 0.5;
    double minClipFootOverlapDouble = 0.45;
    double maxClipFootOverlapDouble = 0.15;
    std::int64_t minBigOverlap = 100;
    /// clip.uint16_counts: wrap each footprint's ign/det modulo 65536 before the decision, as
    /// upstream's uint16 count arrays do (see decideClip). Off: 64-bit counts (spec §0.4).
    bool uint16Counts = false;
    /// @throws InvalidParameter
    void validate() const;
};

/// Per-warp compact masks gathered during the first read (spec §6.2), in PARENT coordinates.
struct WarpMaskSpans {
    SpanSet bad;      ///< m & B != 0
    SpanSet detGood;  ///< m & DET != 0 and m & B == 0
    SpanSet detAll;   ///< m & DET != 0 (for the big-footprint components V_i)
};

/// ign and det of one footprint in one warp.
struct WarpCounts {
    std::int64_t ign = 0;
    std::int64_t det = 0;
};
WarpCounts overlapCounts(const SpanSet& footprint, const WarpMaskSpans& warp);

enum class ClipRule {
    Kept,                 ///< not clipped (see reason)
    Single,               ///< §6.3.4a: exactly one candidate with f > minClipFootOverlap
    SingleOnlyCandidate,  ///< §6.3.3: the only candidate, f > minClipFootOverlapSingle
    Double,               ///< §6.3.4b
};
const char* toString(ClipRule rule);

struct Candidate {
    int warp = 0;  ///< index into the warp list
    std::int64_t det = 0;
    std::int64_t ign = 0;
    double fraction = 0;
    bool clipped = false;
};

struct FootprintDecision {
    std::int64_t nPix = 0;
    std::vector<Candidate> candidates;  ///< in warp order
    std::vector<int> clippedWarps;      ///< in warp order
    ClipRule rule = ClipRule::Kept;
    std::string reason;  ///< for Kept: "no candidates", "only candidate f<=0.5", ...
};

/// Decide one footprint of nPix pixels given counts[i] for every warp i (spec §6.3).
FootprintDecision decideClip(std::int64_t nPix, std::span<const WarpCounts> counts, const ClipControl& ctrl);

/// spec §7.1 for one warp: the DETECTED components G of `detAll` with |G| >= minBigOverlap that
/// overlap `clippedUnion` (union of the footprints clipped in this warp) in more than minBigOverlap
/// pixels. Returned in component order.
std::vector<SpanSet> bigFootprints(const SpanSet& detAll, const SpanSet& clippedUnion,
                                   std::int64_t minBigOverlap);

}  // namespace safeclip::kernel
