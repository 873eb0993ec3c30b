#pragma once
/// @file ScaleVariance.h  Variance-plane rescaling factor of a (PSF-matched) warp: meas_algorithms
/// ScaleVarianceTask as CompareWarpAssembleCoaddTask runs it (spec §10 step 2b; issue 15 item 3).
///
/// Why: a warped or convolved image's variance plane ignores the covariance the resampling /
/// convolution created, so image/sqrt(variance) of blank sky does not have unit scatter. The task
/// measures the scatter and returns the factor the variance plane must be multiplied by. This
/// function only computes the factor; the caller multiplies (upstream multiplies in place).
///
/// Algorithm (upstream names in parentheses):
///  1. Background (subtractedBackground: SubtractBackgroundTask.fitBackground with binSize 32,
///     statisticsProperty MEANCLIP, ignoredPixelMask = the maskPlanes below):
///     - the box (W × H) is cut into nx = W/binSize + 1 by ny = H/binSize + 1 cells (upstream's
///       counts), cell i spanning columns [floor(i·W/nx), floor((i+1)·W/nx)) (and the same in y);
///       its centre is the mean of its first and last column;
///     - each cell's value is the unweighted MEANCLIP (spec §4.2: first pass median ± σ·0.7413·IQR,
///       then mean ± σ·stdev; sigmaClip 3, clipIter 3, afw StatisticsControl defaults) of its good
///       pixels: mask & ignoreBits == 0 and a finite image value (meanClipUnweighted); a cell without
///       any is "empty";
///     - the background at a pixel: piecewise-linear interpolation along y through the non-empty
///       cells of its cell column (linear extrapolation beyond the first/last centre from the end
///       segment, a constant with one cell), giving one value per cell column at that row; then
///       the same along x through the cell columns that have at least one non-empty cell. No
///       non-empty cell at all: background 0.
///  2. Good pixels (isGood): mask & ignoreBits == 0, finite image, finite variance, variance > 0.
///     Fewer than 2: factor 1 (upstream returns 1.0; method NotEnoughData).
///  3. Pixel-based (pixelBased): snr = (image − background)/sqrt(variance) over the good pixels;
///     factor = (0.74·(Q3 − Q1))² of snr.
///  4. If that exceeds `limit` (10): image-based (imageBased): factor =
///     (0.74·(Q3 − Q1) of (image − background) / sqrt(median of variance))²; if that also exceeds
///     the limit the result is a failure (upstream raises RuntimeError "Variance rescaling factor
///     exceeds configured limit"; CompareWarp catches it, warns and leaves the variance unscaled):
///     ok = false, factor = 1 (leave the variance as it is), both estimates reported.
///  Quantiles: numpy.percentile's default = linear interpolation at fractional rank q·(n−1), the
///  same convention as afw's (spec §4.2), exact (sampleQuantiles: exact order statistics, no
///  sampling); the median of the variance is the q = 0.5 quantile (numpy.median: the mean of the two
///  middle values for even n). The snr and background-subtracted values are computed in double and
///  stored as float (upstream: float32 arrays).
///
/// Deviations from upstream:
///  - background interpolation: upstream uses afw Background with AKIMA_SPLINE (useApprox False,
///    undersampleStyle REDUCE_INTERP_ORDER); safeclip interpolates linearly (bilinear between cell
///    centres, linear extrapolation to the edges). On the 32-px scale the difference is small
///    compared with the noise; the factor uses only quartiles of the residual, which a smooth
///    background error barely moves. afw's exact cell layout/centre rounding may differ by < 1 px.
///  - afw computes bin statistics with isNanSafe = False (a NaN in a bin poisons it); safeclip
///    skips non-finite pixels.
///  - isGood follows the meas_algorithms scaleVariance.py that was read (2022 copyright): mask,
///    finite image, finite variance > 0, in both estimators; an older version may differ in
///    these tests (not checked against pipe_tasks 5ad17f2c's dependency pin).
///  - the factor is returned instead of applied; failure is a status instead of an exception.
///
/// The factor is a statistic of the whole warp (quartiles over all good pixels): a tiled pipeline
/// must feed it the whole PSF-matched warp (or compute exact quantiles across tiles), not a tile.
/// Deterministic: fixed loops, exact quantiles. Memory: one float per good pixel plus the
/// quantile scratch (sampleQuantilesScratchBytes) and the cell grid.
#include <cstdint>
#include <limits>

#include "safeclip/kernel/Image.h"

namespace safeclip::kernel {

/// ScaleVarianceConfig with the background's settings.
struct ScaleVarianceControl {
    int binSize = 32;          ///< background.binSize (setDefaults)
    double limit = 10.0;       ///< limit: maximum variance scaling value to permit
    double bgSigmaClip = 3.0;  ///< MEANCLIP σ of the cell statistic (afw StatisticsControl default)
    int bgClipIter = 3;        ///< MEANCLIP iterations of the cell statistic (afw default)
    double iqrToStdev = 0.74;  ///< upstream's 0.74 (not afw's 0.7413) in both estimators
    /// @throws InvalidParameter for binSize < 1, limit not > 0 (or NaN), bad clip settings.
    void validate() const;
};

enum class ScaleVarianceMethod {
    PixelBased,     ///< the pixel-based factor was within the limit
    ImageBased,     ///< the pixel-based factor exceeded the limit; the image-based one did not
    Failed,         ///< both exceeded the limit (upstream RuntimeError): factor 1, ok false
    NotEnoughData,  ///< fewer than 2 good pixels: factor 1 (upstream)
};

struct ScaleVarianceResult {
    double factor = 1.0;  ///< multiply the variance plane by this (1 on failure)
    bool ok = true;       ///< false exactly when method == Failed
    ScaleVarianceMethod method = ScaleVarianceMethod::NotEnoughData;
    double pixelFactor = 1.0;  ///< the pixel-based estimate (1 without data)
    double imageFactor =
        std::numeric_limits<double>::quiet_NaN();  ///< the image-based estimate, NaN when it was not needed
    std::int64_t nGood = 0;                        ///< good pixels (step 2)
};

/// Background model of step 1 on image.box(). `ignoreBits`: mask bits of pixels the cell statistics
/// skip. @throws InvalidParameter for mismatched boxes or bad settings.
ImageF fitBackground(const ImageF& image, const MaskImage& mask, MaskPixel ignoreBits,
                     const ScaleVarianceControl& ctrl = {});

/// Steps 1–4 on `mi`. `ignoreBits` = DETECTED | DETECTED_NEGATIVE | BAD | SAT | NO_DATA | INTRP
/// (upstream maskPlanes, also the background's ignoredPixelMask). `mi` is not modified.
/// @throws InvalidParameter for mismatched planes or bad settings.
ScaleVarianceResult scaleVarianceFactor(const MaskedImage& mi, MaskPixel ignoreBits,
                                        const ScaleVarianceControl& ctrl = {});

}  // namespace safeclip::kernel
