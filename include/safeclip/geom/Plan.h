#pragma once
/// @file Plan.h  Pure work planning: row chunks under a memory budget, tiles with halos, and
/// deterministic assignment of work items to ranks. No MPI, no I/O.
#include <cstdint>
#include <string>
#include <vector>

#include "safeclip/kernel/Box.h"

namespace safeclip::geom {

using kernel::Box;

/// Parse a byte size such as "512MiB", "2GiB", "1000000", "64 MB".
/// @throws ConfigError naming `what` on a malformed or non-positive value.
std::int64_t parseByteSize(const std::string& text, const std::string& what);
std::string formatByteSize(std::int64_t bytes);

/// Rows per chunk so that `nWarps` warps of `box.width` columns at `bytesPerPixelPerWarp`, plus
/// `bytesPerPixelFixed` for the outputs, fit in `budgetBytes`. Returns >= 1 row.
/// @throws ConfigError when even one row does not fit (message gives the minimum budget).
int rowsPerChunk(const Box& box, int nWarps, std::int64_t bytesPerPixelPerWarp,
                 std::int64_t bytesPerPixelFixed, std::int64_t budgetBytes);

/// Row chunks [y0, y0+rows) covering box, each `rows` high except possibly the last.
std::vector<Box> rowChunks(const Box& box, int rows);

/// Tiles of `tileSize` (square, clipped to box), row-major.
std::vector<Box> tiles(const Box& box, int tileSize);

/// Deterministic balanced assignment: items with costs -> rank per item, for nRanks ranks.
/// Greedy longest-processing-time with ties broken by index, so every rank computes the same plan.
std::vector<int> assignToRanks(const std::vector<double>& costs, int nRanks);

/// Tiles of one patch and their owners within the patch's group.
struct TilePlan {
    int tileSize = 0;
    int halo = 0;
    std::vector<Box> tiles;       ///< valid boxes, row-major
    std::vector<int> owner;       ///< group rank per tile (balanced by tile-plus-halo area)
    std::int64_t fixedBytes = 0;  ///< per rank: geom::tilePlanFixedBytes (trial tile+halo or gathered patch)
};

/// Tile a patch for a group of `groupSize` ranks. tileSize > 0 is used as given; 0 means the whole
/// patch for one rank or about two tiles per rank (a multiple of 16), shrunk until the fixed arrays
/// plus 8 rows of chunk buffers for nWarps warps fit in budgetBytes (with `compareWarp`, also the
/// largest cw_compare tile plus halo: geom::compareWarpTilePlanBytes). Pure: every rank gets the
/// same plan; the run's "budget" and "setup" stages and `safeclip plan` all call it.
TilePlan planTiles(const Box& patch, int groupSize, int tileSize, int halo, int nWarps,
                   std::int64_t budgetBytes, bool compareWarp = false);

/// Ranks split into groups, one group per patch at a time: with nPatches >= nRanks every rank is
/// its own group and owns whole patches (no halo overhead, no communication); with fewer patches
/// than ranks there are nPatches groups and a group's ranks share its patch's tiles.
struct GroupPlan {
    int nGroups = 1;
    std::vector<int> groupOfRank;   ///< rank -> group (rank % nGroups)
    std::vector<int> groupOfPatch;  ///< patch -> group (assignToRanks over groups by cost)
};
GroupPlan planGroups(const std::vector<double>& patchCosts, int nRanks);

}  // namespace safeclip::geom
