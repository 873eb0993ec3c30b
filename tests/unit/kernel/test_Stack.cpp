/// @file test_Stack.cpp  Unit tests of the per-pixel stacker (spec §4, §11, afw vectors of §12).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/SampleStats.h"
#include "safeclip/kernel/Stack.h"

namespace safeclip::kernel {
namespace {

constexpr MaskPixel kBad = 0x1;
constexpr MaskPixel kSat = 0x2;
constexpr MaskPixel kEdge = 0x10;
constexpr MaskPixel kDetected = 0x20;
constexpr MaskPixel kNoData = 0x100;
constexpr MaskPixel kClipped = 0x200;
constexpr MaskPixel kRejected = 0x400;
constexpr MaskPixel kSensorEdge = 0x800;
const float kNaNf = std::numeric_limits<float>::quiet_NaN();

PixelResult run(const std::vector<float>& x, const std::vector<MaskPixel>& m, const std::vector<float>& v,
                const std::vector<float>& w, const StackControl& ctrl) {
    StackScratch scratch;
    return stackPixel(x, m, v, w, ctrl, scratch);
}

StackControl meanCtrl() {
    StackControl c;
    c.statistic = Statistic::Mean;
    c.noGoodPixelsMask = kNoData;
    c.clippedBit = kClipped;
    return c;
}

StackControl clipCtrl() {
    StackControl c = meanCtrl();
    c.statistic = Statistic::MeanClip;
    return c;
}

std::uint32_t bitsOf(float f) {
    return std::bit_cast<std::uint32_t>(f);
}

// ---------------------------------------------------------------- afw test_stacker vectors

TEST(Stack, WeightedMeanByVector) {
    const std::vector<float> x{1.0F, 2.0F, 3.5F, 4.0F, 10.0F};
    const std::vector<float> w{0.5F, 1.0F, 2.0F, 3.0F, 0.25F};
    const std::vector<float> v{1.0F, 2.0F, 0.5F, 3.0F, 8.0F};
    const std::vector<MaskPixel> m(5, 0);
    double sw = 0;
    double swx = 0;
    double sw2v = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        sw += w[i];
        swx += static_cast<double>(w[i]) * x[i];
        sw2v += static_cast<double>(w[i]) * w[i] * v[i];
    }
    const PixelResult r = run(x, m, v, w, meanCtrl());
    EXPECT_DOUBLE_EQ(r.value, swx / sw);
    EXPECT_NEAR(r.value, 24.0 / 6.75, 1e-12);  // (0.5+2+7+12+2.5)/6.75
    EXPECT_DOUBLE_EQ(r.variance, sw2v / (sw * sw));
    EXPECT_EQ(r.mask, 0);
    EXPECT_EQ(r.nMasked, 0);
    EXPECT_EQ(r.nClipped, 0);
}

TEST(Stack, MeanByInverseVarianceIsHarmonicMean) {
    // x = v and w = 1/v: Σ w x / Σ w = n / Σ (1/v). Powers of two keep the float32 weights exact.
    const std::vector<float> v{1.0F, 2.0F, 4.0F, 8.0F, 0.25F, 0.5F};
    std::vector<float> w;
    double sumInv = 0;
    for (const float vi : v) {
        w.push_back(1.0F / vi);
        sumInv += 1.0 / vi;
    }
    const std::vector<MaskPixel> m(v.size(), 0);
    const PixelResult r = run(v, m, v, w, meanCtrl());
    EXPECT_NEAR(r.value, static_cast<double>(v.size()) / sumInv, 1e-12);
    // V = Σ w² v / (Σ w)² = Σ (1/v) / (Σ 1/v)² = 1 / Σ (1/v).
    EXPECT_NEAR(r.variance, 1.0 / sumInv, 1e-12);
    // General variances: float32 weights round, so agreement is to float precision.
    const std::vector<float> v2{1.0F, 3.0F, 7.0F, 5.0F, 10.0F, 0.3F};
    std::vector<float> w2;
    double sumInv2 = 0;
    for (const float vi : v2) {
        w2.push_back(1.0F / vi);
        sumInv2 += 1.0 / vi;
    }
    const PixelResult r2 = run(v2, m, v2, w2, meanCtrl());
    EXPECT_NEAR(r2.value, static_cast<double>(v2.size()) / sumInv2, 1e-6 * r2.value);
}

TEST(Stack, Ticket1412OrMaskOnlyOverAcceptedInputs) {
    StackControl c = meanCtrl();
    c.andMask = 0x1;
    const PixelResult r = run({1.0F, 2.0F}, {0x4, 0x3}, {1.0F, 1.0F}, {1.0F, 1.0F}, c);
    EXPECT_EQ(r.mask, 0x4);
    EXPECT_DOUBLE_EQ(r.value, 1.0);
    EXPECT_EQ(r.nMasked, 1);
}

TEST(Stack, RejectedMaskPropagationThreshold) {
    constexpr MaskPixel kReject = 0x2;
    constexpr MaskPixel kProp = 0x4;
    StackControl c = meanCtrl();
    c.andMask = kReject;
    c.propagationThresholds = {{kProp, 0.3}};
    const std::vector<float> x{12.0F, 9.0F, 7.0F, 3.0F, 4.0F};
    const std::vector<float> v(5, 1.0F);
    const std::vector<MaskPixel> m{kReject | kProp, 0, 0, 0, 0};

    // Rejected weight fraction 1/5 = 0.2 <= 0.3: the bit is not propagated.
    const PixelResult r1 = run(x, m, v, {1.0F, 1.0F, 1.0F, 1.0F, 1.0F}, c);
    EXPECT_EQ(r1.mask & kProp, 0);
    EXPECT_DOUBLE_EQ(r1.value, (9.0 + 7.0 + 3.0 + 4.0) / 4.0);

    // Rejected weight fraction 2/6 = 1/3 > 0.3: the bit is propagated.
    const PixelResult r2 = run(x, m, v, {2.0F, 1.0F, 1.0F, 1.0F, 1.0F}, c);
    EXPECT_EQ(r2.mask, kProp);
    EXPECT_DOUBLE_EQ(r2.value, (9.0 + 7.0 + 3.0 + 4.0) / 4.0);

    // The same weight rejected *without* the bit does not count.
    const PixelResult r3 = run(x, {kReject, 0, 0, 0, 0}, v, {2.0F, 1.0F, 1.0F, 1.0F, 1.0F}, c);
    EXPECT_EQ(r3.mask, 0);

    // Weights of accepted inputs enter the denominator: 1 / (1 + 2+2+2+2) = 1/9 < 0.3.
    const PixelResult r4 = run(x, m, v, {1.0F, 2.0F, 2.0F, 2.0F, 2.0F}, c);
    EXPECT_EQ(r4.mask & kProp, 0);
    // 2 rejected with the bit out of 1+2+... : (1+2)/(3+1+1+1) = 0.5 > 0.3.
    const PixelResult r5 =
        run(x, {kReject | kProp, kReject | kProp, 0, 0, 0}, v, {1.0F, 2.0F, 1.0F, 1.0F, 1.0F}, c);
    EXPECT_EQ(r5.mask, kProp);
    EXPECT_DOUBLE_EQ(r5.value, (7.0 + 3.0 + 4.0) / 3.0);

    // The comparison is strict: a fraction exactly equal to the threshold does not propagate.
    c.propagationThresholds = {{kProp, 0.25}};
    const PixelResult r6 = run(x, m, v, {1.0F, 1.0F, 1.0F, 0.5F, 0.5F}, c);  // 1 / 4
    EXPECT_EQ(r6.mask & kProp, 0);
    const PixelResult r7 = run(x, m, v, {1.0F, 1.0F, 1.0F, 0.5F, 0.25F}, c);  // 1 / 3.75
    EXPECT_EQ(r7.mask, kProp);
    // Every input rejected: §4.3.1 replaces the whole mask (propagated bits included) by NO_DATA.
    c.propagationThresholds = {{kProp, 0.1}};
    const PixelResult r8 =
        run(x, std::vector<MaskPixel>(5, kReject | kProp), v, std::vector<float>(5, 1.0F), c);
    EXPECT_EQ(r8.mask, kNoData);
}

TEST(Stack, ClippedTenInputsOneOutlier) {
    std::vector<float> x(10, 0.0F);
    x[3] = 1.0F;
    const std::vector<float> v(10, 1.0F);
    const std::vector<float> w(10, 1.0F);
    const std::vector<MaskPixel> m(10, 0);
    const PixelResult r = run(x, m, v, w, clipCtrl());
    EXPECT_EQ(r.value, 0.0);
    EXPECT_EQ(r.nClipped, 1);
    EXPECT_EQ(r.mask, kClipped);
    EXPECT_DOUBLE_EQ(r.variance, 9.0 / 81.0);  // Σ w² v / (Σ w)² over the nine kept

    // MEAN does not clip.
    const PixelResult rm = run(x, m, v, w, meanCtrl());
    EXPECT_DOUBLE_EQ(rm.value, 0.1);
    EXPECT_EQ(rm.mask, 0);
}

TEST(Stack, ClippedMaskedInputMapsBits) {
    std::vector<float> x(10, 0.0F);
    std::vector<MaskPixel> m(10, 0);
    m[4] = kBad;
    m[7] = kClipped;
    x[7] = 100.0F;  // excluded by CLIPPED in the AND-mask: its value must not matter
    const std::vector<float> v(10, 1.0F);
    const std::vector<float> w(10, 1.0F);
    StackControl c = clipCtrl();
    c.andMask = kBad | kClipped;
    c.maskMap = {{kBad, kRejected}, {kEdge, kSensorEdge}, {kClipped, kClipped}};
    const PixelResult r = run(x, m, v, w, c);
    EXPECT_EQ(r.value, 0.0);
    EXPECT_EQ(r.nClipped, 0);
    EXPECT_EQ(r.nMasked, 2);
    EXPECT_EQ(r.mask, kRejected | kClipped);

    // No input masked: maskMap does not fire even though the map exists.
    const PixelResult r0 = run(x, std::vector<MaskPixel>(10, 0), v, w, meanCtrl());
    EXPECT_EQ(r0.mask, 0);
}

TEST(Stack, MaskMapLooksAtAllInputsIncludingNaN) {
    // An unmasked NaN counts as masked (NMASKED = 1); the map then tests *every* input's bits,
    // including the accepted one.
    StackControl c = meanCtrl();
    c.andMask = kBad;
    c.maskMap = {{kDetected, kRejected}};
    const PixelResult r = run({1.0F, kNaNf}, {kDetected, 0}, {1.0F, 1.0F}, {1.0F, 1.0F}, c);
    EXPECT_EQ(r.nMasked, 1);
    EXPECT_DOUBLE_EQ(r.value, 1.0);
    EXPECT_EQ(r.mask, kDetected | kRejected);
    const PixelResult r2 = run({1.0F, 3.0F}, {kDetected, 0}, {1.0F, 1.0F}, {1.0F, 1.0F}, c);
    EXPECT_EQ(r2.nMasked, 0);
    EXPECT_EQ(r2.mask, kDetected);
    EXPECT_DOUBLE_EQ(r2.value, 2.0);
}

TEST(Stack, AllMaskedGivesNaNAndNoGoodPixelsMask) {
    StackControl c = meanCtrl();
    c.andMask = kBad | kSat | kEdge | kNoData;
    const std::vector<float> x{1.0F, 2.0F, kNaNf};
    const std::vector<MaskPixel> m{kBad | kDetected, kEdge, 0};
    const std::vector<float> v{1.0F, 1.0F, 1.0F};
    const std::vector<float> w{1.0F, 1.0F, 1.0F};
    PixelResult r = run(x, m, v, w, c);
    EXPECT_TRUE(std::isnan(r.value));
    EXPECT_TRUE(std::isnan(r.variance));
    EXPECT_EQ(r.mask, kNoData);  // replaces the OR (DETECTED of a rejected input is not there)
    EXPECT_EQ(r.nMasked, 3);
    EXPECT_EQ(r.nClipped, 0);

    // Spec §11.1: mask = NO_DATA | mapped bits.
    c.maskMap = {{kBad | kSat, kRejected}, {kEdge, kSensorEdge}, {kClipped, kClipped}};
    r = run(x, m, v, w, c);
    EXPECT_EQ(r.mask, kNoData | kRejected | kSensorEdge);

    c.statistic = Statistic::MeanClip;
    r = run(x, m, v, w, c);
    EXPECT_TRUE(std::isnan(r.value));
    EXPECT_EQ(r.mask, kNoData | kRejected | kSensorEdge);
    EXPECT_EQ(r.nClipped, 0);

    // Zero inputs.
    r = run({}, {}, {}, {}, meanCtrl());
    EXPECT_TRUE(std::isnan(r.value));
    EXPECT_EQ(r.mask, kNoData);
}

TEST(Stack, SingleInput) {
    PixelResult r = run({3.25F}, {kDetected}, {0.75F}, {2.0F}, meanCtrl());
    EXPECT_DOUBLE_EQ(r.value, 3.25);
    EXPECT_DOUBLE_EQ(r.variance, 0.75);
    EXPECT_EQ(r.mask, kDetected);
    r = run({3.25F}, {kDetected}, {0.75F}, {2.0F}, clipCtrl());
    EXPECT_DOUBLE_EQ(r.value, 3.25);
    EXPECT_DOUBLE_EQ(r.variance, 0.75);
    EXPECT_EQ(r.nClipped, 0);
    EXPECT_EQ(r.mask, kDetected);
    // One accepted among several: still x and v.
    StackControl c = clipCtrl();
    c.andMask = kBad;
    r = run({3.25F, 7.0F, 9.0F}, {0, kBad, kBad}, {0.75F, 1.0F, 1.0F}, {2.0F, 1.0F, 1.0F}, c);
    EXPECT_DOUBLE_EQ(r.value, 3.25);
    EXPECT_DOUBLE_EQ(r.variance, 0.75);
    EXPECT_EQ(r.nClipped, 0);
    // Sample-variance error of one input is NaN (debiasing divides by zero).
    c.calcErrorFromInputVariance = false;
    c.statistic = Statistic::Mean;
    r = run({3.25F}, {0}, {0.75F}, {2.0F}, c);
    EXPECT_DOUBLE_EQ(r.value, 3.25);
    EXPECT_TRUE(std::isnan(r.variance));
}

TEST(Stack, TwoInputsMeanClip) {
    // σ = 1.5: half-width 1.5 · 0.7413 · 0.5 = 0.556 ≥ 0.5 keeps both.
    PixelResult r = run({0.0F, 1.0F}, {0, 0}, {1.0F, 1.0F}, {1.0F, 3.0F}, clipCtrl());
    EXPECT_DOUBLE_EQ(r.value, 0.75);
    EXPECT_EQ(r.nClipped, 0);
    EXPECT_EQ(r.mask, 0);
    // σ = 1.3 < 1.349 rejects both: NaN, both counted as clipped.
    StackControl c = clipCtrl();
    c.sigmaClip = 1.3;
    r = run({0.0F, 1.0F}, {0, 0}, {1.0F, 1.0F}, {1.0F, 3.0F}, c);
    EXPECT_TRUE(std::isnan(r.value));
    EXPECT_EQ(r.nClipped, 2);
    EXPECT_EQ(r.mask, kClipped);
}

TEST(Stack, MeanClipRemovesLargeOutlier) {
    std::mt19937 rng(12345);
    std::normal_distribution<float> g(100.0F, 1.0F);
    const int n = 40;
    std::vector<float> x(n);
    for (auto& xi : x) {
        xi = g(rng);
    }
    x[17] = 1000.0F * 100.0F;
    std::vector<MaskPixel> m(n, 0);
    m[17] = kDetected;
    const std::vector<float> v(n, 1.0F);
    const std::vector<float> w(n, 1.0F);
    const PixelResult r = run(x, m, v, w, clipCtrl());
    EXPECT_GE(r.nClipped, 1);
    EXPECT_LT(r.nClipped, n / 2);
    EXPECT_EQ(r.nMasked, 0);
    EXPECT_NEAR(r.value, 100.0, 1.0);
    // The mask still comes from the standard pass over all accepted inputs.
    EXPECT_EQ(r.mask, kDetected | kClipped);
    EXPECT_DOUBLE_EQ(r.variance, 1.0 / (n - r.nClipped));
    const PixelResult rm = run(x, m, v, w, meanCtrl());
    EXPECT_GT(rm.value, 2000.0);
}

TEST(Stack, MeanClipWithEqualVariancesGivesVOverN) {
    // afw test_statistics: err(MEAN)² = err(MEANCLIP)² = v / npix with input-variance errors.
    const int n = 25;
    std::vector<float> x(n);
    for (int i = 0; i < n; ++i) {
        x[i] = 10.0F + 0.01F * static_cast<float>(i % 5);
    }
    const std::vector<float> v(n, 4.0F);
    const std::vector<float> w(n, 1.0F);
    const std::vector<MaskPixel> m(n, 0);
    const PixelResult rm = run(x, m, v, w, meanCtrl());
    const PixelResult rc = run(x, m, v, w, clipCtrl());
    EXPECT_EQ(rc.nClipped, 0);
    EXPECT_NEAR(rm.variance, 4.0 / n, 1e-15);
    EXPECT_NEAR(rc.variance, 4.0 / n, 1e-15);
}

TEST(Stack, VarianceFormulas) {
    const std::vector<float> x{1.0F, 2.0F, 4.0F};
    const std::vector<float> w{1.0F, 2.0F, 3.0F};
    const std::vector<float> v{0.5F, 1.0F, 2.0F};
    const std::vector<MaskPixel> m(3, 0);
    StackControl c = meanCtrl();
    PixelResult r = run(x, m, v, w, c);
    EXPECT_NEAR(r.value, 17.0 / 6.0, 1e-15);
    EXPECT_NEAR(r.variance, (1 * 0.5 + 4 * 1.0 + 9 * 2.0) / 36.0, 1e-15);  // 0.625
    // Sample variance: s² = 53/22, V = s² Σw² / (Σw)² = 53/22 · 14/36.
    c.calcErrorFromInputVariance = false;
    r = run(x, m, v, w, c);
    EXPECT_NEAR(r.variance, 53.0 / 22.0 * 14.0 / 36.0, 1e-14);
    // Variance finiteness is not checked: an accepted NaN variance poisons V but not μ.
    c.calcErrorFromInputVariance = true;
    r = run(x, m, {0.5F, kNaNf, 2.0F}, w, c);
    EXPECT_NEAR(r.value, 17.0 / 6.0, 1e-15);
    EXPECT_TRUE(std::isnan(r.variance));
}

TEST(Stack, MeanClipIterationsUseWeightedMeanAndSigma) {
    // Hand-computed: values 0,1,2,3,10 with weights 1: median 2, IQR = 3-1 = 2,
    // h1 = 1.5·0.7413·2 = 2.224: keep {0,1,2,3}, μ1 = 1.5, s1² = 5/3, h2 = 1.5·1.291 = 1.936:
    // keep {0,1,2,3}, stable.
    const std::vector<float> x{0.0F, 1.0F, 2.0F, 3.0F, 10.0F};
    const std::vector<MaskPixel> m(5, 0);
    const std::vector<float> v(5, 1.0F);
    const std::vector<float> w(5, 1.0F);
    PixelResult r = run(x, m, v, w, clipCtrl());
    EXPECT_DOUBLE_EQ(r.value, 1.5);
    EXPECT_EQ(r.nClipped, 1);
    // With heavy weight on 3, iteration 2 centres on the weighted mean 2.5 and
    // h = 1.5·sqrt(s²); s² = [Σw(x-μ)²/Σw]·(Σw)²/((Σw)²-Σw²) with w = 1,1,1,7:
    // Σw=10, μ=(0+1+2+21)/10=2.4, Σw(x-μ)² = 5.76+1.96+0.16+7·0.36 = 10.4,
    // s² = 1.04·100/(100-52) = 2.1667, h = 2.208: keeps x ∈ [0.192, 4.608] -> {1,2,3}.
    r = run(x, m, v, {1.0F, 1.0F, 1.0F, 7.0F, 1.0F}, clipCtrl());
    // Iter 3: from {1,2,3} w {1,1,7}: μ = 24/9 = 2.667, Σw(x-μ)² = 2.778+0.444+0.778 = 4.0,
    // s² = (4/9)·81/(81-51) = 1.2, h = 1.643: keeps [1.024, 4.31] -> {2,3}.
    EXPECT_NEAR(r.value, (2.0 + 21.0) / 8.0, 1e-15);
    EXPECT_EQ(r.nClipped, 3);
    StackControl c = clipCtrl();
    c.clipIter = 1;
    r = run(x, m, v, {1.0F, 1.0F, 1.0F, 7.0F, 1.0F}, c);
    EXPECT_NEAR(r.value, 24.0 / 10.0, 1e-15);
    EXPECT_EQ(r.nClipped, 1);
}

TEST(Stack, MeanClipRetainingOnePointGivesNaN) {
    // Iteration 1 keeps only the median value 0 (IQR = 0) -> s² NaN -> iteration 2 NaN (spec §4.2.4).
    const std::vector<float> x{-5.0F, 0.0F, 7.0F};
    // IQR = 3.5 - (-2.5) = 6; with σ = 0.1 the half width is 0.44: only 0 survives.
    StackControl c = clipCtrl();
    c.sigmaClip = 0.1;
    PixelResult r = run(x, {0, 0, 0}, {1.0F, 1.0F, 1.0F}, {1.0F, 1.0F, 1.0F}, c);
    EXPECT_TRUE(std::isnan(r.value));
    EXPECT_EQ(r.nClipped, 3);
    EXPECT_EQ(r.mask, kClipped);
    c.clipIter = 1;
    r = run(x, {0, 0, 0}, {1.0F, 1.0F, 1.0F}, {1.0F, 1.0F, 1.0F}, c);
    EXPECT_DOUBLE_EQ(r.value, 0.0);
    EXPECT_EQ(r.nClipped, 2);
}

/// Straightforward reference of spec §4.1-4.2 (full sorts, explicit sets, no shortcuts).
PixelResult referenceMeanClip(const std::vector<float>& x, const std::vector<float>& v,
                              const std::vector<float>& w, double sigma, int iters) {
    std::vector<int> s0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        if (std::isfinite(x[i])) {
            s0.push_back(static_cast<int>(i));
        }
    }
    const auto n0 = static_cast<int>(s0.size());
    if (n0 == 0) {
        PixelResult r;
        r.value = std::numeric_limits<double>::quiet_NaN();
        return r;
    }
    std::vector<double> sorted;
    for (const int i : s0) {
        sorted.push_back(x[i]);
    }
    std::sort(sorted.begin(), sorted.end());
    const auto q = [&sorted](double f) {
        const double r = f * static_cast<double>(sorted.size() - 1);
        const auto lo = static_cast<std::size_t>(std::floor(r));
        const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
        return sorted[lo] + (r - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
    };
    const double median = q(0.5);
    const double iqr = q(0.75) - q(0.25);
    double mu = 0;
    double s2 = 0;
    double var = 0;
    int kept = 0;
    for (int k = 1; k <= iters; ++k) {
        const double c = k == 1 ? median : mu;
        const double h = (k > 1 && n0 > 1) ? sigma * std::sqrt(s2) : sigma * 0.741301109252802 * iqr;
        if (std::isnan(c) || std::isnan(h)) {
            PixelResult r;
            r.value = std::numeric_limits<double>::quiet_NaN();
            r.nClipped = n0;
            return r;
        }
        double sw = 0;
        double swx = 0;
        double sw2 = 0;
        double sw2v = 0;
        kept = 0;
        std::vector<int> sk;
        for (const int i : s0) {
            if (std::abs(x[i] - c) <= h) {
                sk.push_back(i);
                sw += w[i];
                swx += static_cast<double>(w[i]) * x[i];
                sw2 += static_cast<double>(w[i]) * w[i];
                sw2v += static_cast<double>(w[i]) * w[i] * v[i];
            }
        }
        kept = static_cast<int>(sk.size());
        mu = swx / sw;
        double dev = 0;
        for (const int i : sk) {
            dev += w[i] * (x[i] - mu) * (x[i] - mu);
        }
        s2 = dev / sw * sw * sw / (sw * sw - sw2);
        var = sw2v / (sw * sw);
    }
    PixelResult r;
    r.value = mu;
    r.variance = var;
    r.nClipped = n0 - kept;
    return r;
}

TEST(Stack, MeanClipMatchesReferenceOnRandomPixels) {
    std::mt19937 rng(2024);
    std::uniform_int_distribution<int> nDist(1, 45);
    std::uniform_real_distribution<float> u(0.0F, 1.0F);
    std::normal_distribution<float> g(0.0F, 1.0F);
    StackScratch scratch;
    int nDiffer = 0;
    for (int trial = 0; trial < 4000; ++trial) {
        const int n = nDist(rng);
        std::vector<float> x(n);
        std::vector<float> v(n);
        std::vector<float> w(n);
        for (int i = 0; i < n; ++i) {
            x[i] = u(rng) < 0.1F ? 20.0F * g(rng) : g(rng);
            v[i] = 0.1F + u(rng);
            w[i] = u(rng) < 0.2F ? 10.0F * u(rng) : 0.2F + u(rng);
            if (u(rng) < 0.05F) {
                x[i] = kNaNf;
            }
        }
        StackControl c = clipCtrl();
        c.sigmaClip = trial % 2 == 0 ? 1.5 : 2.0;
        c.clipIter = 1 + trial % 4;
        const PixelResult ref = referenceMeanClip(x, v, w, c.sigmaClip, c.clipIter);
        const PixelResult r = stackPixel(x, std::vector<MaskPixel>(n, 0), v, w, c, scratch);
        ASSERT_EQ(r.nClipped, ref.nClipped) << "trial " << trial;
        if (std::isnan(ref.value)) {
            ASSERT_TRUE(std::isnan(r.value)) << "trial " << trial;
        } else {
            ASSERT_NEAR(r.value, ref.value, 1e-12 * (1.0 + std::abs(ref.value))) << "trial " << trial;
            ASSERT_NEAR(r.variance, ref.variance, 1e-12 * ref.variance) << "trial " << trial;
        }
        nDiffer += r.nClipped > 0 ? 1 : 0;
    }
    EXPECT_GT(nDiffer, 1000);  // clipping happened in many trials
}

TEST(Stack, ValidateRejectsBadParameters) {
    StackControl c;
    EXPECT_NO_THROW(c.validate());
    c.sigmaClip = 0.0;
    EXPECT_THROW(c.validate(), InvalidParameter);
    c.sigmaClip = -1.0;
    EXPECT_THROW(c.validate(), InvalidParameter);
    c.sigmaClip = std::numeric_limits<double>::quiet_NaN();
    EXPECT_THROW(c.validate(), InvalidParameter);
    c = StackControl{};
    c.clipIter = 0;
    EXPECT_THROW(c.validate(), InvalidParameter);
    c = StackControl{};
    c.propagationThresholds = {{kSat, 1.5}};
    EXPECT_THROW(c.validate(), InvalidParameter);
    c.propagationThresholds = {{kSat, -0.1}};
    EXPECT_THROW(c.validate(), InvalidParameter);
    c.propagationThresholds = {{kSat | kBad, 0.1}};
    EXPECT_THROW(c.validate(), InvalidParameter);
    c.propagationThresholds = {{kSat, 0.1}, {kBad, 1.0}, {kEdge, 0.0}};
    EXPECT_NO_THROW(c.validate());

    MaskedImage in(Box{0, 0, 2, 2});
    MaskedImage out(Box{0, 0, 2, 2});
    StackControl bad;
    bad.clipIter = 0;
    const std::vector<float> w{1.0F};
    EXPECT_THROW(stackRegion({&in}, w, bad, Box{0, 0, 2, 2}, out), InvalidParameter);
    EXPECT_THROW(stackRegion({&in}, {}, StackControl{}, Box{0, 0, 2, 2}, out), InvalidParameter);
    EXPECT_THROW(stackRegion({&in}, w, StackControl{}, Box{0, 0, 3, 2}, out), InvalidParameter);
}

// ---------------------------------------------------------------- stackRegion

struct RegionFixture {
    std::vector<MaskedImage> images;
    std::vector<float> weights;
};

RegionFixture makeInputs(int n, std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> g(50.0F, 3.0F);
    std::uniform_real_distribution<float> u(0.0F, 1.0F);
    RegionFixture f;
    for (int i = 0; i < n; ++i) {
        // Boxes differ but all contain [-3, 20) x [5, 22).
        MaskedImage mi(Box{-5 - i, 3 - (i % 2), 30 + i, 21 + i});
        for (std::size_t p = 0; p < mi.image.data().size(); ++p) {
            const float r = u(rng);
            float x = g(rng);
            MaskPixel m = 0;
            if (r < 0.05F) {
                x = kNaNf;
                m = kNoData;
            } else if (r < 0.10F) {
                m = kBad;
            } else if (r < 0.13F) {
                m = kSat;
            } else if (r < 0.16F) {
                x *= 5.0F;  // outlier
                m = kDetected;
            } else if (r < 0.18F) {
                x = kNaNf;  // NaN without a mask bit
            } else if (r < 0.20F) {
                m = kEdge;
            }
            mi.image.data()[p] = x;
            mi.mask.data()[p] = m;
            mi.variance.data()[p] = 0.5F + u(rng);
        }
        f.images.push_back(std::move(mi));
        f.weights.push_back(0.5F + u(rng));
    }
    return f;
}

StackControl regionCtrl(Statistic s) {
    StackControl c;
    c.statistic = s;
    c.andMask = kNoData | kBad | kSat | kEdge;
    c.noGoodPixelsMask = kNoData;
    c.clippedBit = kClipped;
    c.maskMap = {{kBad | kSat, kRejected}, {kEdge, kSensorEdge}, {kClipped, kClipped}};
    c.propagationThresholds = {{kSat, 0.1}};
    return c;
}

void expectBitwiseEqual(const MaskedImage& a, const MaskedImage& b, const Box& region) {
    for (int y = region.y0; y < region.y1(); ++y) {
        for (int x = region.x0; x < region.x1(); ++x) {
            ASSERT_EQ(bitsOf(a.image(x, y)), bitsOf(b.image(x, y))) << x << "," << y;
            ASSERT_EQ(bitsOf(a.variance(x, y)), bitsOf(b.variance(x, y))) << x << "," << y;
            ASSERT_EQ(a.mask(x, y), b.mask(x, y)) << x << "," << y;
        }
    }
}

class StackRegionTest : public ::testing::TestWithParam<Statistic> {};

TEST_P(StackRegionTest, EqualsStackPixelLoop) {
    const RegionFixture f = makeInputs(7, 42);
    std::vector<const MaskedImage*> ptrs;
    for (const auto& mi : f.images) {
        ptrs.push_back(&mi);
    }
    // Every specialisation of the block moments: variance from the inputs or from the sample,
    // one clip iteration (the first is the last) or three.
    for (const auto& [fromInput, clipIter] :
         {std::pair{true, 3}, std::pair{false, 3}, std::pair{true, 1}, std::pair{false, 1}}) {
        SCOPED_TRACE(testing::Message() << "fromInput " << fromInput << " clipIter " << clipIter);
        StackControl c = regionCtrl(GetParam());
        c.calcErrorFromInputVariance = fromInput;
        c.clipIter = clipIter;
        const Box region{-3, 5, 23, 17};
        MaskedImage out(Box{-10, 0, 40, 30});
        out.image.fill(-1.0F);
        out.mask.fill(0x7fff);
        const StackResult res = stackRegion(ptrs, f.weights, c, region, out);
        EXPECT_EQ(res.nPixels, region.area());

        StackScratch scratch;
        std::vector<float> x(ptrs.size());
        std::vector<MaskPixel> m(ptrs.size());
        std::vector<float> v(ptrs.size());
        std::int64_t nClipped = 0;
        std::int64_t nNoData = 0;
        std::int64_t nRejected = 0;
        for (int yy = region.y0; yy < region.y1(); ++yy) {
            for (int xx = region.x0; xx < region.x1(); ++xx) {
                for (std::size_t i = 0; i < ptrs.size(); ++i) {
                    x[i] = ptrs[i]->image(xx, yy);
                    m[i] = ptrs[i]->mask(xx, yy);
                    v[i] = ptrs[i]->variance(xx, yy);
                }
                const PixelResult r = stackPixel(x, m, v, f.weights, c, scratch);
                ASSERT_EQ(bitsOf(out.image(xx, yy)), bitsOf(static_cast<float>(r.value))) << xx << "," << yy;
                ASSERT_EQ(bitsOf(out.variance(xx, yy)), bitsOf(static_cast<float>(r.variance)));
                ASSERT_EQ(out.mask(xx, yy), r.mask);
                nClipped += r.nClipped > 0 ? 1 : 0;
                nNoData += r.nMasked == static_cast<int>(ptrs.size()) ? 1 : 0;
                nRejected += (r.mask & kRejected) != 0 ? 1 : 0;
            }
        }
        EXPECT_EQ(res.nClippedPixels, nClipped);
        EXPECT_EQ(res.nNoData, nNoData);
        EXPECT_GT(nRejected, 0);  // the fixture exercises the mask map
        if (GetParam() == Statistic::MeanClip) {
            EXPECT_GT(nClipped, 0);
        } else {
            EXPECT_EQ(nClipped, 0);
        }
        // Pixels outside the region are untouched.
        EXPECT_EQ(out.image(-10, 0), -1.0F);
        EXPECT_EQ(out.mask(region.x1(), region.y0), 0x7fff);
        EXPECT_EQ(out.image(region.x0, region.y1()), -1.0F);
    }
}

TEST_P(StackRegionTest, IndependentOfRowChunking) {
    const RegionFixture f = makeInputs(9, 7);
    std::vector<const MaskedImage*> ptrs;
    for (const auto& mi : f.images) {
        ptrs.push_back(&mi);
    }
    const StackControl c = regionCtrl(GetParam());
    const Box region{-3, 5, 23, 17};
    MaskedImage whole(region);
    const StackResult all = stackRegion(ptrs, f.weights, c, region, whole);
    for (const int chunk : {1, 3, 7}) {
        MaskedImage parts(Box{-3, 5, 23, 17});
        std::int64_t nPix = 0;
        std::int64_t nClip = 0;
        for (int y = region.y0; y < region.y1(); y += chunk) {
            const StackResult r = stackRegion(ptrs, f.weights, c, region.rows(y, y + chunk), parts);
            nPix += r.nPixels;
            nClip += r.nClippedPixels;
        }
        EXPECT_EQ(nPix, all.nPixels);
        EXPECT_EQ(nClip, all.nClippedPixels);
        expectBitwiseEqual(whole, parts, region);
    }
    // Column split too.
    MaskedImage cols(region);
    stackRegion(ptrs, f.weights, c, Box{-3, 5, 10, 17}, cols);
    stackRegion(ptrs, f.weights, c, Box{7, 5, 13, 17}, cols);
    expectBitwiseEqual(whole, cols, region);
}

INSTANTIATE_TEST_SUITE_P(Statistics, StackRegionTest,
                         ::testing::Values(Statistic::Mean, Statistic::MeanClip));

TEST(Stack, StackRegionCountsAndValues) {
    const Box box{10, 20, 3, 2};
    std::vector<MaskedImage> ims;
    for (int i = 0; i < 3; ++i) {
        MaskedImage mi(box);
        mi.image.fill(static_cast<float>(i + 1));
        mi.variance.fill(1.0F);
        mi.mask.fill(0);
        ims.push_back(std::move(mi));
    }
    for (auto& mi : ims) {
        mi.mask(10, 20) = kNoData;  // nothing accepted at (10, 20)
        mi.image(10, 20) = kNaNf;
    }
    ims[2].image(12, 21) = 1000.0F;
    std::vector<const MaskedImage*> ptrs{&ims[0], &ims[1], &ims[2]};
    const std::vector<float> w{1.0F, 1.0F, 2.0F};
    MaskedImage out(box);
    StackControl c = regionCtrl(Statistic::Mean);
    StackResult r = stackRegion(ptrs, w, c, box, out);
    EXPECT_EQ(r.nPixels, 6);
    EXPECT_EQ(r.nNoData, 1);
    EXPECT_EQ(r.nClippedPixels, 0);
    EXPECT_TRUE(std::isnan(out.image(10, 20)));
    EXPECT_EQ(out.mask(10, 20), kNoData);
    EXPECT_FLOAT_EQ(out.image(11, 20), (1.0F + 2.0F + 6.0F) / 4.0F);
    EXPECT_FLOAT_EQ(out.variance(11, 20), 6.0F / 16.0F);
    EXPECT_FLOAT_EQ(out.image(12, 21), (1.0F + 2.0F + 2000.0F) / 4.0F);
}

// ---------------------------------------------------------------- meanClipUnweighted, quantile

TEST(Stack, QuantileLinearInterpolation) {
    std::vector<double> a{4.0, 1.0, 3.0, 2.0};
    EXPECT_DOUBLE_EQ(quantile(a, 0.5), 2.5);
    EXPECT_DOUBLE_EQ(quantile(a, 0.25), 1.75);
    EXPECT_DOUBLE_EQ(quantile(a, 0.75), 3.25);
    EXPECT_DOUBLE_EQ(quantile(a, 0.0), 1.0);
    EXPECT_DOUBLE_EQ(quantile(a, 1.0), 4.0);
    std::vector<double> b{5.0, -1.0, 9.0, 0.0, 2.0};
    EXPECT_DOUBLE_EQ(quantile(b, 0.5), 2.0);
    EXPECT_DOUBLE_EQ(quantile(b, 0.25), 0.0);
    std::vector<double> one{7.5};
    EXPECT_DOUBLE_EQ(quantile(one, 0.25), 7.5);
    std::vector<double> empty;
    EXPECT_TRUE(std::isnan(quantile(empty, 0.5)));
    EXPECT_THROW(quantile(a, 1.5), InvalidParameter);
}

// STDEVCLIP (detectTemplate's threshold): the debiased stdev of the last clip selection.
TEST(SampleStats, StdevClipLeavesTheOutlierOut) {
    const std::vector<float> v = {1, 2, 3, 4, 5, 1000};
    // Pass 1 around the median 3.5 with 3 x 0.7413 x IQR(2.5) = 5.56 keeps 1..5; then the same.
    EXPECT_DOUBLE_EQ(stdevClipUnweighted(v, 3.0, 3), std::sqrt(2.5));
    EXPECT_DOUBLE_EQ(meanClipUnweighted(v, 3.0, 3), 3.0);
    EXPECT_TRUE(std::isnan(stdevClipUnweighted(std::vector<float>{}, 3.0, 3)));
    EXPECT_TRUE(std::isnan(stdevClipUnweighted(std::vector<float>{2.0F}, 3.0, 3)));
    EXPECT_THROW((void)stdevClipUnweighted(v, 0.0, 3), InvalidParameter);
}

TEST(Stack, MeanClipUnweightedBasics) {
    std::vector<float> empty;
    EXPECT_TRUE(std::isnan(meanClipUnweighted(empty, 1.5, 3)));
    std::vector<float> one{2.5F};
    EXPECT_DOUBLE_EQ(meanClipUnweighted(one, 1.5, 3), 2.5);
    std::vector<float> ten(10, 0.0F);
    ten[2] = 1.0F;
    EXPECT_DOUBLE_EQ(meanClipUnweighted(ten, 1.5, 3), 0.0);
    std::vector<float> five{0.0F, 1.0F, 2.0F, 3.0F, 10.0F};
    EXPECT_DOUBLE_EQ(meanClipUnweighted(five, 1.5, 3), 1.5);
    EXPECT_THROW(meanClipUnweighted(five, 0.0, 3), InvalidParameter);
}

TEST(Stack, SampleQuantilesEqualSelectionOnAnySample) {
    // The histogram selection must return exactly the values that nth_element-based quantile()
    // returns: flat samples (one histogram bin), negative values, signed zeros, ties, outliers.
    std::mt19937 rng(3);
    std::normal_distribution<float> g(0.0F, 1.0F);
    const double qs[] = {0.5, 0.25, 0.75, 0.0, 1.0, 0.1};
    auto check = [&](const std::vector<float>& v, const char* what) {
        const std::vector<double> got = sampleQuantiles(v, qs);
        for (std::size_t t = 0; t < std::size(qs); ++t) {
            std::vector<double> d(v.begin(), v.end());
            const double want = quantile(d, qs[t]);
            ASSERT_EQ(got[t] == 0.0 ? 0.0 : got[t], want == 0.0 ? 0.0 : want) << what << " q=" << qs[t];
        }
    };
    // 300007 values take the bracketed path (subsample, one counting pass, selection among the
    // candidates); the smaller ones the histogram path.
    for (const std::size_t n : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{7},
                                std::size_t{1000}, std::size_t{100001}, std::size_t{300007}}) {
        std::vector<float> wide(n);
        std::vector<float> flat(n);
        std::vector<float> ties(n);
        std::vector<float> mixed(n);
        for (std::size_t i = 0; i < n; ++i) {
            wide[i] = g(rng) * 1e4F;
            flat[i] = 100.0F + 1e-3F * g(rng);  // within one 16-bit key bin
            ties[i] = static_cast<float>(static_cast<int>(i % 5) - 2);
            mixed[i] = i % 11 == 0 ? -0.0F : (i % 13 == 0 ? 0.0F : (i % 101 == 0 ? 3e30F : g(rng)));
        }
        check(wide, "wide");
        check(flat, "flat");
        check(ties, "ties");  // brackets overflow their cap: the histogram fallback
        check(mixed, "mixed");
    }
    // Samples whose regular subsample misrepresents them (the values it picks are small and the
    // rest large): the brackets miss the ranks, or (all picked values equal) overflow their cap,
    // and the exact fallback answers.
    // Every value at an index divisible by 4 is small; a regular subsample with a power-of-two
    // stride >= 8 picks only indices (stride/2)(2k+1), all divisible by 4.
    for (const bool equal : {false, true}) {
        const std::size_t n = 1 << 18;
        std::vector<float> trap(n);
        for (std::size_t i = 0; i < n; ++i) {
            trap[i] =
                i % 4 == 0 ? (equal ? 0.0F : static_cast<float>(i)) : 1e6F + static_cast<float>(i % 977);
        }
        // the quartiles only (q = 0 or 1 would open a bracket to the end, which overflows its cap)
        const double quartiles[] = {0.5, 0.25, 0.75};
        const std::vector<double> got = sampleQuantiles(trap, quartiles);
        for (std::size_t t = 0; t < std::size(quartiles); ++t) {
            std::vector<double> d(trap.begin(), trap.end());
            EXPECT_EQ(got[t], quantile(d, quartiles[t]))
                << (equal ? "equal " : "") << "trap q=" << quartiles[t];
        }
    }
    const std::vector<float> empty;
    EXPECT_TRUE(std::isnan(sampleQuantiles(empty, qs)[0]));
    const double bad[] = {1.5};
    const std::vector<float> one{1.0F};
    EXPECT_THROW(sampleQuantiles(one, bad), InvalidParameter);
}

