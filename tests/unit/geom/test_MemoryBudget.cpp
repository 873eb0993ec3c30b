// The memory model (geom/MemoryBudget.h): rows never exceed the budget, and its figures for a few shapes.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "safeclip/geom/MemoryBudget.h"
#include "safeclip/geom/Plan.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/SampleStats.h"

using namespace safeclip;
using kernel::Box;

namespace {
std::string messageOf(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const ConfigError& e) {
        return e.what();
    }
    return "";
}
}  // namespace

TEST(MemoryBudget, Constants) {
    EXPECT_EQ(geom::kWeightsChunkBytesPerPixel, 8);
    EXPECT_EQ(geom::kWeightsSampleBytesPerPixel, 4);
    EXPECT_EQ(geom::kWarpChunkBytesPerPixel, 12);
    EXPECT_EQ(geom::kStackOutputBytesPerPixel, 24);
    EXPECT_EQ(geom::kTrialFixedBytesPerPixel, 16);
    EXPECT_EQ(geom::kFinalFixedBytesPerPixel, 14);
    EXPECT_EQ(geom::kChunkCap, 8LL << 20);
}

TEST(MemoryBudget, WeightsRowsFitTheBudgetAndTheCap) {
    for (const Box patch : {Box{0, 0, 256, 256}, Box{-3, 5, 1000, 37}, Box{0, 0, 4000, 4000}}) {
        const std::int64_t sample = geom::weightsSampleBytes(patch);
        EXPECT_EQ(sample, patch.area() * 4 + kernel::sampleQuantilesScratchBytes(patch.area()));
        for (const std::int64_t budget :
             {sample + patch.width * 8LL, sample + 1000000LL, sample + (1LL << 30)}) {
            const int rows = geom::weightsChunkRows(patch, budget);
            EXPECT_GE(rows, 1);
            EXPECT_LE(rows, patch.height);
            EXPECT_LE(sample + static_cast<std::int64_t>(rows) * patch.width * 8, budget);
            EXPECT_LE(static_cast<std::int64_t>(rows) * patch.width * 8,
                      std::max<std::int64_t>(geom::kChunkCap, patch.width * 8));
        }
        const std::string msg =
            messageOf([&] { geom::weightsChunkRows(patch, sample + patch.width * 8 - 1); });
        EXPECT_NE(msg.find("cannot hold one warp's variance sample for the weights"), std::string::npos)
            << msg;
    }
    // 256x256: sample 256 KiB + scratch; with 1 MiB the rest in rows of 2 KiB; the cap is 4096 rows.
    const Box p{0, 0, 256, 256};
    EXPECT_EQ(geom::weightsChunkRows(p, 1LL << 30), 256);
    EXPECT_EQ(geom::weightsChunkRows(p, geom::weightsSampleBytes(p) + 10 * 2048 + 5), 10);
}

TEST(MemoryBudget, StackRowsFitTheBudgetAndTheCap) {
    const Box patch{0, 0, 512, 512};
    for (const Box box : {Box{0, 0, 140, 140}, Box{0, 0, 512, 512}, Box{10, 20, 77, 300}}) {
        for (const int nWarps : {1, 6, 40}) {
            for (const std::int64_t budget : {8LL << 20, 64LL << 20, 1LL << 30}) {
                for (const std::int64_t fixed :
                     {geom::trialFixedBytes(box), geom::finalFixedBytes(patch, 0, true)}) {
                    if (fixed + box.width * (12LL * nWarps + 24) > budget) {
                        EXPECT_THROW(geom::stackChunkRows(box, nWarps, fixed, budget, "p", 128, patch),
                                     ConfigError);
                        continue;
                    }
                    const int rows = geom::stackChunkRows(box, nWarps, fixed, budget, "p", 128, patch);
                    EXPECT_GE(rows, 1);
                    EXPECT_LE(rows, box.height);
                    EXPECT_LE(fixed + static_cast<std::int64_t>(rows) * box.width * (12LL * nWarps + 24),
                              budget);
                    EXPECT_LE(static_cast<std::int64_t>(rows) * box.width * 12 * nWarps,
                              std::max<std::int64_t>(geom::kChunkCap, box.width * 12LL * nWarps));
                }
            }
        }
    }
    // 6 warps of 512 px: 8 MiB cap / (6 x 12 x 512) = 227 rows; 1 GiB would allow all 512.
    EXPECT_EQ(
        geom::stackChunkRows(patch, 6, geom::finalFixedBytes(patch, 0, true), 1LL << 30, "p", 512, patch),
        227);
    const std::string msg =
        messageOf([&] { geom::stackChunkRows(patch, 6, 5000000, 4000000, "p007", 128, patch); });
    EXPECT_EQ(
        msg,
        "memory.max_per_rank = 3.8 MiB is smaller than the fixed arrays of patch p007 (4.8 MiB for tiles "
        "of 128 px and the gathered patch " +
            patch.str() + ")");
}

