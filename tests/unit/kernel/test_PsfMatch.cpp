/// @file test_PsfMatch.cpp  Gaussian PSF matching (PsfMatch.h): kernel width and taps, moments of a
/// matched star, flux, variance propagation, mask growth, no-data propagation, tiling.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/PsfMatch.h"

namespace safeclip::kernel {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr MaskPixel kNoData = 1 << 8;
constexpr MaskPixel kBad = 1 << 0;
constexpr MaskPixel kDetected = 1 << 5;

MaskedImage constantImage(const Box& box, float img, float var) {
    MaskedImage mi(box);
    mi.image.fill(img);
    mi.variance.fill(var);
    mi.mask.fill(0);
    return mi;
}

MaskedImage subImage(const MaskedImage& in, const Box& box) {
    MaskedImage out(box);
    for (int y = box.y0; y < box.y1(); ++y) {
        for (int x = box.x0; x < box.x1(); ++x) {
            out.image(x, y) = in.image(x, y);
            out.mask(x, y) = in.mask(x, y);
            out.variance(x, y) = in.variance(x, y);
        }
    }
    return out;
}

TEST(PsfMatch, KernelSigmaAndErrors) {
    EXPECT_DOUBLE_EQ(matchingKernelSigma(1.5, 2.5), 2.0);  // sqrt(6.25 - 2.25)
    EXPECT_EQ(matchingKernelSigma(2.0, 2.0), 0.0);
    EXPECT_THROW((void)matchingKernelSigma(2.5, 2.0), InvalidParameter);  // would deconvolve
    EXPECT_THROW((void)matchingKernelSigma(0.0, 2.0), InvalidParameter);
    EXPECT_THROW((void)matchingKernelSigma(1.0, kNaN), InvalidParameter);
    PsfMatchControl bad;
    bad.maxHalfWidth = -1;
    EXPECT_THROW((void)gaussianMatchingKernel(1.0, 2.0, bad), InvalidParameter);
}

TEST(PsfMatch, KernelTapsAreNormalisedSymmetricAndMomentMatched) {
    // Half-width min(10, ceil(4σ_k)); taps sum to 1, are symmetric and have second moment σ_k²
    // (the moment-matching of PsfMatch.h step 3).
    struct Case {
        double sk;
        int r;
    };
    for (const Case c :
         {Case{0.3, 2}, Case{0.7, 3}, Case{1.0, 4}, Case{2.0, 8}, Case{2.5, 10}, Case{3.5, 10}}) {
        const double si = 1.0;
        const MatchingKernel k = gaussianMatchingKernel(si, std::sqrt(si * si + c.sk * c.sk));
        EXPECT_NEAR(k.sigma, c.sk, 1e-12);
        ASSERT_EQ(k.halfWidth, c.r) << c.sk;
        ASSERT_EQ(k.taps.size(), static_cast<std::size_t>(2 * c.r + 1));
        double sum = 0.0;
        double m2 = 0.0;
        for (int t = -c.r; t <= c.r; ++t) {
            const double g = k.taps[static_cast<std::size_t>(t + c.r)];
            EXPECT_GT(g, 0.0);
            EXPECT_EQ(g, k.taps[static_cast<std::size_t>(c.r - t)]);
            sum += g;
            m2 += t * t * g;
        }
        EXPECT_NEAR(sum, 1.0, 1e-14);
        EXPECT_NEAR(m2, c.sk * c.sk, 1e-12 * (1.0 + c.sk * c.sk)) << c.sk;
        EXPECT_NEAR(k.secondMoment, m2, 1e-12);
    }
    // Unreachable: σ_k = 8 with r capped at 10 (a flat kernel has only r(r+1)/3 = 36.7 < 64):
    // the taps use s = σ_k and the achieved moment is reported, smaller than σ_k².
    const MatchingKernel capped = gaussianMatchingKernel(1.0, std::sqrt(65.0));
    EXPECT_EQ(capped.halfWidth, 10);
    EXPECT_DOUBLE_EQ(capped.tapSigma, 8.0);
    EXPECT_LT(capped.secondMoment, 36.7);
}

TEST(PsfMatch, IdentityKernelCopiesTheInputBitForBit) {
    const Box box{5, 7, 20, 16};
    MaskedImage mi = constantImage(box, 0.0F, 1.0F);
    std::mt19937 rng(3);
    std::normal_distribution<float> n(0.0F, 3.0F);
    for (float& v : mi.image.data()) {
        v = n(rng);
    }
    mi.mask(10, 10) = kDetected;
    mi.mask(12, 12) = kNoData;  // finite value but no data: becomes NaN (rule applies at r = 0)
    const MatchingKernel k = gaussianMatchingKernel(1.7, 1.7);
    ASSERT_EQ(k.halfWidth, 0);
    const MaskedImage out = psfMatchGaussian(mi, k, kNoData, kNoData);
    ASSERT_EQ(out.box(), box);
    for (int y = box.y0; y < box.y1(); ++y) {
        for (int x = box.x0; x < box.x1(); ++x) {
            EXPECT_EQ(out.mask(x, y), mi.mask(x, y));
            if (x == 12 && y == 12) {
                EXPECT_TRUE(std::isnan(out.image(x, y)));
                EXPECT_TRUE(std::isnan(out.variance(x, y)));
            } else {
                EXPECT_EQ(std::bit_cast<std::uint32_t>(out.image(x, y)),
                          std::bit_cast<std::uint32_t>(mi.image(x, y)));
                EXPECT_EQ(out.variance(x, y), mi.variance(x, y));
            }
        }
    }
}

TEST(PsfMatch, MatchedStarHasTheModelSecondMomentAndTheSameFlux) {
    // A Gaussian star of σ_i = 1.5 sampled at pixel centres has discrete second moment σ_i² (the
    // Poisson-summation correction is ~exp(-2π²σ²) ≈ 1e-19); moments of a discrete convolution add,
    // so the matched star's moment is σ_i² + Σt²g(t) = σ_i² + σ_k² = σ_m² = 6.25, up to float
    // rounding of the pixel values (relative ~1e-7) and the star's truncation at the box edge
    // (> 25σ away). Flux: Σ g = 1 per axis, so Σ out = Σ in to float rounding. Tolerances 1e-4.
    // Without moment matching (taps sampled at σ_k = 2, truncated at 4σ) the moment would be
    // 6.2486 (measured by disabling the matching): outside the tolerance.
    const Box box{0, 0, 81, 81};
    const double si = 1.5;
    const double sm = 2.5;
    const double cx = 40.0;
    const double cy = 40.0;
    MaskedImage mi = constantImage(box, 0.0F, 1.0F);
    double fluxIn = 0.0;
    for (int y = 0; y < 81; ++y) {
        for (int x = 0; x < 81; ++x) {
            const double d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
            mi.image(x, y) =
                static_cast<float>(1000.0 * std::exp(-d2 / (2 * si * si)) / (2 * M_PI * si * si));
            fluxIn += mi.image(x, y);
        }
    }
    const MatchingKernel k = gaussianMatchingKernel(si, sm);
    ASSERT_EQ(k.halfWidth, 8);
    const MaskedImage out = psfMatchGaussian(mi, k, kNoData, kNoData);
    ASSERT_EQ(out.box(), box.grown(-8));
    double f = 0.0;
    double mx = 0.0;
    double my = 0.0;
    for (int y = out.box().y0; y < out.box().y1(); ++y) {
        for (int x = out.box().x0; x < out.box().x1(); ++x) {
            f += out.image(x, y);
            mx += x * static_cast<double>(out.image(x, y));
            my += y * static_cast<double>(out.image(x, y));
        }
    }
    mx /= f;
    my /= f;
    double ixx = 0.0;
    double iyy = 0.0;
    double ixy = 0.0;
    for (int y = out.box().y0; y < out.box().y1(); ++y) {
        for (int x = out.box().x0; x < out.box().x1(); ++x) {
            const double v = out.image(x, y);
            ixx += (x - mx) * (x - mx) * v;
            iyy += (y - my) * (y - my) * v;
            ixy += (x - mx) * (y - my) * v;
        }
    }
    ixx /= f;
    iyy /= f;
    ixy /= f;
    EXPECT_NEAR(f / fluxIn, 1.0, 1e-5);
    EXPECT_NEAR(mx, cx, 1e-5);
    EXPECT_NEAR(my, cy, 1e-5);
    EXPECT_NEAR(ixx, sm * sm, 1e-4);
    EXPECT_NEAR(iyy, sm * sm, 1e-4);
    EXPECT_NEAR(ixy, 0.0, 1e-5);
}

TEST(PsfMatch, VarianceIsConvolvedWithTheSquaredKernel) {
    // White noise N(0, 1) with a variance plane of 1: the output plane is Σk² = (Σg²)² at every
    // pixel (exactly, to float rounding), and the output image's sample variance agrees with it:
    // σ_k = 1, Σk² ≈ 1/(4π σ_k²) ≈ 0.08; the 240² output pixels are correlated over ~4πσ_k² ≈ 13
    // pixels, so ~4500 independent ones: the sample variance has a relative error ~sqrt(2/4500) =
    // 2 %; tolerance 6 % (3σ). Convolving the variance with k instead of k² would give 1.
    const Box box{0, 0, 256, 256};
    MaskedImage mi = constantImage(box, 0.0F, 1.0F);
    std::mt19937 rng(17);
    std::normal_distribution<double> n(0.0, 1.0);
    for (float& v : mi.image.data()) {
        v = static_cast<float>(n(rng));
    }
    const MatchingKernel k = gaussianMatchingKernel(1.0, std::sqrt(2.0));
    double sg2 = 0.0;
    for (double g : k.taps) {
        sg2 += g * g;
    }
    const double sk2 = sg2 * sg2;
    const MaskedImage out = psfMatchGaussian(mi, k, kNoData, kNoData);
    double s = 0.0;
    double ss = 0.0;
    std::int64_t cnt = 0;
    for (int y = out.box().y0; y < out.box().y1(); ++y) {
        for (int x = out.box().x0; x < out.box().x1(); ++x) {
            ASSERT_NEAR(out.variance(x, y), sk2, 1e-6 * sk2);
            s += out.image(x, y);
            ss += static_cast<double>(out.image(x, y)) * out.image(x, y);
            ++cnt;
        }
    }
    const double mean = s / static_cast<double>(cnt);
    const double var = ss / static_cast<double>(cnt) - mean * mean;
    EXPECT_NEAR(var / sk2, 1.0, 0.06);
}

TEST(PsfMatch, MaskBitsGrowByExactlyTheKernelHalfWidth) {
    // σ_k = 2 → r = 8: a DETECTED pixel at (30, 30) sets DETECTED on the square |dx|, |dy| <= 8 and
    // nowhere else; a non-no-data bit does not change the image. A NO_DATA pixel (finite value)
    // at (12, 40) makes its square NaN (image and variance) with NO_DATA, and only that square.
    const Box box{0, 0, 64, 64};
    MaskedImage mi = constantImage(box, 5.0F, 2.0F);
    mi.mask(30, 30) = kDetected;
    mi.mask(12, 40) = kNoData | kBad;
    const MatchingKernel k = gaussianMatchingKernel(1.0, std::sqrt(5.0));
    ASSERT_EQ(k.halfWidth, 8);
    const MaskedImage out = psfMatchGaussian(mi, k, kNoData, kNoData);
    ASSERT_EQ(out.box(), box.grown(-8));
    for (int y = out.box().y0; y < out.box().y1(); ++y) {
        for (int x = out.box().x0; x < out.box().x1(); ++x) {
            const bool nearDet = std::abs(x - 30) <= 8 && std::abs(y - 30) <= 8;
            const bool nearNoData = std::abs(x - 12) <= 8 && std::abs(y - 40) <= 8;
            const MaskPixel expected = (nearDet ? kDetected : 0) | (nearNoData ? (kNoData | kBad) : 0);
            ASSERT_EQ(out.mask(x, y), expected) << x << "," << y;
            if (nearNoData) {
                ASSERT_TRUE(std::isnan(out.image(x, y)));
                ASSERT_TRUE(std::isnan(out.variance(x, y)));
            } else {
                // A constant convolved with a normalised kernel: 5 and 2·Σk² to float rounding.
                ASSERT_NEAR(out.image(x, y), 5.0F, 1e-5F);
                ASSERT_TRUE(std::isfinite(out.variance(x, y)));
            }
        }
    }
}

TEST(PsfMatch, NonFiniteInputsPoisonTheirKernelSupport) {
    // A NaN image pixel (no mask bit) and an infinite variance pixel: every output pixel within
    // Chebyshev distance r of either is NaN in image and variance and gets noDataBit; none else.
    const Box box{0, 0, 50, 50};
    MaskedImage mi = constantImage(box, 1.0F, 1.0F);
    mi.image(20, 22) = kNaN;
    mi.variance(35, 30) = std::numeric_limits<float>::infinity();
    const MatchingKernel k = gaussianMatchingKernel(1.0, std::sqrt(1.0 + 0.7 * 0.7));
    ASSERT_EQ(k.halfWidth, 3);
    const MaskedImage out = psfMatchGaussian(mi, k, kNoData, kNoData);
    for (int y = out.box().y0; y < out.box().y1(); ++y) {
        for (int x = out.box().x0; x < out.box().x1(); ++x) {
            const bool bad = (std::abs(x - 20) <= 3 && std::abs(y - 22) <= 3) ||
                             (std::abs(x - 35) <= 3 && std::abs(y - 30) <= 3);
            ASSERT_EQ(std::isnan(out.image(x, y)), bad) << x << "," << y;
            ASSERT_EQ(std::isnan(out.variance(x, y)), bad);
            ASSERT_EQ(out.mask(x, y), bad ? kNoData : 0);
        }
    }
    // noDataBit 0: the values are still NaN, no bit is set.
    const MaskedImage noBit = psfMatchGaussian(mi, k, kNoData, 0);
    EXPECT_TRUE(std::isnan(noBit.image(20, 22)));
    EXPECT_EQ(noBit.mask(20, 22), 0);
}

TEST(PsfMatch, TilesWithAHaloReproduceTheWholeImageBitForBit) {
    // Each output pixel depends only on the input pixels of its support, in a fixed order: tiles
    // computed from tile.grown(r) give the same bits as the whole image.
    const Box box{100, 200, 97, 83};
    MaskedImage mi(box);
    std::mt19937 rng(5);
    std::normal_distribution<float> n(10.0F, 4.0F);
    std::uniform_real_distribution<float> u(0.5F, 2.0F);
    std::uniform_int_distribution<int> bits(0, 40);
    for (int y = box.y0; y < box.y1(); ++y) {
        for (int x = box.x0; x < box.x1(); ++x) {
            mi.image(x, y) = n(rng);
            mi.variance(x, y) = u(rng);
            const int b = bits(rng);
            mi.mask(x, y) = b < 3 ? (1 << b) : 0;
        }
    }
    mi.image(150, 240) = kNaN;
    mi.mask(170, 260) = kNoData;
    const MatchingKernel k = gaussianMatchingKernel(1.2, 2.3);
    const int r = k.halfWidth;
    ASSERT_EQ(r, 8);
    const MaskedImage whole = psfMatchGaussian(mi, k, kNoData, kNoData);
    const Box valid = box.grown(-r);
    ASSERT_EQ(whole.box(), valid);
    int checked = 0;
    for (int ty = valid.y0; ty < valid.y1(); ty += 23) {
        for (int tx = valid.x0; tx < valid.x1(); tx += 29) {
            const Box tile = Box{tx, ty, 29, 23}.intersect(valid);
            const MaskedImage part = psfMatchGaussian(subImage(mi, tile.grown(r)), tile, k, kNoData, kNoData);
            ASSERT_EQ(part.box(), tile);
            for (int y = tile.y0; y < tile.y1(); ++y) {
                for (int x = tile.x0; x < tile.x1(); ++x) {
                    ASSERT_EQ(std::bit_cast<std::uint32_t>(part.image(x, y)),
                              std::bit_cast<std::uint32_t>(whole.image(x, y)));
                    ASSERT_EQ(std::bit_cast<std::uint32_t>(part.variance(x, y)),
                              std::bit_cast<std::uint32_t>(whole.variance(x, y)));
                    ASSERT_EQ(part.mask(x, y), whole.mask(x, y));
                    ++checked;
                }
            }
        }
    }
    EXPECT_EQ(checked, valid.area());
}

TEST(PsfMatch, OutputBoxMustLieInsideTheValidRegion) {
    const Box box{0, 0, 30, 30};
    const MaskedImage mi = constantImage(box, 1.0F, 1.0F);
    const MatchingKernel k = gaussianMatchingKernel(1.0, std::sqrt(2.0));  // r 4
    EXPECT_NO_THROW((void)psfMatchGaussian(mi, Box{4, 4, 22, 22}, k, kNoData, kNoData));
    EXPECT_THROW((void)psfMatchGaussian(mi, Box{3, 4, 22, 22}, k, kNoData, kNoData), InvalidParameter);
    EXPECT_THROW((void)psfMatchGaussian(mi, Box{4, 4, 23, 22}, k, kNoData, kNoData), InvalidParameter);
    // Too small for any valid pixel: an empty result.
    const MaskedImage tiny = constantImage(Box{0, 0, 8, 30}, 1.0F, 1.0F);
    EXPECT_TRUE(psfMatchGaussian(tiny, k, kNoData, kNoData).box().empty());
}

}  // namespace
}  // namespace safeclip::kernel