TEST(Stack, MeanClipUnweightedMatchesStackPixelAndClipsOutliers) {
    std::mt19937 rng(99);
    std::normal_distribution<float> g(10.0F, 1.0F);
    const int n = 2001;  // above the small-sort limit of the stacker
    std::vector<float> values(n);
    for (auto& vi : values) {
        vi = g(rng);
    }
    for (int k = 0; k < 20; ++k) {
        values[static_cast<std::size_t>(k * 97)] = 10000.0F;
    }
    const std::vector<MaskPixel> m(n, 0);
    const std::vector<float> w(n, 1.0F);
    const PixelResult r = run(values, m, values, w, clipCtrl());
    std::vector<float> copy = values;
    const double mc = meanClipUnweighted(copy, 1.5, 3);
    EXPECT_NEAR(mc, r.value, 1e-9);
    EXPECT_NEAR(mc, 10.0, 0.1);
    EXPECT_GE(r.nClipped, 20);
    // Plain mean is dragged far away by the outliers.
    double sum = 0;
    for (const float vi : values) {
        sum += vi;
    }
    EXPECT_GT(sum / n, 90.0);
}

// ---------------------------------------------------------------- stackRegionPair, fast paths

TEST(Stack, StackRegionPairEqualsTwoStackRegionCalls) {
    for (const std::size_t n :
         {std::size_t{1}, std::size_t{2}, std::size_t{5}, std::size_t{16}, std::size_t{40}}) {
        const RegionFixture f = makeInputs(static_cast<int>(n), 11 + static_cast<unsigned>(n));
        std::vector<const MaskedImage*> ptrs;
        for (const auto& mi : f.images) {
            ptrs.push_back(&mi);
        }
        const StackControl mean = regionCtrl(Statistic::Mean);
        const StackControl clip = regionCtrl(Statistic::MeanClip);
        const Box region{-5, 3, 30, 20};  // the inputs' common box (blocks of 64 are covered end to end)
        MaskedImage a1(region);
        MaskedImage b1(region);
        const StackResult ra = stackRegion(ptrs, f.weights, mean, region, a1);
        const StackResult rb = stackRegion(ptrs, f.weights, clip, region, b1);
        MaskedImage a2(region);
        MaskedImage b2(region);
        const auto [pa, pb] = stackRegionPair(ptrs, f.weights, mean, clip, region, a2, b2);
        expectBitwiseEqual(a1, a2, region);
        expectBitwiseEqual(b1, b2, region);
        EXPECT_EQ(pa.nClippedPixels, ra.nClippedPixels);
        EXPECT_EQ(pb.nClippedPixels, rb.nClippedPixels);
        EXPECT_EQ(pb.nNoData, rb.nNoData);
        EXPECT_EQ(pb.nPixels, region.area());
        // and stackRegion still equals the scalar stackPixel at every pixel
        StackScratch scratch;
        std::vector<float> x(n);
        std::vector<MaskPixel> m(n);
        std::vector<float> v(n);
        for (int yy = region.y0; yy < region.y1(); ++yy) {
            for (int xx = region.x0; xx < region.x1(); ++xx) {
                for (std::size_t i = 0; i < n; ++i) {
                    x[i] = ptrs[i]->image(xx, yy);
                    m[i] = ptrs[i]->mask(xx, yy);
                    v[i] = ptrs[i]->variance(xx, yy);
                }
                const PixelResult r = stackPixel(x, m, v, f.weights, clip, scratch);
                ASSERT_EQ(bitsOf(b2.image(xx, yy)), bitsOf(static_cast<float>(r.value))) << n << " " << xx;
                ASSERT_EQ(bitsOf(b2.variance(xx, yy)), bitsOf(static_cast<float>(r.variance)));
                ASSERT_EQ(b2.mask(xx, yy), r.mask);
            }
        }
    }
}

