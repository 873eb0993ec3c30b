// Tiles computed on different ranks and gathered to the writer rank equal the serial result.
#include <gtest/gtest.h>

#include <boost/mpi/collectives.hpp>
#include <boost/serialization/vector.hpp>
#include <cmath>
#include <cstring>

#include "safeclip/geom/Plan.h"
#include "safeclip/parallel/Comm.h"
#include "safeclip/parallel/TileGather.h"

using namespace safeclip;
using kernel::Box;

namespace {

/// A deterministic pixel pattern (including NaN and inf) so that any misplaced tile shows.
void fillPattern(kernel::MaskedImage& mi, kernel::ImageU16& n) {
    const Box b = mi.box();
    for (int y = b.y0; y < b.y1(); ++y) {
        for (int x = b.x0; x < b.x1(); ++x) {
            const float v = static_cast<float>(std::sin(0.37 * x) * 100.0 + y * 0.25);
            mi.image(x, y) = (x + y) % 97 == 0 ? std::nanf("") : v;
            mi.variance(x, y) = (x * 7 + y) % 89 == 0 ? INFINITY : 1.0F + 0.001F * static_cast<float>(x);
            mi.mask(x, y) = (x ^ y) & 0x1ff;
            n(x, y) = static_cast<std::uint16_t>((x + 3 * y) % 17);
        }
    }
}

}  // namespace

TEST(TileGather, GatheredTilesEqualSerialPatch) {
    parallel::Comm comm;
    const Box patch{-37, 1000, 203, 151};
    kernel::MaskedImage whole(patch);
    kernel::ImageU16 wholeN(patch);
    fillPattern(whole, wholeN);

    for (int tileSize : {16, 50, 64, 300}) {
        const auto tiles = geom::tiles(patch, tileSize);
        std::vector<double> costs;
        for (const Box& t : tiles) {
            costs.push_back(static_cast<double>(t.area()));
        }
        const auto owner = geom::assignToRanks(costs, comm.size());
        std::vector<parallel::Tile> mine;
        for (std::size_t i = 0; i < tiles.size(); ++i) {
            if (owner[i] != comm.rank()) {
                continue;
            }
            parallel::Tile t{kernel::MaskedImage(tiles[i]), kernel::ImageU16(tiles[i])};
            fillPattern(t.pixels, t.nImage);
            mine.push_back(std::move(t));
        }
        const int root = comm.size() - 1;  // not always rank 0
        kernel::MaskedImage out;
        kernel::ImageU16 outN;
        if (comm.rank() == root) {
            out = kernel::MaskedImage(patch);
            outN = kernel::ImageU16(patch);
        }
        parallel::gatherTiles(comm, root, mine, out, outN);
        if (comm.rank() == root) {
            EXPECT_EQ(0, std::memcmp(out.image.data().data(), whole.image.data().data(),
                                     4 * whole.image.data().size()))
                << "tile size " << tileSize;
            EXPECT_EQ(0, std::memcmp(out.variance.data().data(), whole.variance.data().data(),
                                     4 * whole.variance.data().size()));
            EXPECT_EQ(out.mask.data(), whole.mask.data());
            EXPECT_EQ(outN.data(), wholeN.data());
        }
    }
}

TEST(Comm, AgreeIsFalseWhenOneRankFails) {
    parallel::Comm comm;
    EXPECT_TRUE(comm.agree(true));
    EXPECT_FALSE(comm.agree(comm.rank() != comm.size() - 1));
    EXPECT_EQ(comm.sum(1), comm.size());
    EXPECT_EQ(comm.max(static_cast<double>(comm.rank())), static_cast<double>(comm.size() - 1));
}

TEST(Plan, EveryRankComputesTheSameAssignment) {
    parallel::Comm comm;
    std::vector<double> costs{5, 1, 9, 9, 2, 7, 3, 3, 8};
    const auto owner = geom::assignToRanks(costs, comm.size());
    std::vector<int> fromRoot = owner;
    boost::mpi::broadcast(comm.raw(), fromRoot, 0);
    EXPECT_EQ(owner, fromRoot);
}
