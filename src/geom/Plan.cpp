#include "safeclip/geom/Plan.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "safeclip/geom/MemoryBudget.h"
#include "safeclip/kernel/Error.h"

namespace safeclip::geom {

std::int64_t parseByteSize(const std::string& text, const std::string& what) {
    std::size_t i = 0;
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i])) != 0) {
        ++i;
    }
    const std::size_t start = i;
    while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) != 0 || text[i] == '.')) {
        ++i;
    }
    if (i == start) {
        throw ConfigError(what + ": '" + text + "' is not a byte size (e.g. 512MiB, 2GiB)");
    }
    double number = 0;
    try {
        number = std::stod(text.substr(start, i - start));
    } catch (const std::exception&) {
        throw ConfigError(what + ": '" + text + "' is not a byte size (e.g. 512MiB, 2GiB)");
    }
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i])) != 0) {
        ++i;
    }
    std::string unit = text.substr(i);
    while (!unit.empty() && std::isspace(static_cast<unsigned char>(unit.back())) != 0) {
        unit.pop_back();
    }
    double mult = 0;
    if (unit.empty() || unit == "B") {
        mult = 1;
    } else if (unit == "KiB" || unit == "K" || unit == "k") {
        mult = 1024.0;
    } else if (unit == "MiB" || unit == "M") {
        mult = 1024.0 * 1024.0;
    } else if (unit == "GiB" || unit == "G") {
        mult = 1024.0 * 1024.0 * 1024.0;
    } else if (unit == "TiB" || unit == "T") {
        mult = 1024.0 * 1024.0 * 1024.0 * 1024.0;
    } else if (unit == "kB" || unit == "KB") {
        mult = 1e3;
    } else if (unit == "MB") {
        mult = 1e6;
    } else if (unit == "GB") {
        mult = 1e9;
    } else if (unit == "TB") {
        mult = 1e12;
    } else {
        throw ConfigError(what + ": unknown unit '" + unit + "' in '" + text +
                          "' (use B, KiB, MiB, GiB, TiB, kB, MB, GB)");
    }
    const double bytes = number * mult;
    if (!(bytes >= 1) || bytes > 9.0e18) {
        throw ConfigError(what + ": '" + text + "' must be a positive byte size");
    }
    return static_cast<std::int64_t>(bytes);
}

std::string formatByteSize(std::int64_t bytes) {
    char buf[64];
    const double b = static_cast<double>(bytes);
    if (b >= 1024.0 * 1024.0 * 1024.0) {
        std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024.0 * 1024.0));
    } else if (b >= 1024.0 * 1024.0) {
        std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1024.0 * 1024.0));
    } else if (b >= 1024.0) {
        std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
    } else {
        std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(bytes));
    }
    return buf;
}

int rowsPerChunk(const Box& box, int nWarps, std::int64_t bytesPerPixelPerWarp,
                 std::int64_t bytesPerPixelFixed, std::int64_t budgetBytes) {
    const std::int64_t perRow =
        static_cast<std::int64_t>(box.width) *
        (static_cast<std::int64_t>(nWarps) * bytesPerPixelPerWarp + bytesPerPixelFixed);
    if (perRow <= 0) {
        return std::max(1, box.height);
    }
    if (perRow > budgetBytes) {
        throw ConfigError("memory.max_per_rank = " + formatByteSize(budgetBytes) +
                          " cannot hold one row of " + std::to_string(nWarps) + " warps of width " +
                          std::to_string(box.width) + " (needs at least " + formatByteSize(perRow) + ")");
    }
    const std::int64_t rows = budgetBytes / perRow;
    return static_cast<int>(std::clamp<std::int64_t>(rows, 1, std::max(1, box.height)));
}

std::vector<Box> rowChunks(const Box& box, int rows) {
    std::vector<Box> out;
    if (box.empty()) {
        return out;
    }
    rows = std::max(1, rows);
    for (int y = box.y0; y < box.y1(); y += rows) {
        out.push_back(box.rows(y, y + rows));
    }
    return out;
}

std::vector<Box> tiles(const Box& box, int tileSize) {
    std::vector<Box> out;
    if (box.empty()) {
        return out;
    }
    tileSize = std::max(1, tileSize);
    for (int y = box.y0; y < box.y1(); y += tileSize) {
        for (int x = box.x0; x < box.x1(); x += tileSize) {
            out.push_back(box.intersect(Box{x, y, tileSize, tileSize}));
        }
    }
    return out;
}

std::vector<int> assignToRanks(const std::vector<double>& costs, int nRanks) {
    if (nRanks < 1) {
        throw InvalidParameter("assignToRanks: nRanks must be >= 1");
    }
    std::vector<std::size_t> order(costs.size());
    std::iota(order.begin(), order.end(), 0);
    // Largest cost first; ties by index (stable) so the plan is the same on every rank.
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return costs[a] > costs[b]; });
    std::vector<double> load(static_cast<std::size_t>(nRanks), 0.0);
    std::vector<int> rankOf(costs.size(), 0);
    for (std::size_t item : order) {
        const auto best = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
        rankOf[item] = best;
        load[static_cast<std::size_t>(best)] += costs[item];
    }
    return rankOf;
}

TilePlan planTiles(const Box& patch, int groupSize, int tileSize, int halo, int nWarps,
                   std::int64_t budgetBytes, bool compareWarp) {
    TilePlan plan;
    plan.halo = halo;
    int t = tileSize;
    // Peak of the trial or the final stage plus a few rows of chunk buffers (geom/MemoryBudget.h); in
    // comparewarp mode also the largest cw_compare tile plus halo.
    auto cost = [&](int side) {
        return compareWarp ? compareWarpTilePlanBytes(patch, side, halo, nWarps)
                           : tilePlanBytes(patch, side, halo, nWarps);
    };
    if (t <= 0) {
        if (groupSize <= 1) {
            t = std::max(patch.width, patch.height);
        } else {
            const double side = std::sqrt(static_cast<double>(patch.area()) / (2.0 * groupSize));
            t = std::max(32, (static_cast<int>(std::ceil(side)) + 15) / 16 * 16);
        }
        // Under a budget no tiling can meet (the gathered patch alone is too big) smaller tiles would
        // only make the run slower before it fails: keep the size (the stages report the budget).
        while (t > 16 && cost(t) > budgetBytes && !budgetCannotWork(patch, budgetBytes)) {
            t = std::max(16, (t * 3 / 4) / 16 * 16);  // strictly decreasing: always ends
        }
    }
    plan.tileSize = std::max(1, t);
    plan.tiles = tiles(patch, plan.tileSize);
    std::vector<double> costs;
    for (const Box& tile : plan.tiles) {
        costs.push_back(static_cast<double>(tile.grown(halo).intersect(patch).area()));
    }
    plan.owner = assignToRanks(costs, std::max(1, groupSize));
    const Box first = plan.tiles.empty() ? patch : plan.tiles.front();
    plan.fixedBytes = tilePlanFixedBytes(patch, first, halo);
    return plan;
}

GroupPlan planGroups(const std::vector<double>& patchCosts, int nRanks) {
    if (nRanks < 1) {
        throw InvalidParameter("planGroups: nRanks must be >= 1");
    }
    GroupPlan plan;
    plan.nGroups =
        static_cast<int>(std::clamp<std::size_t>(patchCosts.size(), 1, static_cast<std::size_t>(nRanks)));
    for (int r = 0; r < nRanks; ++r) {
        plan.groupOfRank.push_back(r % plan.nGroups);
    }
    plan.groupOfPatch = assignToRanks(patchCosts, plan.nGroups);
    return plan;
}

}  // namespace safeclip::geom