namespace {
/// The straightforward sequential MEANCLIP of the sample (reference for meanClipUnweighted).
double meanClipReference(std::vector<float> values, double sigmaClip, int clipIter) {
    const std::size_t n = values.size();
    auto pct = [&](double q) {
        const double idx = q * static_cast<double>(n - 1);
        const auto q1 = static_cast<std::size_t>(idx);
        std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(q1), values.end());
        const double lo = values[q1];
        if (q1 + 1 >= n) {
            return lo;
        }
        std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(q1 + 1), values.end());
        const double hi = values[q1 + 1];
        return (static_cast<double>(q1 + 1) - idx) * lo + (idx - static_cast<double>(q1)) * hi;
    };
    std::vector<float> copy = values;
    const double med = pct(0.5);
    const double h0 = sigmaClip * 0.741301109252802 * (pct(0.75) - pct(0.25));
    double mean = med;
    double var = 0;
    for (int k = 0; k < clipIter; ++k) {
        const double c = k == 0 ? med : mean;
        const double h = k == 0 ? h0 : sigmaClip * std::sqrt(var);
        double sw = 0;
        double sx = 0;
        for (float xv : copy) {
            if (std::abs(static_cast<double>(xv) - c) <= h) {
                sw += 1.0;
                sx += xv;
            }
        }
        mean = sx / sw;
        double sd = 0;
        for (float xv : copy) {
            if (std::abs(static_cast<double>(xv) - c) <= h) {
                sd += (xv - mean) * (xv - mean);
            }
        }
        var = (sd / sw) * sw * sw / (sw * sw - sw);
    }
    return mean;
}
}  // namespace

TEST(Stack, MeanClipUnweightedExactAndSequentialSums) {
    std::mt19937 rng(5);
    std::normal_distribution<float> g(40.0F, 3.0F);
    // Sums that are exact in any order (the vectorised path) and ones that are not (a value with a
    // tiny ulp next to large ones forces the sequential path): both must equal the plain loop. The
    // sample order differs from the reference's, so compare the value, which is order-free here
    // for the mean (exact sums) and within rounding otherwise.
    for (const bool tiny : {false, true}) {
        std::vector<float> v(100003);
        for (float& x : v) {
            x = g(rng);
        }
        v[17] = 40.0F;
        if (tiny) {
            v[5] = 1e-30F;
            v[6] = 3e8F;
        }
        const double ref = meanClipReference(v, 1.5, 3);
        std::vector<float> work = v;
        const double got = meanClipUnweighted(work, 1.5, 3);
        EXPECT_NEAR(got, ref, 1e-12 * std::abs(ref)) << tiny;
    }
}

}  // namespace
}  // namespace safeclip::kernel
