/// @file test_PsfMoments.cpp  The detection σ of spec §0.3/§6.1.2: the adaptive-moment (SdssShape)
/// determinant radius of a weighted circular Gaussian mixture.
///
/// How the expected values were derived. With the weight W = exp(-r²/2t), component i (normalised
/// Gaussian of variance a_i = σ_i²) has ∫N_i W ∝ w_i/(a_i + t) and weighted moment a_i t/(a_i + t)
/// per axis. SdssShape stops where its update t <- (M⁻¹ − t⁻¹)⁻¹ is stationary, i.e. M(t) = t/2,
/// and reports xx = yy = t, so σ = √t. M(t) = t/2 reduces to  Σ w_i (t − a_i)/(a_i + t)² = 0,
/// which was solved by bisection with 40-digit decimals (Python `decimal`):
///   σ = 1, 1, 2.6, 2.6, equal weights -> t = 1.477905..., σ = 1.2156913703840206635567
///     (the issue's "upstream ≈ 1.216-1.22"; the weighted mean of the σ's is 1.80)
///   σ = 1, 2.6, weights 3, 1          -> σ = 1.0664310312230662198676
///   σ = 1.5, 2, 3, weights .2, .5, .3 -> σ = 1.9984068084397126933310
/// One Gaussian: t = 2·a t/(a + t) gives t = a, so σ is returned exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/PsfMoments.h"

namespace safeclip::kernel {
namespace {

double radius(const std::vector<double>& s, const std::vector<double>& w) {
    return mixtureDeterminantRadius(s, w);
}

/// M(t)/t·2 − 1, computed directly from the moment integrals (independent of the implementation's
/// residual form): zero at the adaptive fixed point.
double fixedPointDefect(const std::vector<double>& s, const std::vector<double>& w, double sigma) {
    const double t = sigma * sigma;
    double num = 0;
    double den = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const double a = s[i] * s[i];
        num += w[i] / (a + t) * (a * t / (a + t));
        den += w[i] / (a + t);
    }
    return 2 * (num / den) / t - 1;
}

TEST(PsfMoments, SingleGaussianIsItsOwnSigmaExactly) {
    EXPECT_EQ(radius({1.7}, {1.0}), 1.7);
    EXPECT_EQ(radius({2.6}, {0.25}), 2.6);
    // Equal σ's with any weights are one Gaussian.
    EXPECT_EQ(radius({1.3, 1.3, 1.3}, {0.1, 5.0, 2.0}), 1.3);
    // A zero-weight component contributes nothing.
    EXPECT_EQ(radius({1.0, 5.0}, {1.0, 0.0}), 1.0);
}

TEST(PsfMoments, IssueTwelveMixture) {
    const double s = radius({1.0, 1.0, 2.6, 2.6}, {1.0, 1.0, 1.0, 1.0});
    EXPECT_NEAR(s, 1.2156913703840206, 1e-9);
    EXPECT_NEAR(fixedPointDefect({1.0, 1.0, 2.6, 2.6}, {1, 1, 1, 1}, s), 0.0, 1e-10);
    // Well below the weighted mean of the σ's (1.80), which the old detection stage used.
    EXPECT_LT(s, 1.8 - 0.5);
}

TEST(PsfMoments, OtherMixtures) {
    EXPECT_NEAR(radius({1.0, 2.6}, {3.0, 1.0}), 1.0664310312230662, 1e-9);
    EXPECT_NEAR(radius({1.5, 2.0, 3.0}, {0.2, 0.5, 0.3}), 1.9984068084397127, 1e-9);
    // Only the relative weights matter.
    EXPECT_NEAR(radius({1.0, 2.6}, {3.0, 1.0}), radius({1.0, 2.6}, {0.75, 0.25}), 1e-12);
}

TEST(PsfMoments, LiesBetweenTheSmallestAndLargestSigma) {
    // The tile halo is sized from the largest header σ (pipeline::haloSigma), so the detection σ
    // must never exceed it.
    const std::vector<std::vector<double>> cases = {
        {0.8, 3.5}, {1.0, 1.0, 2.6, 2.6}, {0.5, 9.5, 4.0}, {2.0, 2.1}, {0.3, 10.0, 0.4, 8.0}};
    for (const auto& s : cases) {
        std::vector<double> w;
        for (std::size_t i = 0; i < s.size(); ++i) {
            w.push_back(1.0 + static_cast<double>(i));
        }
        const double r = radius(s, w);
        double lo = s[0];
        double hi = s[0];
        for (const double x : s) {
            lo = std::min(lo, x);
            hi = std::max(hi, x);
        }
        EXPECT_GE(r, lo);
        EXPECT_LE(r, hi);
        EXPECT_NEAR(fixedPointDefect(s, w, r), 0.0, 1e-8);
    }
}

TEST(PsfMoments, RejectsInvalidInput) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    EXPECT_THROW(radius({}, {}), InvalidParameter);
    EXPECT_THROW(radius({1.0}, {1.0, 2.0}), InvalidParameter);
    EXPECT_THROW(radius({0.0}, {1.0}), InvalidParameter);
    EXPECT_THROW(radius({nan}, {1.0}), InvalidParameter);
    EXPECT_THROW(radius({1.0}, {-1.0}), InvalidParameter);
    EXPECT_THROW(radius({1.0, 2.0}, {0.0, 0.0}), InvalidParameter);
}

}  // namespace
}  // namespace safeclip::kernel