TEST(MemoryBudget, FixedBytesAndTilePlanCost) {
    const Box patch{0, 0, 300, 200};
    EXPECT_EQ(geom::trialFixedBytes(Box{0, 0, 10, 10}), 1600);
    EXPECT_EQ(geom::finalFixedBytes(patch, 5000, true), 300 * 200 * 14);
    EXPECT_EQ(geom::finalFixedBytes(patch, 5000, false), 5000 * 14);
    // side 64, halo 8: h = 80; max(80² x 16, 60000 x 14) + 8 x 80 x (12 x 5 + 24)
    EXPECT_EQ(geom::tilePlanBytes(patch, 64, 8, 5),
              std::max<std::int64_t>(6400 * 16, 60000 * 14) + 8 * 80 * 84);
    const geom::TilePlan tp = geom::planTiles(patch, 2, 64, 8, 5, 1LL << 30);
    EXPECT_EQ(tp.fixedBytes, geom::tilePlanFixedBytes(patch, tp.tiles.front(), 8));
}

TEST(MemoryBudget, PatchBudgetReadsAndRows) {
    const Box patch{0, 0, 256, 192};
    const int halo = 11;
    const geom::TilePlan tp = geom::planTiles(patch, 2, 64, halo, 4, 64LL << 20);
    // warp 2 did not open (empty box): 4 warps read, each on the patch box
    const std::vector<Box> used{patch, patch, Box(), patch, patch};
    const std::int64_t budget = 64LL << 20;
    const auto ranks =
        geom::patchBudget(patch, tp.tiles, tp.owner, halo, 2, used, true, budget, "p", tp.tileSize);
    ASSERT_EQ(ranks.size(), 2U);
    std::int64_t total = 0;
    int tiles = 0;
    for (const auto& r : ranks) {
        total += r.warpBytesRead;
        tiles += r.tiles;
        EXPECT_LE(r.peakBytes, budget);
        EXPECT_GE(r.weightsRows, 1);
        EXPECT_GE(r.trialRows, 1);
        EXPECT_GE(r.finalRows, 1);
    }
    EXPECT_EQ(tiles, static_cast<int>(tp.tiles.size()));
    EXPECT_EQ(total, geom::expectedWarpBytesRead(patch, tp.tiles, halo, used, true));
    // Weights: warps 0, 4 on rank 0 and 1, 3 on rank 1 (warp i on rank i mod 2).
    std::int64_t expected = 4 * patch.area() * 8;
    std::int64_t haloArea = 0;
    for (const Box& t : tp.tiles) {
        haloArea += t.grown(halo).intersect(patch).area();
    }
    expected += 4 * 12 * (haloArea + patch.area());
    EXPECT_EQ(total, expected);
    // Mean mode: no trial pass, and one rank with the whole patch.
    const geom::TilePlan one = geom::planTiles(patch, 1, 0, 0, 4, budget);
    ASSERT_EQ(one.tiles.size(), 1U);
    const auto mean =
        geom::patchBudget(patch, one.tiles, one.owner, 0, 1, used, false, budget, "p", one.tileSize);
    EXPECT_EQ(mean[0].warpBytesRead, 4 * patch.area() * (8 + 12));
    EXPECT_EQ(mean[0].trialRows, 0);
    EXPECT_EQ(geom::expectedWarpBytesRead(patch, one.tiles, 0, used, false), 4 * patch.area() * 20);
}

