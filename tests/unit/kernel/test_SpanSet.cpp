/// @file test_SpanSet.cpp  SpanSet normalisation, set algebra, dilation and 8-connected components,
/// checked against brute-force per-pixel references on seeded random sets.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "safeclip/kernel/SpanSet.h"

namespace safeclip::kernel {
namespace {

using Pixel = std::pair<int, int>;  // (y, x) so that std::set orders like spans
using PixelSet = std::set<Pixel>;

PixelSet toPixels(const SpanSet& s) {
    PixelSet p;
    for (const Span& sp : s.spans()) {
        for (int x = sp.x0; x <= sp.x1; ++x) {
            p.insert({sp.y, x});
        }
    }
    return p;
}

SpanSet fromPixels(const PixelSet& p) {
    std::vector<Span> spans;
    for (const auto& [y, x] : p) {
        spans.push_back(Span{y, x, x});
    }
    std::reverse(spans.begin(), spans.end());  // deliberately unsorted
    return SpanSet::fromSpans(spans);
}

/// Independent check of the normal form.
bool normalised(const SpanSet& s) {
    const auto& v = s.spans();
    for (std::size_t i = 0; i < v.size(); ++i) {
        if (v[i].x1 < v[i].x0) {
            return false;
        }
        if (i > 0 && (v[i].y < v[i - 1].y || (v[i].y == v[i - 1].y && v[i].x0 <= v[i - 1].x1 + 1))) {
            return false;
        }
    }
    return true;
}

/// Random set of spans in [0,w)x[0,h), possibly overlapping, unsorted.
SpanSet randomSet(std::mt19937& rng, int w, int h, int maxSpans) {
    std::uniform_int_distribution<int> nDist(0, maxSpans);
    std::uniform_int_distribution<int> xDist(0, w - 1);
    std::uniform_int_distribution<int> yDist(0, h - 1);
    std::uniform_int_distribution<int> lenDist(0, 6);
    std::vector<Span> spans;
    const int n = nDist(rng);
    for (int i = 0; i < n; ++i) {
        const int x0 = xDist(rng);
        spans.push_back(Span{yDist(rng), x0, std::min(w - 1, x0 + lenDist(rng))});
    }
    return SpanSet::fromSpans(spans);
}

std::vector<PixelSet> bruteComponents8(const PixelSet& p) {
    std::vector<PixelSet> comps;
    PixelSet seen;
    for (const Pixel& start : p) {  // in (y, x) order: components come out ordered by first pixel
        if (seen.count(start) != 0) {
            continue;
        }
        PixelSet comp;
        std::deque<Pixel> queue{start};
        seen.insert(start);
        while (!queue.empty()) {
            const Pixel q = queue.front();
            queue.pop_front();
            comp.insert(q);
            for (int dy = -1; dy <= 1; ++dy) {
                for (int dx = -1; dx <= 1; ++dx) {
                    const Pixel n{q.first + dy, q.second + dx};
                    if (p.count(n) != 0 && seen.count(n) == 0) {
                        seen.insert(n);
                        queue.push_back(n);
                    }
                }
            }
        }
        comps.push_back(comp);
    }
    return comps;
}

TEST(SpanSet, NormalisesOverlappingAdjacentAndUnsortedSpans) {
    const SpanSet s = SpanSet::fromSpans({Span{2, 5, 7}, Span{1, 0, 3}, Span{1, 4, 4}, Span{1, 8, 9},
                                          Span{2, 6, 10}, Span{2, 12, 12}, Span{0, 3, 2}});
    const std::vector<Span> expected{Span{1, 0, 4}, Span{1, 8, 9}, Span{2, 5, 10}, Span{2, 12, 12}};
    EXPECT_EQ(s.spans(), expected);
    EXPECT_TRUE(normalised(s));
    EXPECT_EQ(s.area(), 5 + 2 + 6 + 1);
    EXPECT_EQ(s.bbox(), (Box{0, 1, 13, 2}));
    EXPECT_TRUE(SpanSet::fromSpans({Span{0, 3, 2}}).empty());
    EXPECT_EQ(SpanSet{}.bbox(), Box{});
    EXPECT_EQ(SpanSet{}.area(), 0);
}

TEST(SpanSet, FromBoxContainsAndBbox) {
    const Box box{-3, 5, 4, 3};
    const SpanSet s = SpanSet::fromBox(box);
    EXPECT_EQ(s.area(), 12);
    EXPECT_EQ(s.bbox(), box);
    for (int y = 3; y < 10; ++y) {
        for (int x = -5; x < 3; ++x) {
            EXPECT_EQ(s.contains(x, y), box.contains(x, y)) << x << "," << y;
        }
    }
    EXPECT_TRUE(SpanSet::fromBox(Box{0, 0, 0, 5}).empty());
}

TEST(SpanSet, EqualityRegardlessOfConstructionOrder) {
    std::mt19937 rng(12345);
    for (int trial = 0; trial < 50; ++trial) {
        const SpanSet a = randomSet(rng, 30, 20, 25);
        std::vector<Span> spans = a.spans();
        // Split every span into single pixels plus a duplicate of the whole span, then shuffle.
        std::vector<Span> pieces;
        for (const Span& s : spans) {
            for (int x = s.x0; x <= s.x1; ++x) {
                pieces.push_back(Span{s.y, x, x});
            }
            pieces.push_back(s);
        }
        std::shuffle(pieces.begin(), pieces.end(), rng);
        EXPECT_EQ(SpanSet::fromSpans(pieces), a);
        EXPECT_EQ(fromPixels(toPixels(a)), a);
    }
}

TEST(SpanSet, SetOperationsMatchBruteForce) {
    std::mt19937 rng(20240601);
    for (int trial = 0; trial < 300; ++trial) {
        const SpanSet a = randomSet(rng, 40, 12, 30);
        const SpanSet b = randomSet(rng, 40, 12, 30);
        const PixelSet pa = toPixels(a);
        const PixelSet pb = toPixels(b);
        PixelSet inter;
        PixelSet uni;
        PixelSet diff;
        std::set_intersection(pa.begin(), pa.end(), pb.begin(), pb.end(), std::inserter(inter, inter.end()));
        std::set_union(pa.begin(), pa.end(), pb.begin(), pb.end(), std::inserter(uni, uni.end()));
        std::set_difference(pa.begin(), pa.end(), pb.begin(), pb.end(), std::inserter(diff, diff.end()));

        const SpanSet i = a.intersect(b);
        const SpanSet u = a.unite(b);
        const SpanSet d = a.subtract(b);
        ASSERT_TRUE(normalised(i));
        ASSERT_TRUE(normalised(u));
        ASSERT_TRUE(normalised(d));
        EXPECT_EQ(toPixels(i), inter);
        EXPECT_EQ(toPixels(u), uni);
        EXPECT_EQ(toPixels(d), diff);
        EXPECT_EQ(a.intersectArea(b), static_cast<std::int64_t>(inter.size()));
        EXPECT_EQ(b.intersect(a), i);
        EXPECT_EQ(b.unite(a), u);
        EXPECT_EQ(a.area(), static_cast<std::int64_t>(pa.size()));
        EXPECT_EQ(uniteAll({a, b, i}), u);

        const Box clip{5, 3, 20, 6};
        PixelSet clipped;
        for (const Pixel& p : pa) {
            if (clip.contains(p.second, p.first)) {
                clipped.insert(p);
            }
        }
        EXPECT_EQ(toPixels(a.clippedTo(clip)), clipped);
        for (int y = -1; y < 13; ++y) {
            for (int x = -1; x < 41; ++x) {
                ASSERT_EQ(a.contains(x, y), pa.count({y, x}) != 0);
            }
        }
    }
}

TEST(SpanSet, DilateDiskMatchesBruteForce) {
    std::mt19937 rng(777);
    for (int r = 0; r <= 6; ++r) {
        for (int trial = 0; trial < 20; ++trial) {
            const SpanSet a = randomSet(rng, 30, 30, 6);
            const Box clip = (trial % 2 == 0) ? Box{-10, -10, 50, 50} : Box{4, 7, 18, 15};
            PixelSet expected;
            for (const auto& [y, x] : toPixels(a)) {
                for (int dy = -r; dy <= r; ++dy) {
                    for (int dx = -r; dx <= r; ++dx) {
                        if (dx * dx + dy * dy <= r * r && clip.contains(x + dx, y + dy)) {
                            expected.insert({y + dy, x + dx});
                        }
                    }
                }
            }
            const SpanSet d = a.dilateDisk(r, clip);
            ASSERT_TRUE(normalised(d));
            EXPECT_EQ(toPixels(d), expected) << "r=" << r << " trial=" << trial;
        }
    }
}

TEST(SpanSet, DilateDiskStencilShapeRadius2) {
    // {|dy| <= 2, |dx| <= floor(sqrt(4 - dy^2))}: widths 1, 3, 5, 3, 1 -> 13 pixels.
    const SpanSet d = SpanSet::fromSpans({Span{0, 0, 0}}).dilateDisk(2, Box{-5, -5, 11, 11});
    const std::vector<Span> expected{Span{-2, 0, 0}, Span{-1, -1, 1}, Span{0, -2, 2}, Span{1, -1, 1},
                                     Span{2, 0, 0}};
    EXPECT_EQ(d.spans(), expected);
    EXPECT_EQ(d.area(), 13);
    // Clipping to the box applies after the dilation (a source just outside still grows in).
    const SpanSet e = SpanSet::fromSpans({Span{0, -1, -1}}).dilateDisk(2, Box{0, -5, 5, 11});
    EXPECT_EQ(e.spans(), (std::vector<Span>{Span{-1, 0, 0}, Span{0, 0, 1}, Span{1, 0, 0}}));
}

TEST(SpanSet, ConnectedComponents8DiagonalTouching) {
    // Two spans touching only diagonally are one component; a one-column gap separates.
    const SpanSet diag = SpanSet::fromSpans({Span{0, 0, 2}, Span{1, 3, 5}});
    EXPECT_EQ(connectedComponents8(diag).size(), 1U);
    const SpanSet gap = SpanSet::fromSpans({Span{0, 0, 2}, Span{1, 4, 5}});
    const auto comps = connectedComponents8(gap);
    ASSERT_EQ(comps.size(), 2U);
    EXPECT_EQ(comps[0].spans(), (std::vector<Span>{Span{0, 0, 2}}));
    EXPECT_EQ(comps[1].spans(), (std::vector<Span>{Span{1, 4, 5}}));
    // Rows two apart do not connect.
    EXPECT_EQ(connectedComponents8(SpanSet::fromSpans({Span{0, 0, 2}, Span{2, 0, 2}})).size(), 2U);
    // A "U" joins two arms seen first as separate components; order is by first span.
    const SpanSet u = SpanSet::fromSpans(
        {Span{0, 0, 0}, Span{0, 4, 4}, Span{0, 9, 9}, Span{1, 0, 0}, Span{1, 4, 4}, Span{2, 1, 3}});
    const auto uc = connectedComponents8(u);
    ASSERT_EQ(uc.size(), 2U);
    EXPECT_EQ(uc[0].area(), 7);
    EXPECT_EQ(uc[1].spans(), (std::vector<Span>{Span{0, 9, 9}}));
    EXPECT_TRUE(connectedComponents8(SpanSet{}).empty());
}

TEST(SpanSet, ConnectedComponents8MatchBruteForce) {
    std::mt19937 rng(4242);
    for (int trial = 0; trial < 200; ++trial) {
        const SpanSet a = randomSet(rng, 25, 25, 40);
        const auto comps = connectedComponents8(a);
        const auto expected = bruteComponents8(toPixels(a));
        ASSERT_EQ(comps.size(), expected.size()) << "trial " << trial;
        SpanSet all;
        for (std::size_t k = 0; k < comps.size(); ++k) {
            ASSERT_TRUE(normalised(comps[k]));
            EXPECT_EQ(toPixels(comps[k]), expected[k]) << "trial " << trial << " comp " << k;
            all = all.unite(comps[k]);
        }
        EXPECT_EQ(all, a);
    }
}

TEST(SpanSet, PaintAndMaskRuns) {
    MaskImage mask(Box{10, 20, 8, 4}, 0);
    const SpanSet s = SpanSet::fromSpans(
        {Span{19, 10, 12}, Span{20, 8, 11}, Span{21, 14, 30}, Span{23, 12, 12}, Span{24, 10, 17}});
    s.paint(mask, 0x4);
    PixelSet painted;
    for (int y = 20; y < 24; ++y) {
        for (int x = 10; x < 18; ++x) {
            if (mask(x, y) == 0x4) {
                painted.insert({y, x});
            } else {
                ASSERT_EQ(mask(x, y), 0);
            }
        }
    }
    EXPECT_EQ(painted, toPixels(s.clippedTo(mask.box())));
    EXPECT_EQ(spansFromMask(mask, 0x4), s.clippedTo(mask.box()));
    EXPECT_TRUE(spansFromMask(mask, 0x1).empty());

    const MaskPixel row[] = {1, 1, 0, 3, 2, 1, 5, 0, 1};
    std::vector<Span> runs;
    appendMaskRuns(runs, 7, 100, row, 9, 1);
    EXPECT_EQ(runs, (std::vector<Span>{Span{7, 100, 101}, Span{7, 103, 103}, Span{7, 105, 106},
                                       Span{7, 108, 108}}));
    runs.clear();
    appendMaskRuns(runs, 7, 100, row, 9, 1, 2 | 4);  // any bit 0, none of bits 1, 2
    EXPECT_EQ(runs, (std::vector<Span>{Span{7, 100, 101}, Span{7, 105, 105}, Span{7, 108, 108}}));
}

TEST(SpanSet, AppendMaskRuns3EqualsThreeSeparatePasses) {
    // Random rows from sparse to dense, lengths around the 8-pixel skip, runs at both ends.
    std::mt19937 rng(11);
    const MaskPixel bad = 0x1 | 0x10;
    const MaskPixel det = 0x20;
    for (int trial = 0; trial < 400; ++trial) {
        const int n = 1 + trial % 70;
        const double density = (trial % 7) / 6.0;
        std::uniform_real_distribution<double> u(0.0, 1.0);
        std::vector<MaskPixel> row(static_cast<std::size_t>(n));
        for (MaskPixel& m : row) {
            m = 0x4;  // an unrelated bit everywhere
            if (u(rng) < density) {
                m |= u(rng) < 0.5 ? 0x1 : 0x10;
            }
            if (u(rng) < density) {
                m |= det;
            }
        }
        std::vector<Span> b1, g1, a1, b3, g3, a3;
        appendMaskRuns(b1, 3, -5, row.data(), n, bad);
        appendMaskRuns(g1, 3, -5, row.data(), n, det, bad);
        appendMaskRuns(a1, 3, -5, row.data(), n, det);
        appendMaskRuns3(b3, g3, a3, 3, -5, row.data(), n, bad, det);
        ASSERT_EQ(b1, b3) << trial;
        ASSERT_EQ(g1, g3) << trial;
        ASSERT_EQ(a1, a3) << trial;
    }
}

// detectTemplate's non-isotropic growth: the diamond |dx| + |dy| <= r, clipped to the box.
TEST(SpanSet, ManhattanDilationIsADiamondClippedToTheBox) {
    const SpanSet point = SpanSet::fromSpans({Span{10, 10, 10}});
    const SpanSet d = point.dilateManhattan(2, Box{0, 0, 100, 100});
    EXPECT_EQ(d.area(), 13);  // 1 + 3 + 5 + 3 + 1
    for (int y = 7; y <= 13; ++y) {
        for (int x = 7; x <= 13; ++x) {
            EXPECT_EQ(d.contains(x, y), std::abs(x - 10) + std::abs(y - 10) <= 2) << x << "," << y;
        }
    }
    const SpanSet edge = SpanSet::fromSpans({Span{0, 0, 0}}).dilateManhattan(2, Box{0, 0, 100, 100});
    EXPECT_EQ(edge.area(), 6);  // the quarter diamond inside the box
    EXPECT_EQ(point.dilateManhattan(0, Box{0, 0, 100, 100}), point);
}

}  // namespace
}  // namespace safeclip::kernel
