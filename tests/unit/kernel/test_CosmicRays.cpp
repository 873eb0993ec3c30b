/// @file test_CosmicRays.cpp  Single-frame CR detection and repair (meas_algorithms findCosmicRays,
/// src/CR.cc). Each test states how its expected values follow from upstream's conditions; the
/// numbers used throughout, for the defaults and the sharpest simulator PSF (σ = 1.3 px,
/// src/app/Simulator.cpp draws psfSigma from uniform(1.3, 2.2)):
///   thresH = thresV = 0.6·exp(-1/(2·1.3²)) = 0.44635, thresD = 0.6·exp(-1/1.3²) = 0.33204;
///   for a pixel of excess a·σ over a flat background with σ everywhere, condition 3 reads
///   0.44635·(a - 2.5)·σ > 2.5·σ/√2 = 1.768σ, i.e. a > 6.46; condition 2 needs a >= 6;
///   min_DN 150 with skySigmaDn 20 is 7.5σ of summed excess.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <random>
#include <vector>

#include "safeclip/kernel/CosmicRays.h"
#include "safeclip/kernel/Error.h"

namespace safeclip::kernel {
namespace {

constexpr MaskPixel kBad = 1;
constexpr MaskPixel kSat = 2;
constexpr MaskPixel kIntrp = 4;
constexpr MaskPixel kCr = 8;
constexpr MaskPixel kNoData = 256;
constexpr MaskPixel kBadBits = kBad | kSat | kNoData;  // upstream badMask minus INTRP (passed apart)

constexpr double kSky = 100.0;  // background level (bkgd)
constexpr double kSigma = 5.0;  // sky noise
constexpr double kPsf = 1.3;    // sharpest simulator PSF

/// Flat image at kSky with variance kSigma², plus Gaussian noise of kSigma when seed != 0.
MaskedImage flat(const Box& box, unsigned seed) {
    MaskedImage mi(box);
    mi.image.fill(static_cast<float>(kSky));
    mi.variance.fill(static_cast<float>(kSigma * kSigma));
    mi.mask.fill(0);
    if (seed != 0) {
        std::mt19937_64 rng(seed);
        std::normal_distribution<double> n(0.0, kSigma);
        for (float& v : mi.image.data()) {
            v = static_cast<float>(kSky + n(rng));
        }
    }
    return mi;
}

CosmicRayResult run(MaskedImage& mi, const CosmicRayControl& ctrl = {}, double psf = kPsf) {
    return findCosmicRays(mi, psf, kSky, ctrl, kBadBits, kCr, kIntrp);
}

/// Pixel-integrated circular Gaussian of total `flux` at (xc, yc), within ±6σ: the simulator's
/// renderStar (src/app/Simulator.cpp), repeated here so the test does not depend on the app layer.
void addStar(ImageF& img, double xc, double yc, double flux, double sigma) {
    const Box& b = img.box();
    const double inv = 1.0 / (std::sqrt(2.0) * sigma);
    auto w = [&](int k, double c) {
        return 0.5 * (std::erf((k + 0.5 - c) * inv) - std::erf((k - 0.5 - c) * inv));
    };
    for (int y = b.y0; y < b.y1(); ++y) {
        for (int x = b.x0; x < b.x1(); ++x) {
            if (std::abs(x - xc) <= 6 * sigma && std::abs(y - yc) <= 6 * sigma) {
                img(x, y) += static_cast<float>(flux * w(x, xc) * w(y, yc));
            }
        }
    }
}

int countMask(const MaskImage& m, MaskPixel bits) {
    int n = 0;
    for (const MaskPixel v : m.data()) {
        n += (v & bits) != 0 ? 1 : 0;
    }
    return n;
}

int chebyshevToSet(int x, int y, const std::vector<std::pair<int, int>>& set) {
    int best = 1 << 30;
    for (const auto& [a, b] : set) {
        best = std::min(best, std::max(std::abs(x - a), std::abs(y - b)));
    }
    return best;
}

TEST(CosmicRays, ThresholdsOfGaussianPsf) {
    // Upstream: thresH = cond3_fac2·½(P(-1,0) + P(1,0))/P(0,0), thresD the mean of the four
    // diagonals; for a Gaussian sampled at pixel centres: 0.6·e^{-1/(2σ²)} and 0.6·e^{-1/σ²}.
    const CosmicRayThresholds th = cosmicRayThresholds(1.3, 0.6);
    EXPECT_NEAR(th.h, 0.44635, 5e-5);
    EXPECT_NEAR(th.v, 0.44635, 5e-5);
    EXPECT_NEAR(th.d, 0.33204, 5e-5);
    EXPECT_THROW((void)cosmicRayThresholds(0.0, 0.6), InvalidParameter);
}

TEST(CosmicRays, HotPixelFlaggedAndRepairedExactly) {
    // Noise-free sky, one pixel at +60σ, box with a non-zero origin. Condition 2: 60σ >= 6σ;
    // condition 3 (N-S first): 0.446·57.5σ > 1.77σ -> candidate. min_DN: 60σ >= 7.5σ -> kept.
    // Growth: the 8 neighbours are at the sky after the repair, never 3σ above a mean -> none.
    // Repair: all four directions clean, each estimate (c1 + c2)·2·sky/2 = sky; the W-E one is
    // adopted, the others are not lower, so ngood = 1 (no debias): the value is the sky exactly.
    const Box box{5, 3, 40, 30};
    MaskedImage mi = flat(box, 0);
    mi.image(20, 17) = static_cast<float>(kSky + 60 * kSigma);
    const ImageF var0 = mi.variance;
    const CosmicRayResult r = run(mi);
    ASSERT_EQ(r.nCr, 1);
    EXPECT_EQ(r.nPixels, 1);
    EXPECT_EQ(r.nFirstPass, 1);
    EXPECT_TRUE(r.pixels.contains(20, 17));
    EXPECT_EQ(mi.mask(20, 17), kCr | kIntrp);
    EXPECT_EQ(countMask(mi.mask, ~0), 1);
    EXPECT_NEAR(mi.image(20, 17), kSky, 1e-3);
    EXPECT_EQ(mi.variance.data(), var0.data());  // the variance plane is not touched
}

TEST(CosmicRays, HotPixelOnNoiseRepairedCloseToNeighbours) {
    // Same hot pixel on σ = 5 noise. The repair is the lowest of up to four LPC estimates, each with
    // noise sqrt(2·0.7737² + 2·0.2737²)σ = 1.16σ (rows/columns), debiased by +0.56σ when more than
    // one is adopted: within 4σ of the mean of the 8 neighbours.
    const Box box{0, 0, 48, 48};
    MaskedImage mi = flat(box, 7);
    const float before = mi.image(24, 24);
    mi.image(24, 24) = static_cast<float>(before + 60 * kSigma);
    const CosmicRayResult r = run(mi);
    ASSERT_GE(r.nCr, 1);
    EXPECT_TRUE(r.pixels.contains(24, 24));
    EXPECT_LE(r.nPixels, 2);  // a noise neighbour can join only by a >= 3σ excess (p ~ 1%)
    double mean8 = 0;
    for (int dy = -1; dy <= 1; ++dy) {
        for (int dx = -1; dx <= 1; ++dx) {
            if (dx != 0 || dy != 0) {
                mean8 += mi.image(24 + dx, 24 + dy) / 8.0;
            }
        }
    }
    EXPECT_NEAR(mi.image(24, 24), mean8, 4 * kSigma);
    EXPECT_NE(mi.mask(24, 24) & kIntrp, 0);
}

TEST(CosmicRays, WormOfThreePixelsAt30Degrees) {
    // A 3-px worm along 30°: pixel centres x = 0, 1, 2 give y = 0, 0.58, 1.15 -> rows 0, 1, 1.
    // Raster first pass: (30,30) has sky N-S neighbours -> N-S estimate passes condition 3
    // (0.446·(50-2.5)σ > 1.77σ); (31,31) and (32,31) likewise (their N-S neighbours are off the worm).
    // The three are 8-connected -> one CR; Σ = 190σ >= 7.5σ. Repair (noise-free): every pixel keeps
    // at least one clean direction that avoids the worm (N-S), each estimate is the sky exactly.
    const Box box{0, 0, 64, 64};
    MaskedImage mi = flat(box, 0);
    const std::vector<std::pair<int, int>> worm = {{30, 30}, {31, 31}, {32, 31}};
    const double amp[3] = {50, 80, 60};
    for (int k = 0; k < 3; ++k) {
        mi.image(worm[k].first, worm[k].second) = static_cast<float>(kSky + amp[k] * kSigma);
    }
    const CosmicRayResult r = run(mi);
    ASSERT_EQ(r.nCr, 1);
    EXPECT_EQ(r.nPixels, 3);
    for (const auto& [x, y] : worm) {
        EXPECT_TRUE(r.crs[0].contains(x, y)) << x << "," << y;
        EXPECT_EQ(mi.mask(x, y), kCr | kIntrp);
        EXPECT_NEAR(mi.image(x, y), kSky, 1e-3);
    }
}

TEST(CosmicRays, TrackOfTwentyPixels) {
    // A 20-px track at 17° (x = 10+k, y = 40 + round(k·tan 17°)), 50-130σ per pixel (the simulator's
    // 50-500σ range), on σ = 5 noise. One pixel per column, so every pixel's N-S neighbours are off
    // the track: each passes condition 3 by > 20σ -> all 20 flagged, one 8-connected CR. Growth adds
    // at most one ring per iteration: every flagged pixel is within niteration = 3 of the track.
    const Box box{0, 0, 64, 80};
    MaskedImage mi = flat(box, 11);
    std::vector<std::pair<int, int>> track;
    for (int k = 0; k < 20; ++k) {
        const int x = 10 + k;
        const int y = 40 + static_cast<int>(std::lround(k * std::tan(17.0 * std::numbers::pi / 180.0)));
        track.emplace_back(x, y);
        mi.image(x, y) += static_cast<float>((50 + 20 * (k % 5)) * kSigma);
    }
    const CosmicRayResult r = run(mi);
    ASSERT_EQ(r.nCr, 1);
    for (const auto& [x, y] : track) {
        EXPECT_TRUE(r.crs[0].contains(x, y)) << x << "," << y;
    }
    EXPECT_LE(r.nPixels, 26);
    for (const Span& sp : r.pixels.spans()) {
        for (int x = sp.x0; x <= sp.x1; ++x) {
            EXPECT_LE(chebyshevToSet(x, sp.y, track), 3);
        }
    }
    double mean = 0;
    for (const auto& [x, y] : track) {
        EXPECT_NEAR(mi.image(x, y), kSky, 5 * kSigma);
        mean += mi.image(x, y) / 20.0;
    }
    EXPECT_NEAR(mean, kSky, 2 * kSigma);
}

TEST(CosmicRays, BrightStarOfSharpestSimulatorPsfIsNotFlagged) {
    // Stars of σ = 1.3 (the sharpest PSF Simulator.cpp draws), pixel-integrated as renderStar does,
    // centred on a pixel and off-centre, fluxes 1e3 .. 1e7 (peak up to ~1.8e5σ), on a noise-free sky
    // with sky-only variance (the hardest case: no noise term helps). For a pixel-integrated
    // Gaussian the mean of two opposite neighbours over the centre is >= 0.75 (rows/columns) and
    // >= 0.57 (diagonals), above thresV/thresD = 0.446/0.332, and off the peak a pixel's mean along
    // any direction is larger still: condition 3 fails everywhere, nothing is flagged or changed.
    for (const double flux : {1e3, 1e4, 1e5, 1e6, 1e7}) {
        for (const auto& [xc, yc] : {std::pair{32.0, 32.0}, std::pair{31.6, 32.3}, std::pair{32.5, 32.5}}) {
            MaskedImage mi = flat(Box{0, 0, 64, 64}, 0);
            addStar(mi.image, xc, yc, flux, kPsf);
            const ImageF img0 = mi.image;
            const CosmicRayResult r = run(mi);
            EXPECT_EQ(r.nCr, 0) << "flux " << flux << " at " << xc << "," << yc;
            EXPECT_EQ(r.nFirstPass, 0);
            EXPECT_EQ(countMask(mi.mask, ~0), 0);
            EXPECT_EQ(mi.image.data(), img0.data());
        }
    }
    // With Poisson variance (gain 1) and noise too.
    MaskedImage mi = flat(Box{0, 0, 64, 64}, 3);
    addStar(mi.image, 32.2, 31.9, 1e6, kPsf);
    std::mt19937_64 rng(5);
    std::normal_distribution<double> n(0.0, 1.0);
    for (std::size_t i = 0; i < mi.image.data().size(); ++i) {
        const double star = std::max(0.0, mi.image.data()[i] - kSky);
        mi.image.data()[i] += static_cast<float>(std::sqrt(star) * n(rng));
        mi.variance.data()[i] = static_cast<float>(kSigma * kSigma + star);
    }
    EXPECT_EQ(run(mi).nCr, 0);
}

TEST(CosmicRays, StarSharperThanThePsfIsFlagged) {
    // Control for the star test: a σ = 0.5 "star" judged with the σ = 1.3 PSF. Centred, its
    // neighbour/centre ratio is 0.157·0.683/0.683² ≈ 0.23 < thresV = 0.446: condition 3 passes
    // at the centre, so the sharpness test is what keeps the σ = 1.3 stars above unflagged.
    MaskedImage mi = flat(Box{0, 0, 64, 64}, 0);
    addStar(mi.image, 32.0, 32.0, 1e5, 0.5);
    const CosmicRayResult r = run(mi);
    EXPECT_GE(r.nCr, 1);
    EXPECT_TRUE(r.pixels.contains(32, 32));
}

TEST(CosmicRays, NoiseOnlyFlagsNothing) {
    // Pure σ = 5 noise: condition 2 needs a 6σ excess over a two-pixel mean (the difference has
    // σ·√1.5, a 4.9σ event, p ≈ 5e-7 per direction) and condition 3 a 6.5σ one; over 200² pixels
    // the expected number of candidates is ~0.1. Seeds fixed: nothing flagged, image unchanged.
    for (const unsigned seed : {1U, 2U, 3U}) {
        MaskedImage mi = flat(Box{-50, 20, 200, 200}, seed);
        const ImageF img0 = mi.image;
        const CosmicRayResult r = run(mi);
        EXPECT_EQ(r.nCr, 0) << seed;
        EXPECT_EQ(countMask(mi.mask, ~0), 0);
        EXPECT_EQ(mi.image.data(), img0.data());
    }
}

TEST(CosmicRays, BadPixelsAreNotCandidates) {
    // Condition 4: a candidate with badBits (BAD, SAT, NO_DATA here) or INTRP is skipped, and so is
    // one with an INTRP 8-neighbour. Control: SAT not among badBits -> the same pixel is a CR.
    for (const MaskPixel b : {kBad, kSat, kNoData, kIntrp}) {
        MaskedImage mi = flat(Box{0, 0, 32, 32}, 0);
        mi.image(16, 16) = static_cast<float>(kSky + 60 * kSigma);
        mi.mask(16, 16) = b;
        const ImageF img0 = mi.image;
        EXPECT_EQ(run(mi).nCr, 0) << b;
        EXPECT_EQ(mi.image.data(), img0.data());
        EXPECT_EQ(mi.mask(16, 16), b);
    }
    {
        MaskedImage mi = flat(Box{0, 0, 32, 32}, 0);
        mi.image(16, 16) = static_cast<float>(kSky + 60 * kSigma);
        mi.mask(17, 15) = kIntrp;
        EXPECT_EQ(run(mi).nCr, 0);
    }
    {
        MaskedImage mi = flat(Box{0, 0, 32, 32}, 0);
        mi.image(16, 16) = static_cast<float>(kSky + 60 * kSigma);
        mi.mask(16, 16) = kSat;
        const CosmicRayResult r =
            findCosmicRays(mi, kPsf, kSky, CosmicRayControl{}, kBad | kNoData, kCr, kIntrp);
        EXPECT_EQ(r.nCr, 1);
        EXPECT_EQ(mi.mask(16, 16), kSat | kCr | kIntrp);
    }
}

TEST(CosmicRays, MinDnIsReadInSkySigma) {
    // Two single pixels on a noise-free sky, +7σ and +8σ: both pass conditions 2 (>= 6σ) and 3
    // (0.446·(a-2.5) > 1.77 for a > 6.46). Condition 1 with min_DN 150 / skySigmaDn 20 = 7.5σ:
    // the 7σ one is dropped (and left as it was), the 8σ one kept. With skySigmaDn <= 0, min_DN is
    // in image units: 150 > 8σ = 40 drops both, 30 < 7σ = 35 keeps both.
    auto make = [] {
        MaskedImage mi = flat(Box{0, 0, 40, 40}, 0);
        mi.image(10, 10) = static_cast<float>(kSky + 7 * kSigma);
        mi.image(30, 30) = static_cast<float>(kSky + 8 * kSigma);
        return mi;
    };
    MaskedImage mi = make();
    CosmicRayResult r = run(mi);
    EXPECT_EQ(r.nFirstPass, 2);
    ASSERT_EQ(r.nCr, 1);
    EXPECT_TRUE(r.pixels.contains(30, 30));
    EXPECT_EQ(mi.image(10, 10), static_cast<float>(kSky + 7 * kSigma));
    EXPECT_EQ(mi.mask(10, 10), 0);

    CosmicRayControl c;
    c.skySigmaDn = 0;
    mi = make();
    EXPECT_EQ(run(mi, c).nCr, 0);
    c.min_DN = 30;
    mi = make();
    EXPECT_EQ(run(mi, c).nCr, 2);
}

TEST(CosmicRays, TooManyPixelsThrowsAndLeavesImageUnchanged) {
    // 30 isolated hot pixels (+80σ) on a noise-free sky: 30 first-pass candidates, no growth (the
    // repaired pixels and their neighbours sit at the sky). nCrPixelMax = 10: upstream throws
    // LengthError "Too many CR pixels" on the 11th candidate after restoring; here
    // TooManyCosmicRayPixels(11), with image and mask unchanged. nCrPixelMax = 30 is not exceeded
    // (the test is "more than").
    auto make = [](unsigned seed) {
        MaskedImage mi = flat(Box{0, 0, 64, 64}, seed);
        for (int k = 0; k < 30; ++k) {
            mi.image(4 + (10 * (k % 6)) % 56, 4 + (k / 6) * 11) += static_cast<float>(80 * kSigma);
        }
        return mi;
    };
    MaskedImage mi = make(0);
    const ImageF img0 = mi.image;
    CosmicRayControl c;
    c.nCrPixelMax = 10;
    try {
        (void)run(mi, c);
        FAIL() << "no exception";
    } catch (const TooManyCosmicRayPixels& e) {
        EXPECT_EQ(e.nCrPixelMax(), 10);
        EXPECT_EQ(e.nPixels(), 11);
        EXPECT_EQ(e.code(), ExitCode::Input);
    }
    EXPECT_EQ(mi.image.data(), img0.data());
    EXPECT_EQ(countMask(mi.mask, ~0), 0);

    c.nCrPixelMax = 30;
    mi = make(0);
    const CosmicRayResult r = run(mi, c);
    EXPECT_EQ(r.nCr, 30);
    EXPECT_EQ(r.nPixels, 30);

    // On σ = 5 noise the growth pass (minSigma/2 = 3σ, cond3_fac = 0) adds noise neighbours
    // (~2% of the 8·30 ring pixels pass condition 2 in some direction): the limit is then exceeded
    // in the growth pass, which must restore the image too (upstream leaves preliminary values).
    mi = make(9);
    const ImageF img9 = mi.image;
    try {
        (void)run(mi, c);
        FAIL() << "no exception";
    } catch (const TooManyCosmicRayPixels& e) {
        EXPECT_GT(e.nPixels(), 30);
    }
    EXPECT_EQ(mi.image.data(), img9.data());
    EXPECT_EQ(countMask(mi.mask, ~0), 0);
}

TEST(CosmicRays, KeepCrsOnlyMasks) {
    // keepCRs: upstream reinstates every pixel's first value and sets only the CR plane.
    MaskedImage mi = flat(Box{0, 0, 32, 32}, 4);
    mi.image(16, 16) += static_cast<float>(60 * kSigma);
    const ImageF img0 = mi.image;
    CosmicRayControl c;
    c.keepCRs = true;
    const CosmicRayResult r = run(mi, c);
    ASSERT_GE(r.nCr, 1);
    EXPECT_EQ(mi.image.data(), img0.data());
    EXPECT_EQ(mi.mask(16, 16), kCr);
}

TEST(CosmicRays, TileWithMarginReproducesWholeImageAndRunsAreDeterministic) {
    // The reach statement of CosmicRays.h: a box holding every cluster at least edgeMargin() = 11 px
    // inside gives the same mask and image there as the whole image; two runs give the same bits.
    const Box whole{0, 0, 160, 160};
    MaskedImage mi = flat(whole, 21);
    const std::vector<std::pair<int, int>> hits = {{50, 50}, {52, 51}, {53, 52},
                                                   {54, 52}, {70, 90}, {100, 60}};
    for (const auto& [x, y] : hits) {
        mi.image(x, y) += static_cast<float>(120 * kSigma);
    }
    for (int k = 0; k < 25; ++k) {  // a track at ~40°
        mi.image(60 + k, 95 + (k * 5) / 6) += static_cast<float>(70 * kSigma);
    }
    addStar(mi.image, 90.3, 80.6, 3e5, kPsf);
    const Box tile{30, 30, 100, 100};
    MaskedImage sub(tile);
    for (int y = tile.y0; y < tile.y1(); ++y) {
        for (int x = tile.x0; x < tile.x1(); ++x) {
            sub.image(x, y) = mi.image(x, y);
            sub.variance(x, y) = mi.variance(x, y);
            sub.mask(x, y) = mi.mask(x, y);
        }
    }
    MaskedImage again = mi;
    const CosmicRayResult rw = run(mi);
    const CosmicRayResult rt = run(sub);
    const CosmicRayResult ra = run(again);
    EXPECT_EQ(CosmicRayControl{}.edgeMargin(), 11);
    EXPECT_EQ(rw.nCr, 5);  // (50,50), the 3-px worm (52..54, 51..52), two single hits, the track
    EXPECT_EQ(rw.crs, rt.crs);
    EXPECT_EQ(rw.crs, ra.crs);
    EXPECT_EQ(mi.image.data(), again.image.data());
    EXPECT_EQ(mi.mask.data(), again.mask.data());
    for (int y = tile.y0; y < tile.y1(); ++y) {
        for (int x = tile.x0; x < tile.x1(); ++x) {
            ASSERT_EQ(sub.image(x, y), mi.image(x, y)) << x << "," << y;
            ASSERT_EQ(sub.mask(x, y), mi.mask(x, y)) << x << "," << y;
        }
    }
}

}  // namespace
TEST(CosmicRays, QuickRowTestNeverHidesACandidate) {
    // The first pass skips the pixels a branch-free row test says condition 2 rejects (it must only
    // skip pixels the full test rejects). Regression cases: (a) a hit with a NaN neighbour, a
    // candidate through its N-S direction (60σ > 6σ; 0.446·57.5σ > 1.77σ) while its W-E mean is
    // NaN; (b) a 2-px horizontal hit, whose second pixel is tested after the first was replaced in
    // place. (The main evidence that the row test changes nothing: the B16 coadd with the stage on
    // was byte-identical before and after it was added, 4121 CRs.)
    const Box box{0, 0, 48, 40};
    MaskedImage mi = flat(box, 0);
    mi.image(11, 10) = std::numeric_limits<float>::quiet_NaN();
    mi.image(12, 10) = static_cast<float>(kSky + 60 * kSigma);
    mi.image(30, 20) = static_cast<float>(kSky + 80 * kSigma);
    mi.image(31, 20) = static_cast<float>(kSky + 70 * kSigma);
    const CosmicRayResult r = run(mi, {}, kPsf);
    EXPECT_TRUE(r.pixels.contains(12, 10));
    EXPECT_TRUE(r.pixels.contains(30, 20));
    EXPECT_TRUE(r.pixels.contains(31, 20));
}

TEST(CosmicRays, ADefectPixelDoesNotSpreadIntoACosmicRay) {
    // One pixel at -inf, -1e38 or -1e6 on a noisy sky (safeclip's guard, see "Deviations"): its
    // neighbours must not become candidates through the directions that contain it (their mean is
    // -inf or far below the background), so nothing is flagged; a real hit next to such a pixel is
    // still found through its other directions.
    for (const float defect : {-std::numeric_limits<float>::infinity(), -1e38F, -1e6F}) {
        SCOPED_TRACE(defect);
        MaskedImage mi = flat(Box{0, 0, 64, 48}, 7);
        mi.image(20, 20) = defect;
        const CosmicRayResult r = run(mi);
        EXPECT_EQ(r.nPixels, 0);
        MaskedImage hit = flat(Box{0, 0, 64, 48}, 7);
        hit.image(20, 20) = defect;
        hit.image(21, 20) = static_cast<float>(kSky + 80 * kSigma);
        const CosmicRayResult h = run(hit);
        EXPECT_TRUE(h.pixels.contains(21, 20));
        EXPECT_LE(h.nPixels, 3);
    }
}

}  // namespace safeclip::kernel
