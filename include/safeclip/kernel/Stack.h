#pragma once
/// @file Stack.h  The per-pixel stacker (afw statisticsStack + Statistics), spec §4.
/// Memory: per call, O(number of inputs) scratch; no per-pixel allocation.
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "safeclip/kernel/Image.h"

namespace safeclip::kernel {

enum class Statistic { Mean, MeanClip };

/// Stacking parameters (afw StatisticsControl + statisticsStack arguments).
struct StackControl {
    Statistic statistic = Statistic::Mean;
    double sigmaClip = 1.5;          ///< SafeClipAssembleCoaddConfig.sigmaClip
    int clipIter = 3;                ///< SafeClipAssembleCoaddConfig.clipIter
    MaskPixel andMask = 0;           ///< A: inputs with any of these bits are rejected
    MaskPixel clippedBit = 0;        ///< Cb: set where MEANCLIP rejected an input
    MaskPixel noGoodPixelsMask = 0;  ///< NO_DATA: replaces the mask where nothing is accepted
    /// (src, dst): if any input (all N) has src and NMASKED > 0, OR dst into the output mask.
    std::vector<std::pair<MaskPixel, MaskPixel>> maskMap;
    /// (single bit, threshold t_b): OR the bit if rejected weight carrying it / total > t_b.
    std::vector<std::pair<MaskPixel, double>> propagationThresholds;
    bool calcErrorFromInputVariance = true;
    /// @throws InvalidParameter
    void validate() const;
};

/// Result at one pixel.
struct PixelResult {
    double value = 0;     ///< μ (NaN when nothing accepted)
    double variance = 0;  ///< V
    MaskPixel mask = 0;
    int nClipped = 0;  ///< n0 - |S_K| (MEANCLIP only)
    int nMasked = 0;   ///< N - n0
};

/// Reusable scratch (avoids per-pixel allocation).
struct StackScratch {
    std::vector<int> accepted;
    std::vector<double> sorted;
};

/// Stack one pixel from N inputs (spec §4.1–4.3).
PixelResult stackPixel(std::span<const float> x, std::span<const MaskPixel> m, std::span<const float> v,
                       std::span<const float> w, const StackControl& ctrl, StackScratch& scratch);

/// Counters of one stackRegion call.
struct StackResult {
    std::int64_t nPixels = 0;
    std::int64_t nClippedPixels = 0;  ///< pixels with NCLIPPED > 0
    std::int64_t nNoData = 0;         ///< pixels with nothing accepted
};

/// Stack `region` (must lie inside every input's and `out`'s box), writing float32 results in place
/// into `out` (afw statisticsStack(out, images, ...)). inputs[i] has weight weights[i].
StackResult stackRegion(const std::vector<const MaskedImage*>& inputs, std::span<const float> weights,
                        const StackControl& ctrl, const Box& region, MaskedImage& out);

/// Two stacks of the same inputs in one pass (e.g. the trial MEAN and MEANCLIP, spec §5): the
/// results, outputs and counters are exactly those of stackRegion(ctrlA, outA) and
/// stackRegion(ctrlB, outB); the accepted set and the input reads are shared when both controls
/// have the same andMask.
std::pair<StackResult, StackResult> stackRegionPair(const std::vector<const MaskedImage*>& inputs,
                                                    std::span<const float> weights, const StackControl& ctrlA,
                                                    const StackControl& ctrlB, const Box& region,
                                                    MaskedImage& outA, MaskedImage& outB);

/// Interpolated quantile at fractional rank q*(n-1) of `values` (reorders values; n > 0).
double quantile(std::vector<double>& values, double q);

}  // namespace safeclip::kernel
