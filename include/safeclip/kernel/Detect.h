#pragma once
/// @file Detect.h  Footprint detection on a (difference) masked image, spec §6.1:
/// separable Gaussian smoothing, per-pixel n-sigma thresholds of both polarities, 8-connected
/// footprints of >= minPixels, disk growth, polarity merge.
/// Memory: 2 float planes of the input box (smoothed image, smoothed variance) + 1 temporary.
///
/// Without smoothing (DetectControl::doSmooth = false; SourceDetectionTask.detectFootprints with
/// doSmooth=False, as CompareWarpAssembleCoaddTask runs it on each warp − template difference,
/// spec §10 step 4): the threshold is applied per pixel to image/sqrt(variance) over the whole
/// input box (no kernel, no invalid border: kernelHalfWidth() is 0), then the same connected
/// components, minPixels, disk growth int(nSigmaToGrow·psfSigma + 0.5) and polarity merge. psfSigma
/// is then used only for the growth radius. No smoothed planes are allocated.
#include <vector>

#include "safeclip/kernel/Image.h"
#include "safeclip/kernel/SpanSet.h"

namespace safeclip::kernel {

enum class Polarity { Positive, Negative, Both };

/// Detection parameters (SourceDetectionConfig as set by SafeClipAssembleCoaddConfig.setDefaults).
struct DetectControl {
    double psfSigma = 2.0;        ///< smoothing σ in pixels (spec §0.3: from config or warp headers)
    double thresholdValue = 2.0;  ///< clipDetection.thresholdValue (pixel_stdev)
    Polarity polarity = Polarity::Both;
    double nSigmaToGrow = 2.0;     ///< clipDetection.nSigmaToGrow; grow = int(nSigmaToGrow*σ + 0.5)
    int minPixels = 4;             ///< clipDetection.minPixels (before growth)
    double nSigmaForKernel = 7.0;  ///< full kernel width in σ (unused when !doSmooth)
    /// SourceDetectionTask doSmooth: smooth with the PSF Gaussian before thresholding (SafeClip,
    /// spec §6.1) or threshold the raw pixels (CompareWarp, spec §10 step 4).
    bool doSmooth = true;
    /// @throws InvalidParameter
    void validate() const;
    /// Kernel half-width r = (K-1)/2 with K = 2*floor(floor(nSigmaForKernel*σ + 0.5)/2) + 1;
    /// 0 when !doSmooth.
    [[nodiscard]] int kernelHalfWidth() const;
    /// Growth radius int(nSigmaToGrow*σ + 0.5).
    [[nodiscard]] int growRadius() const;
};

/// Normalised 1-D Gaussian taps g(t), t = -r..r (sum 1), r from DetectControl::kernelHalfWidth().
std::vector<double> gaussianKernel1D(double sigma, double nSigmaForKernel);

/// Smoothed planes: S.img = (g⊗g) * img, S.var = (g⊗g)² * var. Only `valid` (the input box shrunk
/// by r) holds results; pixels outside it are NaN. NaN anywhere under the kernel gives NaN.
struct Smoothed {
    ImageF image;
    ImageF variance;
    Box valid;
};
Smoothed smoothImage(const ImageF& image, const ImageF& variance, double sigma, double nSigmaForKernel);

/// Pixels of `valid` where pol*S.img >= threshold*sqrt(S.var) (NaN/inf never pass).
SpanSet thresholdSpans(const Smoothed& s, double threshold, Polarity pol);

/// Full detection (spec §6.1.3–8) on image/variance (same box): smooth (if ctrl.doSmooth),
/// threshold each polarity, 8-connected components with >= minPixels pixels, grow each polarity by
/// the disk and merge touching footprints (clipped to the full box), then union both polarities and
/// re-segment. Returns footprints ordered by their first span.
std::vector<SpanSet> detectFootprints(const ImageF& image, const ImageF& variance, const DetectControl& ctrl);

/// detectTemplate of CompareWarp (spec §10 step 1; SourceDetectionTask with thresholdType "stdev"):
/// smooth `image` with the Gaussian (sigma, nSigmaForKernel; as smoothImage), threshold =
/// thresholdValue × STDEVCLIP (statsSigma, statsIter: afw StatisticsControl defaults 3, 3) of the
/// finite smoothed pixels of the valid region in row order; positive polarity, the valid pixels with
/// S >= threshold (compared in double); minPixels 1; Manhattan growth int(nSigmaToGrow·sigma + 0.5)
/// clipped to the image box. The whole patch in one call: the threshold is a statistic of it.
struct TemplateDetection {
    SpanSet footprints;  ///< union of the grown footprints
    double stdev = 0.0;  ///< STDEVCLIP of the smoothed template (NaN: no finite smoothed pixel)
    double threshold = 0.0;
};
TemplateDetection detectTemplate(const ImageF& image, double sigma, double nSigmaForKernel,
                                 double thresholdValue, double nSigmaToGrow, double statsSigma = 3.0,
                                 int statsIter = 3);

}  // namespace safeclip::kernel
