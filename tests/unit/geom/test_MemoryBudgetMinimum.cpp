// Issue 13, item 16: an impossible memory budget is found when planning, with the smallest budget
// that works by the model (it works; one byte less does not), and planTiles does not shrink its
// automatic tiles to 16 px under a budget that no tiling can meet.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "safeclip/geom/MemoryBudget.h"
#include "safeclip/geom/Plan.h"
#include "safeclip/kernel/Error.h"

using namespace safeclip;
using kernel::Box;

namespace {

bool works(const Box& patch, int group, int tileSize, int halo, const std::vector<Box>& used, bool trial,
           std::int64_t budget) {
    const geom::TilePlan plan =
        geom::planTiles(patch, group, tileSize, halo, static_cast<int>(used.size()), budget);
    try {
        (void)geom::checkedPatchBudget(patch, plan, group, tileSize, used, trial, budget, "p");
        return true;
    } catch (const ConfigError&) {
        return false;
    }
}

}  // namespace

TEST(MemoryBudgetMinimum, SmallestBudgetWorksAndOneByteLessFails) {
    struct Case {
        Box patch;
        int group;
        int tileSize;
        int halo;
        int warps;
        bool trial;
    };
    const std::vector<Case> cases = {
        {Box{0, 0, 1536, 1536}, 1, 0, 14, 12, true},  // the patch
        {Box{0, 0, 1536, 1536}, 3, 0, 14, 12, true},  // shared by a group of 3
        {Box{5, 7, 300, 200}, 2, 64, 20, 5, true},    // a fixed tile size
        {Box{0, 0, 700, 900}, 1, 0, 0, 30, false},    // mean mode
        {Box{0, 0, 64, 48}, 4, 16, 9, 3, true},
    };
    for (const Case& c : cases) {
        const std::vector<Box> used(static_cast<std::size_t>(c.warps), c.patch);
        const std::int64_t need =
            geom::smallestWorkingBudget(c.patch, c.group, c.tileSize, c.halo, used, c.trial);
        EXPECT_TRUE(works(c.patch, c.group, c.tileSize, c.halo, used, c.trial, need)) << c.patch.str();
        EXPECT_FALSE(works(c.patch, c.group, c.tileSize, c.halo, used, c.trial, need - 1)) << c.patch.str();
    }
}

TEST(MemoryBudgetMinimum, ErrorNamesTheSmallestBudget) {
    const Box patch{0, 0, 1536, 1536};
    const std::vector<Box> used(12, patch);
    const std::int64_t budget = 16LL << 20;
    const geom::TilePlan plan = geom::planTiles(patch, 1, 0, 14, 12, budget);
    const std::int64_t need = geom::smallestWorkingBudget(patch, 1, 0, 14, used, true);
    EXPECT_GT(need, budget);
    try {
        (void)geom::checkedPatchBudget(patch, plan, 1, 0, used, true, budget, "p000");
        ADD_FAILURE() << "16 MiB accepted for 12 x 1536^2";
    } catch (const ConfigError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("memory.max_per_rank = 16.0 MiB"), std::string::npos) << what;
        EXPECT_NE(what.find("the smallest memory.max_per_rank that works for patch p000 is " +
                            geom::formatByteSize(need) + " (" + std::to_string(need) + " bytes)"),
                  std::string::npos)
            << what;
    }
}

TEST(MemoryBudgetMinimum, NoTinyTilesUnderAnImpossibleBudget) {
    // The gathered patch alone (14 B/px) does not fit in 16 MiB: the 9,216 tiles of 16 px.
    const Box patch{0, 0, 1536, 1536};
    EXPECT_TRUE(geom::budgetCannotWork(patch, 16LL << 20));
    const geom::TilePlan one = geom::planTiles(patch, 1, 0, 14, 12, 16LL << 20);
    EXPECT_EQ(one.tiles.size(), 1U);
    const geom::TilePlan group = geom::planTiles(patch, 4, 0, 14, 12, 16LL << 20);
    EXPECT_GT(group.tileSize, 16);
    // A budget that can work still shrinks the tiles as before.
    EXPECT_FALSE(geom::budgetCannotWork(patch, 36LL << 20));
    const geom::TilePlan fits = geom::planTiles(patch, 1, 0, 14, 12, 36LL << 20);
    EXPECT_LT(fits.tileSize, 1536);
    EXPECT_LE(geom::tilePlanBytes(patch, fits.tileSize, 14, 12), 36LL << 20);
}

TEST(MemoryBudgetMinimum, WeightsPassNamesItsOwnMinimum) {
    const Box patch{0, 0, 512, 512};
    const std::int64_t need = geom::weightsSampleBytes(patch) + 512 * geom::kWeightsChunkBytesPerPixel;
    EXPECT_EQ(geom::weightsChunkRows(patch, need), 1);
    try {
        (void)geom::weightsChunkRows(patch, need - 1);
        ADD_FAILURE() << "one byte less accepted";
    } catch (const ConfigError& e) {
        EXPECT_NE(
            std::string(e.what()).find("the weights pass alone needs at least " + geom::formatByteSize(need) +
                                       " (" + std::to_string(need) + " bytes)"),
            std::string::npos)
            << e.what();
    }
}
