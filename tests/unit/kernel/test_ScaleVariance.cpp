/// @file test_ScaleVariance.cpp  ScaleVarianceTask's factor (ScaleVariance.h): mis-scaled variance
/// plane, background removal, masked pixels, the image-based fallback and the failure status.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/ScaleVariance.h"

namespace safeclip::kernel {
namespace {

constexpr MaskPixel kDetected = 1 << 5;
constexpr MaskPixel kNoData = 1 << 8;
constexpr MaskPixel kIgnore =
    0x1 | 0x2 | 0x4 | (1 << 5) | (1 << 6) | (1 << 8);  // BAD SAT INTRP DET DETNEG NO_DATA

/// (0.74 * IQR of N(0,1))² = (0.74 * 1.3489795)² = 0.996493: the estimator's value for a unit normal.
constexpr double kUnitFactor = 0.9964927412011121;

MaskedImage noiseImage(const Box& box, double sigma, float planeVar, unsigned seed) {
    MaskedImage mi(box);
    std::mt19937 rng(seed);
    std::normal_distribution<double> n(0.0, sigma);
    for (float& v : mi.image.data()) {
        v = static_cast<float>(n(rng));
    }
    mi.variance.fill(planeVar);
    mi.mask.fill(0);
    return mi;
}

/// Independent reference quantile: sort, linear interpolation at q(n-1) (numpy's default).
double refQuantile(std::vector<double> v, double q) {
    std::sort(v.begin(), v.end());
    const double pos = q * static_cast<double>(v.size() - 1);
    const auto lo = static_cast<std::size_t>(std::floor(pos));
    const std::size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

/// Both estimators recomputed from fitBackground with std::sort (independent of sampleQuantiles).
struct RefFactors {
    double pixel;
    double image;
};
RefFactors reference(const MaskedImage& mi, MaskPixel ignore) {
    const ImageF bg = fitBackground(mi.image, mi.mask, ignore);
    std::vector<double> snr;
    std::vector<double> res;
    std::vector<double> var;
    for (int y = mi.box().y0; y < mi.box().y1(); ++y) {
        for (int x = mi.box().x0; x < mi.box().x1(); ++x) {
            const float i = mi.image(x, y);
            const float v = mi.variance(x, y);
            if ((mi.mask(x, y) & ignore) == 0 && std::isfinite(i) && std::isfinite(v) && v > 0) {
                const float r = i - bg(x, y);
                res.push_back(r);
                snr.push_back(static_cast<float>(r / std::sqrt(static_cast<double>(v))));
                var.push_back(v);
            }
        }
    }
    const double sp = 0.74 * (refQuantile(snr, 0.75) - refQuantile(snr, 0.25));
    const double si =
        0.74 * (refQuantile(res, 0.75) - refQuantile(res, 0.25)) / std::sqrt(refQuantile(var, 0.5));
    return RefFactors{sp * sp, si * si};
}

TEST(ScaleVariance, MisScaledVariancePlaneGivesTheTrueRatio) {
    // True noise variance 4, plane says 1: factor = 4 * kUnitFactor = 3.986. The IQR-based σ of
    // 65536 normal values has a relative sd of ~1.17/sqrt(N) = 0.46 %, so the factor ~0.9 %;
    // tolerance 3 % (> 3σ, plus the small extra scatter of the fitted background).
    const MaskedImage mi = noiseImage(Box{0, 0, 256, 256}, 2.0, 1.0F, 7);
    const ScaleVarianceResult r = scaleVarianceFactor(mi, kIgnore);
    EXPECT_TRUE(r.ok);
    EXPECT_EQ(r.method, ScaleVarianceMethod::PixelBased);
    EXPECT_EQ(r.nGood, 256 * 256);
    EXPECT_NEAR(r.factor / (4.0 * kUnitFactor), 1.0, 0.03);
    EXPECT_EQ(r.factor, r.pixelFactor);
    EXPECT_TRUE(std::isnan(r.imageFactor));
    // Exactly the quartile convention of the reference (numpy percentile / afw), not just close.
    EXPECT_NEAR(r.pixelFactor, reference(mi, kIgnore).pixel, 1e-12 * r.pixelFactor);
    // A correct variance plane gives ~1.
    const ScaleVarianceResult ok =
        scaleVarianceFactor(noiseImage(Box{0, 0, 256, 256}, 2.0, 4.0F, 7), kIgnore);
    EXPECT_NEAR(ok.factor / kUnitFactor, 1.0, 0.03);
}

TEST(ScaleVariance, BackgroundOfAPlaneIsReproducedAndRemoved) {
    // A noiseless plane 100 + 0.5x + 0.3y: in every cell the values are symmetric about the cell
    // centre's value, so MEANCLIP returns it exactly (to rounding); bilinear interpolation and linear
    // extrapolation through cell centres reproduce a plane exactly: fitBackground == the plane.
    const Box box{10, 20, 200, 150};
    MaskedImage plane(box);
    for (int y = box.y0; y < box.y1(); ++y) {
        for (int x = box.x0; x < box.x1(); ++x) {
            plane.image(x, y) = static_cast<float>(100.0 + 0.5 * (x - box.x0) + 0.3 * (y - box.y0));
        }
    }
    plane.mask.fill(0);
    const ImageF bg = fitBackground(plane.image, plane.mask, kIgnore);
    for (int y = box.y0; y < box.y1(); ++y) {
        for (int x = box.x0; x < box.x1(); ++x) {
            ASSERT_NEAR(bg(x, y), plane.image(x, y), 2e-4) << x << "," << y;
        }
    }
    // The same plane (amplitude 175, i.e. 87σ) added to noise of σ 2 with a plane variance of 1:
    // without background subtraction the IQR would be dominated by the ramp (factor ~ thousands);
    // with it the factor is again 4 * kUnitFactor within 3 %.
    MaskedImage mi = noiseImage(box, 2.0, 1.0F, 9);
    for (int y = box.y0; y < box.y1(); ++y) {
        for (int x = box.x0; x < box.x1(); ++x) {
            mi.image(x, y) += plane.image(x, y);
        }
    }
    const ScaleVarianceResult r = scaleVarianceFactor(mi, kIgnore);
    EXPECT_EQ(r.method, ScaleVarianceMethod::PixelBased);
    EXPECT_NEAR(r.factor / (4.0 * kUnitFactor), 1.0, 0.03);
}

TEST(ScaleVariance, IgnoredPixelsNeverEnter) {
    // Bright sources flagged DETECTED and a NO_DATA patch of NaNs: the result is bit-identical to
    // the same image where those pixels hold other values, since neither the background cells nor
    // the quartiles may read them.
    const Box box{0, 0, 128, 96};
    MaskedImage a = noiseImage(box, 1.5, 1.0F, 21);
    MaskedImage b = a;
    for (int y = 30; y < 50; ++y) {
        for (int x = 40; x < 70; ++x) {
            a.mask(x, y) = b.mask(x, y) = kDetected;
            a.image(x, y) = 0.0F;
            b.image(x, y) = 5000.0F;
        }
    }
    for (int y = 70; y < 80; ++y) {
        for (int x = 0; x < 128; ++x) {
            a.mask(x, y) = b.mask(x, y) = kNoData;
            b.image(x, y) = std::numeric_limits<float>::quiet_NaN();
            b.variance(x, y) = std::numeric_limits<float>::quiet_NaN();
        }
    }
    const ScaleVarianceResult ra = scaleVarianceFactor(a, kIgnore);
    const ScaleVarianceResult rb = scaleVarianceFactor(b, kIgnore);
    EXPECT_EQ(ra.nGood, 128 * 96 - 20 * 30 - 10 * 128);
    EXPECT_EQ(ra.nGood, rb.nGood);
    EXPECT_EQ(ra.factor, rb.factor);
    // And the mask matters: not ignoring DETECTED lets the 5000s in (600 of ~10400 good pixels,
    // above Q3): the factor moves.
    const ScaleVarianceResult rc = scaleVarianceFactor(b, kIgnore & ~kDetected);
    EXPECT_NE(rc.factor, rb.factor);
}

TEST(ScaleVariance, ImageBasedFallbackWhenThePixelEstimateExceedsTheLimit) {
    // 70 % of the pixels: noise σ 1, plane variance 1. 30 % (x % 10 >= 7): a constant +3 with a
    // plane variance 0.0036 (snr 50), "structure" a pixel-based estimate cannot handle. The snr Q3
    // lies in the +50 group, so the pixel factor is ~(0.74*50)² >> 10; the image estimate sees
    // residuals whose Q3 is ~3 over sqrt(median variance = 1): ~(0.74*3.4)² ≈ 6 <= 10. The
    // expected values are recomputed by the reference (sort-based quantiles).
    const Box box{0, 0, 200, 160};
    MaskedImage mi = noiseImage(box, 1.0, 1.0F, 33);
    for (int y = box.y0; y < box.y1(); ++y) {
        for (int x = box.x0; x < box.x1(); ++x) {
            if (x % 10 >= 7) {
                mi.image(x, y) = 3.0F;
                mi.variance(x, y) = 0.0036F;
            }
        }
    }
    const ScaleVarianceResult r = scaleVarianceFactor(mi, kIgnore);
    const RefFactors ref = reference(mi, kIgnore);
    EXPECT_GT(r.pixelFactor, 10.0);
    EXPECT_NEAR(r.pixelFactor, ref.pixel, 1e-9 * ref.pixel);
    EXPECT_EQ(r.method, ScaleVarianceMethod::ImageBased);
    EXPECT_TRUE(r.ok);
    EXPECT_LE(r.imageFactor, 10.0);
    EXPECT_GT(r.imageFactor, 1.0);
    EXPECT_NEAR(r.imageFactor, ref.image, 1e-9 * ref.image);
    EXPECT_EQ(r.factor, r.imageFactor);
}

TEST(ScaleVariance, BothEstimatesOverTheLimitIsAFailure) {
    // True σ 1, plane 0.01 everywhere: both estimates ≈ 100 * kUnitFactor > 10: upstream raises;
    // here ok = false and factor 1 (variance left as is). A larger limit accepts the pixel estimate.
    const MaskedImage mi = noiseImage(Box{0, 0, 128, 128}, 1.0, 0.01F, 41);
    const ScaleVarianceResult r = scaleVarianceFactor(mi, kIgnore);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.method, ScaleVarianceMethod::Failed);
    EXPECT_EQ(r.factor, 1.0);
    EXPECT_NEAR(r.pixelFactor / (100.0 * kUnitFactor), 1.0, 0.05);
    EXPECT_NEAR(r.imageFactor / (100.0 * kUnitFactor), 1.0, 0.05);
    ScaleVarianceControl loose;
    loose.limit = 1000.0;
    const ScaleVarianceResult l = scaleVarianceFactor(mi, kIgnore, loose);
    EXPECT_TRUE(l.ok);
    EXPECT_EQ(l.method, ScaleVarianceMethod::PixelBased);
    EXPECT_EQ(l.factor, r.pixelFactor);
}

TEST(ScaleVariance, FewerThanTwoGoodPixelsGivesOne) {
    MaskedImage mi = noiseImage(Box{0, 0, 40, 40}, 3.0, 1.0F, 1);
    mi.mask.fill(kNoData);
    mi.mask(3, 3) = 0;
    const ScaleVarianceResult r = scaleVarianceFactor(mi, kIgnore);
    EXPECT_EQ(r.method, ScaleVarianceMethod::NotEnoughData);
    EXPECT_EQ(r.factor, 1.0);
    EXPECT_EQ(r.nGood, 1);
    // Non-positive variance is not good either.
    MaskedImage z = noiseImage(Box{0, 0, 40, 40}, 3.0, 0.0F, 1);
    EXPECT_EQ(scaleVarianceFactor(z, kIgnore).nGood, 0);
    ScaleVarianceControl bad;
    bad.binSize = 0;
    EXPECT_THROW((void)scaleVarianceFactor(mi, kIgnore, bad), InvalidParameter);
}

}  // namespace
}  // namespace safeclip::kernel
