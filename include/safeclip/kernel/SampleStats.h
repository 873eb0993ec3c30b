#pragma once
/// @file SampleStats.h  Statistics of one flat sample, for the warp weights (spec §3.4): exact
/// quantiles without reordering the sample, and the unweighted MEANCLIP.
#include <cstdint>
#include <span>
#include <vector>

namespace safeclip::kernel {

/// Unweighted MEANCLIP of a NaN-free sample (spec §4.2 with all weights 1); used for the warp weights
/// (§3.4). Returns NaN for an empty sample. Quartiles by exact selection (sampleQuantiles); the sums
/// run in sample order over 8 interleaved partial sums (deviation from afw's single sequential
/// sum: the last bits of s², and so of the clip bound, can differ; the result is deterministic).
/// @throws InvalidParameter unless sigmaClip > 0 and clipIter >= 1
double meanClipUnweighted(std::span<const float> values, double sigmaClip, int clipIter);

/// Unweighted STDEVCLIP: the same clipping as meanClipUnweighted, then the square root of the
/// debiased s² of the last iteration's selection (afw STDEVCLIP with StatisticsControl defaults
/// when sigmaClip = 3, clipIter = 3). NaN for an empty sample or a selection of one value.
/// @throws InvalidParameter unless sigmaClip > 0 and clipIter >= 1
double stdevClipUnweighted(std::span<const float> values, double sigmaClip, int clipIter);

/// afw percentiles (linear interpolation at fractional rank q(n-1)) of a NaN-free sample, one per q,
/// without reordering it. Exact: small samples are selected in a copy; large ones are bracketed
/// by a regular subsample, counted in one vectorised pass and selected among the few values
/// inside the brackets (a two-pass key histogram when a bracket misses). NaN for an empty sample.
/// @throws InvalidParameter for q outside [0, 1]
std::vector<double> sampleQuantiles(std::span<const float> values, std::span<const double> qs);

/// Upper bound of the temporary memory sampleQuantiles takes for a sample of n values (three
/// quantiles or fewer), for memory budgets.
std::int64_t sampleQuantilesScratchBytes(std::int64_t n);

}  // namespace safeclip::kernel
