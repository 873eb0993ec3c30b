/// @file test_ClipDecision.cpp  SafeClip footprint -> warp decisions (spec §6.2–6.3) and the big
/// footprint rule (spec §7.1), on hand-built warp masks.
#include <gtest/gtest.h>

#include <vector>

#include "safeclip/kernel/ClipDecision.h"
#include "safeclip/kernel/Error.h"

namespace safeclip::kernel {
namespace {

// The first nine afw planes (spec §1.3): BAD=0, DETECTED=5, DETECTED_NEGATIVE=6, NO_DATA=8.
constexpr MaskPixel kBad = 1 << 0;
constexpr MaskPixel kDetected = 1 << 5;
constexpr MaskPixel kDetectedNegative = 1 << 6;
constexpr MaskPixel kNoData = 1 << 8;
constexpr MaskPixel kDet = kDetected | kDetectedNegative;
constexpr MaskPixel kB = kBad | kNoData;

const Box kPatch{0, 0, 60, 40};
const Box kFootBox{20, 10, 10, 10};  // the difference footprint F: 100 pixels

/// Per-warp span summaries as the driver builds them from a raw warp mask.
WarpMaskSpans summarise(const MaskImage& m) {
    std::vector<Span> detGood;
    for (int y = m.box().y0; y < m.box().y1(); ++y) {
        appendMaskRuns(detGood, y, m.box().x0, m.row(y), m.box().width, kDet, kB);
    }
    return WarpMaskSpans{spansFromMask(m, kB), SpanSet::fromSortedSpans(detGood), spansFromMask(m, kDet)};
}

/// The first n pixels of F in (y, x) order.
SpanSet firstPixels(const SpanSet& f, std::int64_t n) {
    std::vector<Span> out;
    for (const Span& s : f.spans()) {
        if (n <= 0) {
            break;
        }
        const int w = static_cast<int>(std::min<std::int64_t>(n, s.width()));
        out.push_back(Span{s.y, s.x0, s.x0 + w - 1});
        n -= w;
    }
    return SpanSet::fromSpans(out);
}

/// A warp whose DETECTED plane covers `detPixels` pixels of F (bit DETECTED or DETECTED_NEGATIVE).
MaskImage warpWithDetected(std::int64_t detPixels, MaskPixel bit = kDetected) {
    MaskImage m(kPatch, 0);
    firstPixels(SpanSet::fromBox(kFootBox), detPixels).paint(m, bit);
    return m;
}

FootprintDecision decide(const SpanSet& f, const std::vector<MaskImage>& warps,
                         const ClipControl& ctrl = ClipControl{}) {
    std::vector<WarpCounts> counts;
    for (const MaskImage& m : warps) {
        counts.push_back(overlapCounts(f, summarise(m)));
    }
    return decideClip(f.area(), counts, ctrl);
}

TEST(ClipDecision, TransientInOneOfSixWarpsIsClippedBySingleRule) {
    const SpanSet f = SpanSet::fromBox(kFootBox);
    // A static neighbour's DETECTED pixels cover 20% of F in every warp; the transient is in warp 3.
    std::vector<MaskImage> warps;
    for (int i = 0; i < 6; ++i) {
        warps.push_back(warpWithDetected(i == 3 ? 100 : 20));
    }
    const FootprintDecision d = decide(f, warps);
    EXPECT_EQ(d.rule, ClipRule::Single);
    EXPECT_EQ(d.clippedWarps, std::vector<int>{3});
    EXPECT_EQ(d.nPix, 100);
    ASSERT_EQ(d.candidates.size(), 6U);
    for (const Candidate& c : d.candidates) {
        EXPECT_EQ(c.clipped, c.warp == 3);
        EXPECT_DOUBLE_EQ(c.fraction, c.warp == 3 ? 1.0 : 0.2);
    }
    EXPECT_FALSE(d.reason.empty());

    // Without the neighbour only warp 3 is a candidate: the only-candidate rule fires instead.
    std::vector<MaskImage> lone;
    for (int i = 0; i < 6; ++i) {
        lone.push_back(warpWithDetected(i == 3 ? 100 : 0));
    }
    const FootprintDecision d2 = decide(f, lone);
    EXPECT_EQ(d2.rule, ClipRule::SingleOnlyCandidate);
    EXPECT_EQ(d2.clippedWarps, std::vector<int>{3});
    ASSERT_EQ(d2.candidates.size(), 1U);
    EXPECT_EQ(d2.candidates[0].warp, 3);
}

TEST(ClipDecision, TransientInTwoOfSixWarpsIsClippedByDoubleRule) {
    const SpanSet f = SpanSet::fromBox(kFootBox);
    // Warps 1 and 4 see the transient (one as a negative detection); others have f <= 0.15.
    const std::vector<std::int64_t> det{10, 100, 15, 5, 80, 12};
    std::vector<MaskImage> warps;
    for (std::size_t i = 0; i < det.size(); ++i) {
        warps.push_back(warpWithDetected(det[i], i == 4 ? kDetectedNegative : kDetected));
    }
    const FootprintDecision d = decide(f, warps);
    EXPECT_EQ(d.rule, ClipRule::Double);
    EXPECT_EQ(d.clippedWarps, (std::vector<int>{1, 4}));
    ASSERT_EQ(d.candidates.size(), 6U);
    EXPECT_TRUE(d.candidates[1].clipped);
    EXPECT_TRUE(d.candidates[4].clipped);
    EXPECT_FALSE(d.candidates[2].clipped);

    // One other warp at 0.16 > 0.15: not clipped (and two are above 0.6, so no single either).
    std::vector<MaskImage> w2 = warps;
    w2[2] = warpWithDetected(16);
    const FootprintDecision k = decide(f, w2);
    EXPECT_EQ(k.rule, ClipRule::Kept);
    EXPECT_TRUE(k.clippedWarps.empty());

    // Only three candidates (the double rule needs more than three).
    std::vector<MaskImage> w3{warpWithDetected(100), warpWithDetected(90), warpWithDetected(10),
                              warpWithDetected(0),   warpWithDetected(0),  warpWithDetected(0)};
    EXPECT_EQ(decide(f, w3).rule, ClipRule::Kept);
}

TEST(ClipDecision, DoubleRuleOverridesSingleRule) {
    const std::vector<WarpCounts> counts{{0, 90}, {0, 50}, {0, 10}, {0, 15}};
    const FootprintDecision d = decideClip(100, counts, ClipControl{});
    EXPECT_EQ(d.rule, ClipRule::Double);
    EXPECT_EQ(d.clippedWarps, (std::vector<int>{0, 1}));
    // Without the second warp above 0.45 the single rule stands.
    const std::vector<WarpCounts> single{{0, 90}, {0, 45}, {0, 10}, {0, 15}};
    const FootprintDecision s = decideClip(100, single, ClipControl{});
    EXPECT_EQ(s.rule, ClipRule::Single);
    EXPECT_EQ(s.clippedWarps, std::vector<int>{0});
}

TEST(ClipDecision, StaticStarDetectedInAllWarpsIsNeverClipped) {
    const SpanSet f = SpanSet::fromBox(kFootBox);
    std::vector<MaskImage> warps;
    for (int i = 0; i < 6; ++i) {
        warps.push_back(warpWithDetected(100 - 5 * i));  // f from 1.0 to 0.75
    }
    // Some BAD pixels in one warp: fewer good pixels, still detected.
    firstPixels(f, 10).paint(warps[2], kBad);
    const FootprintDecision d = decide(f, warps);
    EXPECT_EQ(d.rule, ClipRule::Kept);
    EXPECT_TRUE(d.clippedWarps.empty());
    EXPECT_EQ(d.candidates.size(), 6U);
    for (const Candidate& c : d.candidates) {
        EXPECT_FALSE(c.clipped);
    }
    EXPECT_EQ(d.candidates[2].ign, 10);
    EXPECT_EQ(d.candidates[2].det, 80);  // 90 DETECTED minus the 10 BAD ones
}

TEST(ClipDecision, OnlyCandidateThresholdIsStrict) {
    const ClipControl ctrl;
    const FootprintDecision atHalf = decideClip(100, std::vector<WarpCounts>{{0, 0}, {0, 50}, {0, 0}}, ctrl);
    EXPECT_EQ(atHalf.rule, ClipRule::Kept);
    ASSERT_EQ(atHalf.candidates.size(), 1U);
    EXPECT_DOUBLE_EQ(atHalf.candidates[0].fraction, 0.5);
    EXPECT_TRUE(atHalf.clippedWarps.empty());
    const FootprintDecision above = decideClip(100, std::vector<WarpCounts>{{0, 0}, {0, 51}, {0, 0}}, ctrl);
    EXPECT_EQ(above.rule, ClipRule::SingleOnlyCandidate);
    EXPECT_EQ(above.clippedWarps, std::vector<int>{1});
    // With ignored pixels: f = det / (nPix - ign).
    EXPECT_EQ(decideClip(100, std::vector<WarpCounts>{{20, 40}}, ctrl).rule, ClipRule::Kept);
    EXPECT_EQ(decideClip(100, std::vector<WarpCounts>{{20, 41}}, ctrl).rule, ClipRule::SingleOnlyCandidate);
}

TEST(ClipDecision, CandidateFilter) {
    const ClipControl ctrl;
    // ign > det, (nPix - ign) <= nPix/2, det == 0: none are candidates.
    const FootprintDecision none = decideClip(100, std::vector<WarpCounts>{{31, 30}, {50, 50}, {0, 0}}, ctrl);
    EXPECT_TRUE(none.candidates.empty());
    EXPECT_EQ(none.rule, ClipRule::Kept);
    EXPECT_EQ(none.reason, "no candidates");
    // ign == det and nPix - ign > nPix/2 are fine.
    const FootprintDecision one = decideClip(100, std::vector<WarpCounts>{{30, 30}, {49, 49}}, ctrl);
    ASSERT_EQ(one.candidates.size(), 2U);
    EXPECT_DOUBLE_EQ(one.candidates[1].fraction, 49.0 / 51.0);
    EXPECT_EQ(one.candidates[1].ign, 49);
    // Odd nPix: nPix - ign = 50 > 49.5 is a candidate.
    EXPECT_EQ(decideClip(99, std::vector<WarpCounts>{{49, 49}}, ctrl).candidates.size(), 1U);
    // Counts are 64-bit: no wrap at 65536.
    const FootprintDecision big = decideClip(200000, std::vector<WarpCounts>{{0, 150000}}, ctrl);
    EXPECT_EQ(big.rule, ClipRule::SingleOnlyCandidate);
    EXPECT_DOUBLE_EQ(big.candidates[0].fraction, 0.75);
}

TEST(ClipDecision, OverlapCounts) {
    const SpanSet f = SpanSet::fromBox(kFootBox);
    MaskImage m(kPatch, 0);
    SpanSet::fromBox(Box{15, 10, 10, 3}).paint(m, kDetected);  // 5x3 = 15 px inside F
    SpanSet::fromBox(Box{22, 12, 2, 1}).paint(m, kNoData);     // 2 px, on a DETECTED row inside F
    SpanSet::fromBox(Box{0, 0, 5, 5}).paint(m, kBad);          // outside F
    const WarpCounts c = overlapCounts(f, summarise(m));
    EXPECT_EQ(c.ign, 2);
    EXPECT_EQ(c.det, 13);
}

TEST(ClipDecision, BigFootprintRule) {
    // G1: 20x20 = 400 px; G2: exactly 100 px fully clipped; G3: 5 px.
    const SpanSet g1 = SpanSet::fromBox(Box{0, 0, 20, 20});
    const SpanSet g2 = SpanSet::fromBox(Box{30, 0, 10, 10});
    const SpanSet g3 = SpanSet::fromBox(Box{50, 0, 5, 1});
    const SpanSet detAll = uniteAll({g1, g2, g3});
    // Clipped union overlapping G1 in exactly 101 pixels: the whole of G1 is clipped.
    SpanSet clipped = uniteAll({firstPixels(g1, 101), g2, g3});
    auto big = bigFootprints(detAll, clipped, 100);
    ASSERT_EQ(big.size(), 1U);
    EXPECT_EQ(big[0], g1);
    // Exactly 100 overlapping pixels: not clipped.
    clipped = uniteAll({firstPixels(g1, 100), g2, g3});
    EXPECT_TRUE(bigFootprints(detAll, clipped, 100).empty());
    // A 101-pixel component fully covered qualifies; order follows the components.
    const SpanSet g4 = firstPixels(SpanSet::fromBox(Box{0, 30, 60, 5}), 101);
    const auto two = bigFootprints(uniteAll({g1, g4}), uniteAll({g1, g4}), 100);
    ASSERT_EQ(two.size(), 2U);
    EXPECT_EQ(two[0], g1);
    EXPECT_EQ(two[1], g4);
    EXPECT_TRUE(bigFootprints(detAll, SpanSet{}, 100).empty());
}

TEST(ClipDecision, RuleNamesAndValidation) {
    EXPECT_STREQ(toString(ClipRule::Kept), "kept");
    EXPECT_STREQ(toString(ClipRule::Single), "single");
    EXPECT_STREQ(toString(ClipRule::SingleOnlyCandidate), "single-only-candidate");
    EXPECT_STREQ(toString(ClipRule::Double), "double");
    EXPECT_NO_THROW(ClipControl{}.validate());
    ClipControl c;
    c.minClipFootOverlap = 1.5;
    EXPECT_THROW(c.validate(), InvalidParameter);
    c = ClipControl{};
    c.maxClipFootOverlapDouble = -0.1;
    EXPECT_THROW(c.validate(), InvalidParameter);
    c = ClipControl{};
    c.minBigOverlap = -1;
    EXPECT_THROW(c.validate(), InvalidParameter);
}

}  // namespace
}  // namespace safeclip::kernel

