// Pure planning: byte sizes, chunks, tiles, rank assignment, groups and tile plans.
#include <gtest/gtest.h>

#include <set>

#include "safeclip/geom/Plan.h"
#include "safeclip/kernel/Error.h"

using namespace safeclip;
using kernel::Box;

TEST(ByteSize, ParsesUnitsAndRejectsNonsense) {
    EXPECT_EQ(geom::parseByteSize("512MiB", "k"), 512LL * 1024 * 1024);
    EXPECT_EQ(geom::parseByteSize("2GiB", "k"), 2LL * 1024 * 1024 * 1024);
    EXPECT_EQ(geom::parseByteSize("64 MB", "k"), 64000000LL);
    EXPECT_EQ(geom::parseByteSize("1000", "k"), 1000);
    EXPECT_THROW(geom::parseByteSize("lots", "memory.max_per_rank"), ConfigError);
    EXPECT_THROW(geom::parseByteSize("5 parsecs", "memory.max_per_rank"), ConfigError);
    EXPECT_THROW(geom::parseByteSize("0", "memory.max_per_rank"), ConfigError);
    try {
        geom::parseByteSize("5XB", "memory.max_per_rank");
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("memory.max_per_rank"), std::string::npos);
    }
}

TEST(Chunks, NeverExceedTheBudgetAndCoverTheBox) {
    const Box box{-5, 7, 300, 211};
    for (std::int64_t budget : {40000LL, 100000LL, 1000000LL, 100000000LL}) {
        const int rows = geom::rowsPerChunk(box, 7, 12, 24, budget);
        EXPECT_LE(static_cast<std::int64_t>(rows) * box.width * (7 * 12 + 24),
                  std::max<std::int64_t>(budget, box.width * (7 * 12 + 24)));
        int covered = 0;
        int y = box.y0;
        for (const Box& c : geom::rowChunks(box, rows)) {
            EXPECT_EQ(c.y0, y);
            EXPECT_EQ(c.x0, box.x0);
            EXPECT_EQ(c.width, box.width);
            EXPECT_LE(c.height, rows);
            y = c.y1();
            covered += c.height;
        }
        EXPECT_EQ(covered, box.height);
    }
    EXPECT_THROW(geom::rowsPerChunk(box, 7, 12, 24, 1000), ConfigError);
}

TEST(Assign, EveryItemExactlyOnceAndBalanced) {
    std::vector<double> costs;
    for (int i = 0; i < 37; ++i) {
        costs.push_back(1.0 + (i * 7919) % 13);
    }
    for (int n = 1; n <= 17; ++n) {
        const auto owner = geom::assignToRanks(costs, n);
        ASSERT_EQ(owner.size(), costs.size());
        std::vector<double> load(static_cast<std::size_t>(n), 0);
        for (std::size_t i = 0; i < owner.size(); ++i) {
            ASSERT_GE(owner[i], 0);
            ASSERT_LT(owner[i], n);
            load[static_cast<std::size_t>(owner[i])] += costs[i];
        }
        const double mx = *std::max_element(load.begin(), load.end());
        const double mn = *std::min_element(load.begin(), load.end());
        EXPECT_LE(mx - mn, 13.0) << n << " ranks";  // LPT: spread at most the largest item
        EXPECT_EQ(owner, geom::assignToRanks(costs, n)) << "deterministic";
    }
}

TEST(Groups, OneGroupPerRankUntilRanksOutnumberPatches) {
    const std::vector<double> costs{4, 1, 3};
    auto g = geom::planGroups(costs, 2);
    EXPECT_EQ(g.nGroups, 2);
    g = geom::planGroups(costs, 7);
    EXPECT_EQ(g.nGroups, 3);
    std::set<int> used(g.groupOfPatch.begin(), g.groupOfPatch.end());
    EXPECT_EQ(used.size(), 3U);  // every patch its own group
    for (int r = 0; r < 7; ++r) {
        EXPECT_EQ(g.groupOfRank[static_cast<std::size_t>(r)], r % 3);
    }
}

TEST(TilePlan, TilesPartitionThePatchAndFitTheBudget) {
    const Box patch{1000, 2000, 500, 333};
    for (int ranks : {1, 2, 3, 8}) {
        for (std::int64_t budget : {4LL << 20, 64LL << 20}) {
            const auto plan = geom::planTiles(patch, ranks, 0, 13, 16, budget);
            std::int64_t area = 0;
            for (std::size_t i = 0; i < plan.tiles.size(); ++i) {
                EXPECT_TRUE(patch.contains(plan.tiles[i]));
                area += plan.tiles[i].area();
                for (std::size_t j = 0; j < i; ++j) {
                    EXPECT_TRUE(plan.tiles[i].intersect(plan.tiles[j]).empty());
                }
                EXPECT_LT(plan.owner[i], ranks);
            }
            EXPECT_EQ(area, patch.area());
            if (plan.tileSize > 16) {
                EXPECT_LE(plan.fixedBytes, budget) << ranks << " ranks, budget " << budget;
            }
        }
    }
    EXPECT_EQ(geom::planTiles(patch, 4, 100, 13, 16, 1LL << 30).tileSize, 100);
}
