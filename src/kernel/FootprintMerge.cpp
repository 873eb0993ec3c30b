#include "safeclip/kernel/FootprintMerge.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "safeclip/kernel/Error.h"

namespace safeclip::kernel {

MergedFootprints mergePieces(const std::vector<FootprintPiece>& pieces, std::size_t nWarps) {
    std::vector<Span> all;
    for (const FootprintPiece& p : pieces) {
        all.insert(all.end(), p.spans.begin(), p.spans.end());
    }
    MergedFootprints out;
    out.footprints = connectedComponents8(SpanSet::fromSpans(std::move(all)));
    // Index every footprint span to find the footprint holding each piece's first pixel.
    std::vector<std::pair<Span, std::size_t>> index;
    for (std::size_t j = 0; j < out.footprints.size(); ++j) {
        for (const Span& sp : out.footprints[j].spans()) {
            index.emplace_back(sp, j);
        }
    }
    std::sort(index.begin(), index.end(), [](const auto& a, const auto& b) {
        return a.first.y != b.first.y ? a.first.y < b.first.y : a.first.x0 < b.first.x0;
    });
    out.counts.assign(out.footprints.size(), std::vector<WarpCounts>(nWarps));
    for (const FootprintPiece& p : pieces) {
        const Span first = p.spans.front();
        auto it = std::upper_bound(index.begin(), index.end(), first, [](const Span& v, const auto& e) {
            return v.y != e.first.y ? v.y < e.first.y : v.x0 < e.first.x0;
        });
        if (it == index.begin() || std::prev(it)->first.y != first.y || std::prev(it)->first.x1 < first.x0) {
            throw Error("internal error: a footprint piece is in no footprint", ExitCode::Internal);
        }
        auto& c = out.counts[std::prev(it)->second];
        for (std::size_t i = 0; i < nWarps; ++i) {
            c[i].ign += p.ign[i];
            c[i].det += p.det[i];
        }
    }
    return out;
}

}  // namespace safeclip::kernel
