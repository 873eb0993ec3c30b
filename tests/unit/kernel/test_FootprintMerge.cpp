// kernel::mergePieces: the footprints and per-warp counts merged from the pieces that tiles detect
// equal those of the whole patch, for any tiling (STYLE §2.2.4).
#include <gtest/gtest.h>

#include <random>

#include "safeclip/kernel/FootprintMerge.h"

using namespace safeclip::kernel;

namespace {

SpanSet randomBlobs(const Box& box, unsigned seed, int n, int maxR) {
    std::mt19937 rng(seed);
    std::vector<Span> spans;
    for (int k = 0; k < n; ++k) {
        const int cx = box.x0 + static_cast<int>(rng() % static_cast<unsigned>(box.width));
        const int cy = box.y0 + static_cast<int>(rng() % static_cast<unsigned>(box.height));
        const int r = 1 + static_cast<int>(rng() % static_cast<unsigned>(maxR));
        for (int dy = -r; dy <= r; ++dy) {
            const int hw = static_cast<int>(std::sqrt(r * r - dy * dy));
            spans.push_back({cy + dy, cx - hw, cx + hw});
        }
    }
    return SpanSet::fromSpans(std::move(spans)).clippedTo(box);
}

struct Truth {
    std::vector<SpanSet> footprints;
    std::vector<std::vector<WarpCounts>> counts;
};

MergedFootprints mergeTiled(const SpanSet& detected, const std::vector<WarpMaskSpans>& warps,
                            const Box& patch, int nx, int ny) {
    std::vector<FootprintPiece> pieces;
    for (int j = 0; j < ny; ++j) {
        for (int i = 0; i < nx; ++i) {
            const int x0 = patch.x0 + patch.width * i / nx;
            const int x1 = patch.x0 + patch.width * (i + 1) / nx;
            const int y0 = patch.y0 + patch.height * j / ny;
            const int y1 = patch.y0 + patch.height * (j + 1) / ny;
            const Box tile{x0, y0, x1 - x0, y1 - y0};
            for (const SpanSet& piece : connectedComponents8(detected.clippedTo(tile))) {
                FootprintPiece p;
                p.spans = piece.spans();
                for (const WarpMaskSpans& w : warps) {
                    const WarpCounts c =
                        overlapCounts(piece, {w.bad.clippedTo(tile), w.detGood.clippedTo(tile), {}});
                    p.ign.push_back(c.ign);
                    p.det.push_back(c.det);
                }
                pieces.push_back(std::move(p));
            }
        }
    }
    // The order in which pieces arrive (ranks, tiles) must not matter either.
    std::reverse(pieces.begin(), pieces.end());
    return mergePieces(pieces, warps.size());
}

}  // namespace

TEST(FootprintMerge, SameFootprintsAndCountsForAnyTiling) {
    const Box patch{-7, 11, 97, 83};
    const SpanSet detected = randomBlobs(patch, 3, 25, 9);
    std::vector<WarpMaskSpans> warps;
    for (unsigned w = 0; w < 3; ++w) {
        const SpanSet bad = randomBlobs(patch, 100 + w, 10, 4);
        const SpanSet det = randomBlobs(patch, 200 + w, 15, 7);
        warps.push_back({bad, det.subtract(bad), det});
    }
    // Whole-patch truth: components of the detected set, counts against the whole masks.
    Truth truth;
    truth.footprints = connectedComponents8(detected);
    for (const SpanSet& f : truth.footprints) {
        std::vector<WarpCounts> c;
        for (const WarpMaskSpans& w : warps) {
            c.push_back(overlapCounts(f, w));
        }
        truth.counts.push_back(c);
    }
    ASSERT_GT(truth.footprints.size(), 5U);
    for (const auto& [nx, ny] : std::vector<std::pair<int, int>>{{1, 1}, {2, 2}, {3, 5}, {7, 4}}) {
        const MergedFootprints m = mergeTiled(detected, warps, patch, nx, ny);
        ASSERT_EQ(m.footprints.size(), truth.footprints.size()) << nx << "x" << ny;
        for (std::size_t j = 0; j < truth.footprints.size(); ++j) {
            EXPECT_EQ(m.footprints[j], truth.footprints[j]) << nx << "x" << ny << " footprint " << j;
            for (std::size_t i = 0; i < warps.size(); ++i) {
                EXPECT_EQ(m.counts[j][i].ign, truth.counts[j][i].ign) << nx << "x" << ny;
                EXPECT_EQ(m.counts[j][i].det, truth.counts[j][i].det) << nx << "x" << ny;
            }
        }
    }
}

TEST(FootprintMerge, APieceOutsideEveryFootprintIsAnInternalError) {
    FootprintPiece p;
    p.spans = {{0, 0, 3}};
    p.ign = {0};
    p.det = {0};
    // Consistent input merges fine...
    EXPECT_EQ(mergePieces({p}, 1).footprints.size(), 1U);
    // ...and no pieces give no footprints.
    EXPECT_TRUE(mergePieces({}, 1).footprints.empty());
}
