#pragma once
/// @file FootprintMerge.h  Whole footprints from the pieces that tiles detect (spec §6.2; STYLE
/// §2.2.4): each tile cuts the detected pixels inside it into 8-connected pieces and counts, per
/// warp, the piece's bad (ign) and DETECTED-and-good (det) pixels. The counts are additive, so the
/// footprints (8-connected components of the union of all pieces) and their summed counts are the
/// same for any tiling and any number of ranks; decideClip then runs once per whole footprint.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "safeclip/kernel/ClipDecision.h"
#include "safeclip/kernel/SpanSet.h"

namespace safeclip::kernel {

/// A footprint's part inside one tile, with its per-warp counts.
struct FootprintPiece {
    std::vector<Span> spans;        ///< normalised, non-empty
    std::vector<std::int64_t> ign;  ///< per warp
    std::vector<std::int64_t> det;  ///< per warp

    template <class Archive>
    void serialize(Archive& ar, const unsigned int /*version*/) {
        ar& spans& ign& det;
    }
};

struct MergedFootprints {
    std::vector<SpanSet> footprints;              ///< ordered by first span (y, then x0)
    std::vector<std::vector<WarpCounts>> counts;  ///< [footprint][warp], summed over its pieces
};

/// Merge pieces of `nWarps` warps into whole footprints with summed counts.
/// @throws Error(Internal) when a piece lies in no footprint (cannot happen for valid pieces)
MergedFootprints mergePieces(const std::vector<FootprintPiece>& pieces, std::size_t nWarps);

}  // namespace safeclip::kernel
