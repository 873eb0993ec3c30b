// The "detection" stage's σ (issue 12 item 1, spec §0.3/§6.1.2): the adaptive-moment determinant
// radius of the warps' weighted Gaussian PSFs, not the weighted mean of their σ's, and what that
// changes: the issue's reproduction, a transient kept with the old σ and clipped with the new.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "PipelineSettings.h"
#include "TempDir.h"
#include "TinyWarps.h"
#include "safeclip/kernel/PsfMoments.h"
#include "safeclip/pipeline/Driver.h"
#include "safeclip/pipeline/Stages.h"

using namespace safeclip;
using safeclip::test::TempDir;

namespace {

pipeline::PatchSettings settings(double psfSigma) {
    return test::defaultPatchSettings("safeclip", psfSigma);
}

/// The issue's reproduction: 64×64, unit noise and variance, PSF σ 1.0, 1.0, 2.6, 2.6, a static
/// star at (20, 20) DETECTED over r² <= 64 in every warp, and in warp `transientWarp` a flux-3000
/// Gaussian (the warp's PSF) at (40, 40) DETECTED over r² <= 30.
std::vector<pipeline::WarpInput> issueWarps(const TempDir& dir, int transientWarp) {
    const double sigmas[] = {1.0, 1.0, 2.6, 2.6};
    std::vector<pipeline::WarpInput> inputs;
    for (int i = 0; i < 4; ++i) {
        test::TinyWarp w;
        w.visit = 10 + i;
        w.seed = 200U + static_cast<unsigned>(i);
        w.psfSigma = sigmas[i];
        w.starDetR2 = 64;
        w.transientFlux = i == transientWarp ? 3000.0 : 0.0;
        w.transientDetR2 = 30;
        const std::string path = dir.file("warp" + std::to_string(i) + ".fits");
        test::writeTinyWarp(path, w);
        inputs.push_back({-1, path});
    }
    return inputs;
}

struct Outcome {
    double sigma = 0;
    int halo = 0;
    std::string psfSource;
    bool clipped = false;
    std::int64_t area = 0;
    double fraction = -1;  ///< of the transient's warp in the footprint holding (40, 40)
};

Outcome run(const std::vector<pipeline::WarpInput>& inputs, double psfSigma, int transientWarp,
            const std::string& out) {
    const auto s = settings(psfSigma);
    pipeline::PatchContext ctx("p", kernel::Box{}, s, nullptr, {}, out);
    ctx.warps.resize(inputs.size());
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        ctx.warps[i].input = inputs[i];
    }
    for (auto stage : {pipeline::openWarps, pipeline::measureWeights, pipeline::setupDetection,
                       pipeline::planTiles, pipeline::trialStacks, pipeline::decideClipping}) {
        stage(ctx);
    }
    Outcome o;
    o.sigma = ctx.detect.psfSigma;
    o.halo = ctx.halo;
    o.psfSource = ctx.psfSource;
    o.clipped = ctx.warps[static_cast<std::size_t>(transientWarp)].clipped.contains(40, 40);
    for (const kernel::FootprintRow& f : ctx.decisions.footprints) {
        if (f.x0 <= 40 && 40 <= f.x1 && f.y0 <= 40 && 40 <= f.y1) {
            o.area = f.area;
            for (const kernel::CandidateRow& c : ctx.decisions.candidates) {
                if (c.footprintId == f.id && c.visit == 10 + transientWarp) {
                    o.fraction = c.fraction;
                }
            }
        }
    }
    std::printf("sigma %.6f (%s) halo %d: footprint %lld px, fraction %.3f, %s\n", o.sigma,
                o.psfSource.c_str(), o.halo, static_cast<long long>(o.area), o.fraction,
                o.clipped ? "clipped" : "kept");
    return o;
}

}  // namespace

TEST(DetectionSigma, IsTheAdaptiveMomentRadiusOfTheWeightedPsfs) {
    TempDir dir;
    const Outcome o = run(issueWarps(dir, 2), 0.0, 2, dir.file("out.fits"));
    // Unit variance everywhere: (nearly) equal weights, so σ ≈ 1.2157 (test_PsfMoments), not 1.80.
    EXPECT_NEAR(o.sigma, 1.2157, 2e-3);
    EXPECT_EQ(o.psfSource, "adaptive moments of the weight-averaged Gaussian PSFs (PSFSIGMA/FWHM)");
    // The halo still comes from the largest header σ (2.6), which bounds the mixture σ.
    const std::vector<std::optional<double>> headers = {1.0, 1.0, 2.6, 2.6};
    const double haloSigma = pipeline::haloSigma(settings(0.0).detect, headers);
    EXPECT_EQ(haloSigma, 2.6);
    EXPECT_LE(o.sigma, haloSigma);
    EXPECT_EQ(o.halo, pipeline::tileHalo(settings(0.0).detect, 2.6));
    EXPECT_GE(o.halo, pipeline::detectionHalo([&] {
                  auto d = settings(0.0).detect;
                  d.psfSigma = o.sigma;
                  return d;
              }()));
}

TEST(DetectionSigma, IssueReproductionTransientClippedWithNewSigmaKeptWithOld) {
    TempDir dir;
    const int transientWarp = 0;
    const auto inputs = issueWarps(dir, transientWarp);
    const Outcome now = run(inputs, 0.0, transientWarp, dir.file("new.fits"));
    // Transient in a σ = 1.0 warp (visit 10). Measured here (seeds 200..203), as in the issue:
    // σ 1.2157 -> footprint 129 px, f = 0.752 > 0.5 (single only candidate) -> clipped;
    // σ 1.8    -> footprint 309 px (the issue: 315 with its noise), f = 0.314 -> kept.
    EXPECT_TRUE(now.clipped);
    EXPECT_EQ(now.area, 129);
    EXPECT_NEAR(now.fraction, 0.752, 5e-4);
    // The old detection σ, the weight-averaged header σ (1.0 + 1.0 + 2.6 + 2.6)/4 = 1.8, as an override.
    const Outcome old = run(inputs, 1.8, transientWarp, dir.file("old.fits"));
    EXPECT_EQ(old.psfSource, "config detect.psf_sigma");
    EXPECT_FALSE(old.clipped);
    EXPECT_NEAR(old.fraction, 0.314, 5e-4);
    EXPECT_GT(old.area, now.area);
}