namespace safeclip::kernel {
namespace {

// clip.uint16_counts (issue 12 item 7). A 74,034-px ghost footprint, DETECTED in one warp on
// 70,681 good pixels and absent from the other three. 64-bit (spec §0.4): the only candidate has
// f = 70681/74034 = 0.9547 > 0.5 -> clipped (§6.3.3). Upstream's uint16 arrays keep
// 70681 mod 65536 = 5145 while nPixel stays 74034: f = 5145/74034 = 0.0695 <= 0.5 -> kept.
TEST(ClipDecision, Uint16CountsWrapLikeUpstream) {
    const std::vector<WarpCounts> counts = {{0, 70681}, {0, 0}, {0, 0}, {0, 0}};
    ClipControl wide;
    const FootprintDecision d64 = decideClip(74034, counts, wide);
    ASSERT_EQ(d64.candidates.size(), 1U);
    EXPECT_EQ(d64.candidates[0].det, 70681);
    EXPECT_NEAR(d64.candidates[0].fraction, 0.9547, 5e-5);
    EXPECT_EQ(d64.rule, ClipRule::SingleOnlyCandidate);
    EXPECT_EQ(d64.clippedWarps, std::vector<int>{0});

    ClipControl wrap;
    wrap.uint16Counts = true;
    const FootprintDecision d16 = decideClip(74034, counts, wrap);
    ASSERT_EQ(d16.candidates.size(), 1U);
    EXPECT_EQ(d16.candidates[0].det, 5145);
    EXPECT_NEAR(d16.candidates[0].fraction, 0.0695, 5e-5);
    EXPECT_EQ(d16.rule, ClipRule::Kept);
    EXPECT_TRUE(d16.clippedWarps.empty());

    // ign wraps too: a 140,000-px footprint with 75,540 bad and 76,000 DETECTED pixels in a warp.
    // 64-bit: 140000 - 75540 = 64460 good <= 70000 -> not a candidate. Wrapped: ign 10,004,
    // det 10,464 (>= ign), 129,996 good > 70,000 -> a candidate with f = 10464/129996.
    const std::vector<WarpCounts> bad = {{75540, 76000}};
    EXPECT_TRUE(decideClip(140000, bad, wide).candidates.empty());
    const FootprintDecision b16 = decideClip(140000, bad, wrap);
    ASSERT_EQ(b16.candidates.size(), 1U);
    EXPECT_EQ(b16.candidates[0].ign, 10004);
    EXPECT_EQ(b16.candidates[0].det, 10464);
    EXPECT_DOUBLE_EQ(b16.candidates[0].fraction, 10464.0 / 129996.0);
}

}  // namespace
}  // namespace safeclip::kernel