TEST(MemoryBudget, WeightsCoverEachWarpsWholeBox) {
    // Warps larger than the patch: the weights pass reads and samples each warp's whole box (spec
    // §3, as upstream), so its reads and its sample follow the warp boxes, not the patch.
    const Box patch{100, 100, 128, 96};
    const Box big{0, 0, 512, 384};
    const Box wide{50, 60, 300, 200};
    const std::vector<Box> warps{big, patch, Box(), wide};
    const std::int64_t budget = 64LL << 20;
    const geom::TilePlan tp = geom::planTiles(patch, 2, 0, 9, 3, budget);
    const auto ranks =
        geom::patchBudget(patch, tp.tiles, tp.owner, 9, 2, warps, true, budget, "p", tp.tileSize);
    std::int64_t stackReads = 0;
    for (const Box& t : tp.tiles) {
        stackReads += 12 * (t.grown(9).intersect(patch).area() + t.area());
    }
    const std::int64_t total = ranks[0].warpBytesRead + ranks[1].warpBytesRead;
    EXPECT_EQ(total, 8 * (big.area() + patch.area() + wide.area()) + 3 * stackReads);
    EXPECT_EQ(total, geom::expectedWarpBytesRead(patch, tp.tiles, 9, warps, true));
    // Rank 0 measures warps 0 (big) and 2 (not read); rank 1 warps 1 and 3 (wide).
    EXPECT_GE(ranks[0].peakBytes, geom::weightsSampleBytes(big) + big.width * 8);
    EXPECT_EQ(ranks[0].weightsRows, geom::weightsChunkRows(big, budget));
    EXPECT_EQ(ranks[1].weightsRows,
              std::min(geom::weightsChunkRows(patch, budget), geom::weightsChunkRows(wide, budget)));
    // A budget that holds the patch's stacks but not the big warp's sample fails, naming the warp box.
    const std::int64_t tight = geom::weightsSampleBytes(big) + big.width * 8 - 1;
    const std::string msg = messageOf([&] {
        (void)geom::patchBudget(patch, tp.tiles, tp.owner, 9, 2, warps, true, tight, "p", tp.tileSize);
    });
    EXPECT_NE(msg.find("for the warp box " + big.str()), std::string::npos) << msg;
}

TEST(MemoryBudget, PlanTilesFitsTheModel) {
    // The automatic tile size keeps trial fixed arrays + 8 rows of buffers inside the budget.
    const Box patch{0, 0, 1024, 1024};
    for (const std::int64_t budget : {24LL << 20, 64LL << 20, 256LL << 20}) {
        const geom::TilePlan tp = geom::planTiles(patch, 4, 0, 13, 10, budget);
        if (tp.tileSize > 16) {
            EXPECT_LE(geom::tilePlanBytes(patch, tp.tileSize, 13, 10), budget);
        }
    }
}

TEST(MemoryBudget, CompareWarpTilesHoldTheirCompareStage) {
    // comparewarp: planTiles' cost is the largest cw_compare tile plus halo of the tiling it picks
    // (exactly), so every tile passes checkedCompareWarpTileBytes when the cost fits, and patchBudget's
    // peak covers cw_stats and cw_compare on every rank.
    const Box patch{100, 200, 300, 170};
    const int halo = 17;
    const int nWarps = 12;
    const std::vector<Box> warps(nWarps, patch);
    bool shrunk = false;
    for (const int group : {1, 2, 3}) {
        for (const std::int64_t budget : {3LL << 20, 6LL << 20, 12LL << 20, 64LL << 20}) {
            const geom::TilePlan tp = geom::planTiles(patch, group, 0, halo, nWarps, budget, true);
            std::int64_t largest = 0;
            for (const Box& t : tp.tiles) {
                largest =
                    std::max(largest, geom::compareWarpTileBytes(t.grown(halo).intersect(patch), nWarps));
            }
            EXPECT_EQ(geom::compareWarpTilePlanBytes(patch, tp.tileSize, halo, nWarps),
                      std::max(largest, geom::tilePlanBytes(patch, tp.tileSize, halo, nWarps)));
            shrunk = shrunk || tp.tileSize < geom::planTiles(patch, group, 0, halo, nWarps, budget).tileSize;
            if (tp.tileSize > 16) {
                EXPECT_LE(largest, budget) << "group " << group << ", budget " << budget;
            }
            if (largest > budget) {
                continue;
            }
            const auto ranks = geom::patchBudget(patch, tp.tiles, tp.owner, halo, group, warps, false, budget,
                                                 "p", tp.tileSize, 0, std::nullopt, geom::CompareWarpStage{});
            for (std::size_t r = 0; r < ranks.size(); ++r) {
                EXPECT_GE(ranks[r].peakBytes, geom::compareWarpStatsBytes(patch));
                EXPECT_EQ(ranks[r].cwStatsBytes, geom::compareWarpStatsBytes(patch));
                for (std::size_t t = 0; t < tp.tiles.size(); ++t) {
                    if (tp.owner[t] == static_cast<int>(r)) {
                        EXPECT_GE(
                            ranks[r].cwCompareBytes,
                            geom::compareWarpTileBytes(tp.tiles[t].grown(halo).intersect(patch), nWarps));
                    }
                }
                EXPECT_GE(ranks[r].peakBytes, ranks[r].cwCompareBytes);
                EXPECT_LE(ranks[r].peakBytes, budget);
            }
        }
    }
    EXPECT_TRUE(shrunk) << "no budget made the comparewarp tiles smaller than the safeclip-mode ones";
}
