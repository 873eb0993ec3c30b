// `safeclip plan` in coadd.mode = comparewarp (issue 15): the plan's memory model covers the mode's
// own stages (cw_stats: one whole warp; cw_compare: every used warp PSF-matched on a tile plus halo),
// its tile plan is the one the run uses (the run shrinks automatic tiles until cw_compare fits), and
// a budget too small for the mode is reported by the plan with the run's own message.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "TempDir.h"
#include "TinyWarps.h"
#include "safeclip/app/Config.h"
#include "safeclip/app/PatchCoadd.h"
#include "safeclip/app/RunPlan.h"
#include "safeclip/geom/MemoryBudget.h"
#include "safeclip/geom/Plan.h"
#include "safeclip/io/Manifest.h"
#include "safeclip/kernel/Error.h"

using namespace safeclip;
using kernel::Box;
using safeclip::test::TempDir;

namespace {

const Box kBox{0, 0, 128, 128};
constexpr int kWarps = 8;

/// kWarps tiny warps with PSF sigmas 1.2-1.9 px (so the model PSF needs real matching kernels and
/// the halo is the mode's own), a manifest of one patch "p", and a config that points at it.
struct Fixture {
    TempDir dir;
    std::vector<pipeline::WarpInput> warps;
    app::Config cfg;

    explicit Fixture(const std::string& budget, int tileSize = 0) {
        io::Manifest m;
        io::ManifestPatch p;
        p.name = "p";
        p.box = kBox;
        for (int i = 0; i < kWarps; ++i) {
            test::TinyWarp w;
            w.box = kBox;
            w.visit = 700 + i;
            w.seed = 5100U + static_cast<unsigned>(i);
            w.psfSigma = 1.2 + 0.1 * i;
            w.transientFlux = i == 2 ? 600.0 : 0.0;
            const std::string path = dir.file("w" + std::to_string(i) + ".fits");
            test::writeTinyWarp(path, w);
            p.warps.push_back({w.visit, path});
            warps.push_back({w.visit, path, ""});
        }
        m.patches.push_back(p);
        io::writeManifest(dir.file("manifest.json"), m);
        cfg.set("input.manifest=\"" + dir.file("manifest.json") + "\"");
        cfg.set("output.dir=\"" + dir.file("out") + "\"");
        cfg.set("coadd.mode=\"comparewarp\"");
        cfg.set("memory.max_per_rank=\"" + budget + "\"");
        cfg.set("tile.size=" + std::to_string(tileSize));
        cfg.set("interp.enabled=false");
    }
};

}  // namespace

TEST(RunPlanCompareWarp, PeakCoversTheModesStagesAndTilesAreTheRunsOwn) {
    // 1600 KiB: the whole 128x128 patch does not hold 8 PSF-matched warps (cw_compare needs 2.3 MiB);
    // the safeclip-mode tile cost would allow it, so the tile size comes from cw_compare.
    Fixture f("1600KiB");
    const app::RunPlan plan = app::makePlan(f.cfg, 1);
    ASSERT_EQ(plan.patches.size(), 1U);
    const app::PatchPlan& pp = plan.patches[0];
    ASSERT_EQ(pp.error, "");
    ASSERT_EQ(pp.perRank.size(), 1U);
    EXPECT_GT(pp.halo, 0);
    EXPECT_GT(pp.tiles, 1) << "the budget should need several tiles";
    EXPECT_LT(pp.tileSize, kBox.width);
    EXPECT_LT(geom::tilePlanBytes(kBox, kBox.width, pp.halo, kWarps), plan.budgetBytes)
        << "the safeclip-mode tile cost alone would keep the whole patch: the test would not see the cw cost";
    const geom::RankBudget& b = pp.perRank[0];
    EXPECT_LE(b.peakBytes, plan.budgetBytes);
    // The peak covers each stage's own run-time check: cw_stats for every warp, cw_compare for every tile.
    const std::int64_t stats = geom::checkedCompareWarpStatsBytes(kBox, plan.budgetBytes);
    EXPECT_EQ(b.cwStatsBytes, stats);
    EXPECT_GE(b.peakBytes, stats);
    std::int64_t largestTile = 0;
    for (const Box& t : geom::tiles(kBox, pp.tileSize)) {
        const std::int64_t bytes =
            geom::checkedCompareWarpTileBytes(t.grown(pp.halo).intersect(kBox), kWarps, plan.budgetBytes);
        EXPECT_GE(b.peakBytes, bytes) << t.str();
        largestTile = std::max(largestTile, bytes);
    }
    // On the root cw_compare also detects the template's sources over the whole patch.
    const std::int64_t templ = geom::checkedCompareWarpTemplateBytes(kBox, plan.budgetBytes);
    EXPECT_GE(b.peakBytes, templ);
    EXPECT_EQ(b.cwCompareBytes, std::max(largestTile, templ));
    EXPECT_NE(app::planJson(plan).find("\"memory_model_complete\": true"), std::string::npos);
    EXPECT_EQ(app::planText(plan).find("note:"), std::string::npos) << app::planText(plan);

    // The run uses the same tile plan and halo, and reads what the plan expects.
    const pipeline::PatchResult r = app::coaddPatch("p", kBox, f.warps, f.cfg, f.dir.file("p.fits"), nullptr);
    EXPECT_EQ(r.tileSize, pp.tileSize);
    EXPECT_EQ(r.nTiles, pp.tiles);
    EXPECT_EQ(r.halo, pp.halo);
}

TEST(RunPlanCompareWarp, TooSmallABudgetIsReportedWithTheRunsMessage) {
    // Below one whole warp's comparewarp statistics (as CompareWarp.TooSmallABudgetFailsNamingTheKey).
    Fixture f(std::to_string(128 * 128 * 36 - 1), 16);
    const app::RunPlan plan = app::makePlan(f.cfg, 1);
    const std::string planError = plan.patches.at(0).error;
    EXPECT_NE(planError.find("memory.max_per_rank"), std::string::npos) << planError;
    EXPECT_NE(planError.find("comparewarp statistics"), std::string::npos) << planError;
    try {
        (void)app::coaddPatch("p", kBox, f.warps, f.cfg, f.dir.file("p.fits"), nullptr);
        ADD_FAILURE() << "the run accepted a budget the plan refuses";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), planError);
        EXPECT_EQ(e.code(), ExitCode::Config);
    }
}
