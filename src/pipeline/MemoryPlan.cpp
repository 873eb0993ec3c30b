#include "safeclip/pipeline/MemoryPlan.h"

#include <algorithm>

#include "safeclip/geom/Plan.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/SampleStats.h"

namespace safeclip::pipeline {

int weightsChunkRows(const kernel::Box& box, std::int64_t budget) {
    // The sample (4 B/px of the patch) and the quantile selection's scratch, plus row chunks
    // of VARIANCE and MASK (8 B/px).
    const std::int64_t sampleBytes = box.area() * 4 + kernel::sampleQuantilesScratchBytes(box.area());
    if (budget - sampleBytes < static_cast<std::int64_t>(box.width) * 8) {
        throw ConfigError("memory.max_per_rank = " + geom::formatByteSize(budget) +
                          " cannot hold one warp's variance sample for the weights (" +
                          geom::formatByteSize(sampleBytes) + " for " + box.str() + ")");
    }
    const std::int64_t rowBytes = static_cast<std::int64_t>(box.width) * 8;
    return static_cast<int>(std::clamp<std::int64_t>(
        std::min<std::int64_t>((budget - sampleBytes) / rowBytes, kChunkCap / rowBytes), 1, box.height));
}

int stackChunkRows(const kernel::Box& box, int nWarps, std::int64_t fixed, std::int64_t budget,
                   const std::string& patchName, int tileSize, const kernel::Box& patchBox) {
    const std::int64_t avail = budget - fixed;
    if (avail <= 0) {
        throw ConfigError("memory.max_per_rank = " + geom::formatByteSize(budget) +
                          " is smaller than the fixed arrays of patch " + patchName + " (" +
                          geom::formatByteSize(fixed) + " for tiles of " + std::to_string(tileSize) +
                          " px and the gathered patch " + patchBox.str() + ")");
    }
    const std::int64_t capRows =
        std::max<std::int64_t>(1, kChunkCap / (static_cast<std::int64_t>(nWarps) * 12 * std::max(1, box.width)));
    return static_cast<int>(std::min<std::int64_t>(geom::rowsPerChunk(box, nWarps, 12, 24, avail), capRows));
}

}  // namespace safeclip::pipeline
