/// @file Ingest.cpp  `safeclip ingest`: real single-HDU exposures already resampled onto one common
/// pixel grid (e.g. SWarp output, DECam Community Pipeline InstCal cut-outs) -> afw-layout warps
/// (IMAGE, MASK with MP_* planes, VARIANCE, FLUXMAG0, PSFSIGMA, WCS) plus a one-patch manifest.
///
/// What a warp needs that such an exposure lacks, and how it is made here:
/// - VARIANCE: a CCD noise model from GAIN / RDNOISE / AVSKY, rescaled by one constant per file so
///   that it matches the noise actually measured in the background (see estimateVariance()); or,
///   without GAIN, the robust background variance as a constant.
/// - MASK: NO_DATA where the image is NaN, SAT at or above SATURATE, and DETECTED /
///   DETECTED_NEGATIVE from a per-exposure detection as a real single-epoch pipeline would do it
///   (spec §11.11: SafeClip can only clip a warp where that warp has DETECTED pixels).
/// - FLUXMAG0: from --zero-point, the --zero-point-key card, or equal scales (zero point 27).
/// - Cosmic rays (default; --no-cosmic-rays turns it off): found and repaired per frame as the
///   single-frame pipeline does before warping (pipe_tasks RepairTask.cosmicRay, run by
///   characterizeImage): CR plane cleared then set, pixels interpolated and INTRP set
///   (kernel::findCosmicRays; see repairCosmicRays() for where it runs and why).
///
/// Every input is checked (file, 2-D image, common grid, PSF width, zero point) before anything is
/// written, so a bad input leaves the output directory untouched.
#include "safeclip/app/Ingest.h"

#include <fitsio.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "safeclip/app/Logging.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/FitsFile.h"
#include "safeclip/io/Manifest.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/io/WarpValidation.h"
#include "safeclip/kernel/CosmicRays.h"
#include "safeclip/kernel/Detect.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/Image.h"
#include "safeclip/kernel/MaskDict.h"
#include "safeclip/kernel/SpanSet.h"

namespace safeclip::app {

namespace {

namespace fs = std::filesystem;
using kernel::Box;
using kernel::MaskPixel;

constexpr double kFwhmPerSigma = 2.35482;     ///< 2·sqrt(2·ln 2)
constexpr double kMadPerSigma = 1.4826;       ///< σ = 1.4826·MAD for a Gaussian
constexpr double kBackgroundCut = 3.0;        ///< background pixels: |img - median| < 3·σ_MAD
constexpr double kNSigmaForKernel = 7.0;      ///< smoothing kernel full width (SourceDetectionConfig)
constexpr double kNSigmaToGrow = 2.4;         ///< SourceDetectionConfig.nSigmaToGrow default
constexpr double kDefaultZeroPoint = 27.0;    ///< equal scales: every file gets FLUXMAG0 = 10^(0.4·27)
constexpr const char* kPatchName = "ingest";  ///< the one patch of the manifest

/// Header facts and the output name of one input, gathered before any pixel is read.
struct InputInfo {
    std::string path;
    int width = 0;
    int height = 0;
    std::optional<double> gain;       ///< e-/ADU
    std::optional<double> readNoise;  ///< e-
    std::optional<double> sky;        ///< AVSKY: sky level (ADU) subtracted from the image
    std::optional<double> saturate;   ///< ADU, on the un-subtracted scale
    double psfSigma = 0;              ///< pixels
    std::string psfSource;
    double zeroPoint = kDefaultZeroPoint;
    std::string zeroPointSource;
    std::string expName;                    ///< EXP_BN
    std::string filter;                     ///< FILTER
    std::optional<std::int64_t> visitCard;  ///< the visit id card (IngestOptions::visitKey)
    std::string visitCardName;
    std::vector<std::string> wcsCards;
    std::string outName;  ///< file name of the warp inside OUT
};

/// Keyword name of an 80-character card (columns 1-8, blanks trimmed).
std::string cardKey(const std::string& card) {
    std::string key = card.substr(0, std::min<std::size_t>(8, card.size()));
    while (!key.empty() && key.back() == ' ') {
        key.pop_back();
    }
    return key;
}

bool allDigits(const std::string& s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

/// True for a primary (unlettered) celestial-WCS keyword: CTYPEi, CRPIXi, CRVALi, CDELTi, CUNITi,
/// CDi_j, PCi_j, PVi_m, RADESYS, EQUINOX, WCSAXES, LONPOLE, LATPOLE. Alternate WCSs (CTYPE1A ...)
/// are not copied: the writer owns the "A" WCS that encodes xy0. IRAF's WCSDIM/WAT*/LTV*/LTM* are
/// not WCS cards.
bool isWcsKey(const std::string& key) {
    static const char* const kIndexed[] = {"CTYPE", "CRPIX", "CRVAL", "CDELT", "CUNIT"};
    for (const char* prefix : kIndexed) {
        const std::string p(prefix);
        if (key.size() > p.size() && key.compare(0, p.size(), p) == 0 && allDigits(key.substr(p.size()))) {
            return true;
        }
    }
    static const char* const kMatrix[] = {"CD", "PC", "PV"};
    for (const char* prefix : kMatrix) {
        const std::string p(prefix);
        if (key.size() > p.size() && key.compare(0, p.size(), p) == 0) {
            const std::string rest = key.substr(p.size());
            const auto us = rest.find('_');
            if (us != std::string::npos && allDigits(rest.substr(0, us)) && allDigits(rest.substr(us + 1))) {
                return true;
            }
        }
    }
    return key == "RADESYS" || key == "EQUINOX" || key == "WCSAXES" || key == "LONPOLE" || key == "LATPOLE";
}

/// File name stem without the FITS extensions (.fits, .fit, .fts, optionally followed by .fz/.gz).
std::string fitsStem(const std::string& path) {
    std::string name = fs::path(path).filename().string();
    auto stripSuffix = [&name](const char* suffix) {
        const std::string s(suffix);
        if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
            name.resize(name.size() - s.size());
            return true;
        }
        return false;
    };
    if (!stripSuffix(".fz")) {
        stripSuffix(".gz");
    }
    if (!stripSuffix(".fits") && !stripSuffix(".fit")) {
        stripSuffix(".fts");
    }
    return name;
}

/// A positive finite header value, or nothing; a present but non-positive value is an InputError.
std::optional<double> positiveCard(const io::FitsFile& f, const std::string& key) {
    const std::optional<double> v = f.readDouble(key);
    if (v && !(std::isfinite(*v) && *v > 0)) {
        throw InputError(f.path() + ": " + key + " = " + std::to_string(*v) + " is not a positive number");
    }
    return v;
}

/// Open one input, check that its primary HDU is a 2-D image, and read the header facts.
InputInfo readInputHeader(const std::string& path, const IngestOptions& opts) {
    io::FitsFile f(path, io::FitsFile::Mode::Read);
    f.moveToHdu(1);
    InputInfo info;
    info.path = path;
    int status = 0;
    int bitpix = 0;
    int naxis = 0;
    long naxes[3] = {0, 0, 0};
    fits_get_img_param(f.get(), 3, &bitpix, &naxis, naxes, &status);
    f.check(status, "read image size");
    if (naxis != 2 || naxes[0] <= 0 || naxes[1] <= 0) {
        throw InputError(path + ": not a 2-D image (primary HDU has NAXIS = " + std::to_string(naxis) +
                         "; ingest reads single-HDU images)");
    }
    if (naxes[0] > std::numeric_limits<int>::max() || naxes[1] > std::numeric_limits<int>::max()) {
        throw InputError(path + ": image too large");
    }
    info.width = static_cast<int>(naxes[0]);
    info.height = static_cast<int>(naxes[1]);

    info.gain = positiveCard(f, "GAIN");
    info.readNoise = f.readDouble("RDNOISE");
    if (info.readNoise && !(std::isfinite(*info.readNoise) && *info.readNoise >= 0)) {
        throw InputError(path + ": RDNOISE = " + std::to_string(*info.readNoise) +
                         " is not a non-negative number");
    }
    info.sky = f.readDouble("AVSKY");
    if (info.sky && !std::isfinite(*info.sky)) {
        throw InputError(path + ": AVSKY is not a finite number");
    }
    info.saturate = positiveCard(f, "SATURATE");

    if (opts.psfFwhm) {
        if (!(std::isfinite(*opts.psfFwhm) && *opts.psfFwhm > 0)) {
            throw ConfigError("ingest --fwhm: " + std::to_string(*opts.psfFwhm) +
                              " is not a positive number of pixels");
        }
        info.psfSigma = *opts.psfFwhm / kFwhmPerSigma;
        info.psfSource = "--fwhm";
    } else if (const auto fwhm = positiveCard(f, "FWHM")) {
        info.psfSigma = *fwhm / kFwhmPerSigma;
        info.psfSource = "FWHM card";
    } else {
        throw InputError(path +
                         ": no FWHM card and no --fwhm: the PSF width for per-exposure detection is unknown");
    }

    if (opts.zeroPoint) {
        info.zeroPoint = *opts.zeroPoint;
        info.zeroPointSource = "--zero-point";
    } else if (const auto zp = f.readDouble(opts.zeroPointKey)) {
        if (!std::isfinite(*zp)) {
            throw InputError(path + ": " + opts.zeroPointKey + " is not a finite number");
        }
        info.zeroPoint = *zp;
        info.zeroPointSource = opts.zeroPointKey + " card";
    } else {
        info.zeroPointSource = "";  // no zero point: decided across all inputs in ingest()
    }
    info.expName = f.readString("EXP_BN").value_or("");
    info.filter = f.readString("FILTER").value_or("");
    for (const std::string& key : opts.visitKey.empty() ? std::vector<std::string>{"EXPNUM", "VISIT"}
                                                        : std::vector<std::string>{opts.visitKey}) {
        if (const auto v = f.readInt(key)) {
            info.visitCard = *v;
            info.visitCardName = key;
            break;
        }
    }
    for (const std::string& card : f.readCards()) {
        if (isWcsKey(cardKey(card))) {
            info.wcsCards.push_back(card);
        }
    }
    // WCSAXES must precede every other WCS card (FITS WCS paper I); some inputs have PVi_m first.
    std::stable_partition(info.wcsCards.begin(), info.wcsCards.end(),
                          [](const std::string& card) { return cardKey(card) == "WCSAXES"; });
    return info;
}

/// Read the primary image as double (undefined integer pixels -> NaN) and convert to float32.
kernel::ImageF readPixels(const InputInfo& info) {
    io::FitsFile f(info.path, io::FitsFile::Mode::Read);
    f.moveToHdu(1);
    const Box box{0, 0, info.width, info.height};
    const auto n = static_cast<std::size_t>(box.area());
    std::vector<double> buf(n);
    double nulval = std::numeric_limits<double>::quiet_NaN();
    int anynul = 0;
    int status = 0;
    fits_read_img(f.get(), TDOUBLE, 1, static_cast<LONGLONG>(n), &nulval, buf.data(), &anynul, &status);
    f.check(status, "read image");
    kernel::ImageF img(box);
    auto& out = img.data();
    for (std::size_t k = 0; k < n; ++k) {
        out[k] = static_cast<float>(buf[k]);
    }
    return img;
}

/// Median of `v` (reordered). NaN when empty.
double medianOf(std::vector<float>& v) {
    if (v.empty()) {
        return std::numeric_limits<double>::quiet_NaN();
    }
    const std::size_t mid = v.size() / 2;
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid), v.end());
    const double hi = v[mid];
    if (v.size() % 2 == 1) {
        return hi;
    }
    const double lo = *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid));
    return 0.5 * (lo + hi);
}

/// Median and 1.4826·MAD of a sample (reordered).
struct RobustStats {
    double median = std::numeric_limits<double>::quiet_NaN();
    double sigma = std::numeric_limits<double>::quiet_NaN();
};
RobustStats robustStats(std::vector<float>& v) {
    RobustStats r;
    r.median = medianOf(v);
    if (v.empty()) {
        return r;
    }
    for (float& x : v) {
        x = static_cast<float>(std::abs(x - r.median));
    }
    r.sigma = kMadPerSigma * medianOf(v);
    return r;
}

/// Pixels the variance is calibrated on: finite, not SAT, not DETECTED/DETECTED_NEGATIVE (when
/// `excludeBits` holds them), |img - median| < 3·σ. Returns their indices.
std::vector<std::size_t> backgroundPixels(const kernel::MaskedImage& mi, const RobustStats& all,
                                          MaskPixel excludeBits) {
    std::vector<std::size_t> idx;
    const auto& img = mi.image.data();
    const auto& mask = mi.mask.data();
    const double cut = kBackgroundCut * all.sigma;
    for (std::size_t k = 0; k < img.size(); ++k) {
        if (std::isfinite(img[k]) && (mask[k] & excludeBits) == 0 && std::abs(img[k] - all.median) < cut) {
            idx.push_back(k);
        }
    }
    return idx;
}

/// The per-file noise calibration: the factor applied to the model variance and the measured
/// background noise it was matched to.
struct VarianceCalibration {
    double factor = 1.0;
    double backgroundSigma = 0;  ///< 1.4826·MAD of the background pixels (ADU)
    double modelSigma = 0;       ///< sqrt(median model variance) over the same pixels, before rescaling
    std::size_t nBackground = 0;
};

/// Rescale mi.variance (finite pixels) by one constant so that the median variance over the
/// background pixels equals the measured (1.4826·MAD)² of the image there.
///
/// Why: the inputs were resampled (SWarp LANCZOS3) and flat-fielded, so the per-pixel noise is not
/// what the CCD model GAIN/RDNOISE/AVSKY predicts (interpolation smooths the noise; flat-field and
/// sky-level structure change it). An honest variance plane must describe the pixels as they are:
/// the model keeps the *relative* variation (brighter pixels are noisier), the background fixes the
/// absolute level. Residual pixel-to-pixel correlations are not represented in a variance plane;
/// the coadd's weights and thresholds inherit that limitation.
VarianceCalibration calibrateVariance(kernel::MaskedImage& mi, const RobustStats& all, MaskPixel excludeBits,
                                      const std::string& path) {
    VarianceCalibration cal;
    const std::vector<std::size_t> bg = backgroundPixels(mi, all, excludeBits);
    cal.nBackground = bg.size();
    if (bg.empty()) {
        throw InputError(path + ": no background pixels to estimate the noise from");
    }
    std::vector<float> values;
    std::vector<float> model;
    values.reserve(bg.size());
    model.reserve(bg.size());
    for (const std::size_t k : bg) {
        values.push_back(mi.image.data()[k]);
        model.push_back(mi.variance.data()[k]);
    }
    cal.backgroundSigma = robustStats(values).sigma;
    const double modelVar = medianOf(model);
    cal.modelSigma = std::sqrt(std::max(modelVar, 0.0));
    if (!(cal.backgroundSigma > 0) || !std::isfinite(cal.backgroundSigma)) {
        throw InputError(path + ": the background noise (1.4826·MAD) is " +
                         std::to_string(cal.backgroundSigma) + ": cannot build a variance plane");
    }
    if (!(modelVar > 0) || !std::isfinite(modelVar)) {
        throw InputError(path + ": the noise model gives a median background variance of " +
                         std::to_string(modelVar) + " (check GAIN, RDNOISE and AVSKY)");
    }
    cal.factor = cal.backgroundSigma * cal.backgroundSigma / modelVar;
    // A pixel the model gives no noise (no RDNOISE and img + sky <= 0) gets the background
    // variance rather than a zero that would make it infinitely precise.
    const auto bgVar = static_cast<float>(cal.backgroundSigma * cal.backgroundSigma);
    const auto& img = mi.image.data();
    auto& var = mi.variance.data();
    for (std::size_t k = 0; k < var.size(); ++k) {
        if (std::isfinite(img[k])) {
            var[k] = var[k] > 0 ? static_cast<float>(var[k] * cal.factor) : bgVar;
        }
    }
    return cal;
}

/// Per-exposure detection (a single-epoch pipeline's SourceDetectionTask with doSmooth,
/// thresholdType stdev per pixel, both polarities, isotropic growth by nSigmaToGrow = 2.4):
/// clears and repaints DETECTED and DETECTED_NEGATIVE. Returns the number of DETECTED pixels.
std::int64_t detect(kernel::MaskedImage& mi, double psfSigma, double threshold,
                    const kernel::MaskDict& dict) {
    const MaskPixel detected = dict.bitMask("DETECTED");
    const MaskPixel detectedNeg = dict.bitMask("DETECTED_NEGATIVE");
    for (MaskPixel& m : mi.mask.data()) {
        m &= ~(detected | detectedNeg);
    }
    const kernel::Smoothed s = kernel::smoothImage(mi.image, mi.variance, psfSigma, kNSigmaForKernel);
    const int grow = static_cast<int>(kNSigmaToGrow * psfSigma + 0.5);
    // Growing every 8-connected component by the disk and taking the union is the same set as
    // growing the union (dilation distributes over union), so the set is grown in one go.
    // No minimum footprint size: SourceDetectionConfig.minPixels defaults to 1.
    const kernel::SpanSet pos =
        kernel::thresholdSpans(s, threshold, kernel::Polarity::Positive).dilateDisk(grow, mi.box());
    const kernel::SpanSet neg =
        kernel::thresholdSpans(s, threshold, kernel::Polarity::Negative).dilateDisk(grow, mi.box());
    pos.paint(mi.mask, detected);
    neg.paint(mi.mask, detectedNeg);
    return pos.area();
}

/// Counts of the cosmic-ray step of one file.
struct CosmicRaySummary {
    bool ran = false;
    std::int64_t nCr = 0;
    std::int64_t nPixels = 0;
    double background = 0;  ///< the image median passed as bkgd (ADU)
};

/// RepairTask.cosmicRay (pipe_tasks python/lsst/pipe/tasks/repair.py): clear the CR plane, take
/// the median of the image as the background (afwMath MEDIAN of the masked image, NaN-safe: here
/// the median of the finite pixels, `median`), and find the cosmic rays with keepCRs = false so
/// that their pixels are interpolated (INTRP set) as in the calexp characterizeImage writes.
/// The PSF is the frame's Gaussian of sigma psfSigma = FWHM / 2.35482. Pixels with NO_DATA, SAT or
/// BAD are never CR pixels and never used by the interpolation. The variance plane is not
/// changed (as upstream: a calexp's variance is ISR's, from the raw pixels).
/// characterizeImage runs RepairTask in each PSF iteration with keepCRs = true and once more with
/// the final PSF and keepCRs = false, clearing the CR plane each time: with ingest's fixed PSF
/// (the FWHM) that is this one call.
/// TooManyCosmicRayPixels becomes an InputError naming the file (exit 3): ingest stops there, as
/// for its other per-file pixel problems, and writes nothing (its output is all or nothing).
CosmicRaySummary repairCosmicRays(kernel::MaskedImage& mi, const InputInfo& info, double median,
                                  const kernel::CosmicRayControl& ctrl, const kernel::MaskDict& dict) {
    const MaskPixel crBit = dict.bitMask("CR");
    const MaskPixel intrpBit = dict.bitMask("INTRP");
    const MaskPixel badBits = dict.bitMask("NO_DATA") | dict.bitMask("SAT") | dict.bitMask("BAD");
    for (MaskPixel& m : mi.mask.data()) {
        m &= ~crBit;  // "Blow away old mask" (RepairTask)
    }
    CosmicRaySummary out;
    out.ran = true;
    out.background = median;
    try {
        const kernel::CosmicRayResult r =
            kernel::findCosmicRays(mi, info.psfSigma, median, ctrl, badBits, crBit, intrpBit);
        out.nCr = r.nCr;
        out.nPixels = r.nPixels;
    } catch (const TooManyCosmicRayPixels& e) {
        throw InputError(info.path + ": cosmic-ray detection: " + e.what() +
                         " (raise --cr-max-pixels, or turn the step off with --no-cosmic-rays)");
    }
    return out;
}

/// Counters for the log line of one file.
struct FileSummary {
    std::string varianceSource;
    VarianceCalibration calibration;
    CosmicRaySummary cosmicRays;
    std::int64_t nDetected = 0;
    std::int64_t nDetectedNegative = 0;
    std::int64_t nNoData = 0;
    std::int64_t nSaturated = 0;
};

/// Build the masked image of one input (image, variance, NO_DATA, SAT, DETECTED*).
kernel::MaskedImage buildWarp(const InputInfo& info, const IngestOptions& opts, const kernel::MaskDict& dict,
                              FileSummary& sum) {
    kernel::MaskedImage mi;
    mi.image = readPixels(info);
    const Box box = mi.image.box();
    mi.mask = kernel::MaskImage(box, 0);
    mi.variance = kernel::ImageF(box, 0.0F);
    const MaskPixel noData = dict.bitMask("NO_DATA");
    const MaskPixel sat = dict.bitMask("SAT");
    const MaskPixel detBits = dict.bitMask("DETECTED") | dict.bitMask("DETECTED_NEGATIVE");
    const float inf = std::numeric_limits<float>::infinity();
    const float nan = std::numeric_limits<float>::quiet_NaN();

    auto& img = mi.image.data();
    auto& mask = mi.mask.data();
    auto& var = mi.variance.data();
    std::vector<float> finite;
    finite.reserve(img.size());
    const double sky = info.sky.value_or(0.0);
    for (std::size_t k = 0; k < img.size(); ++k) {
        if (!std::isfinite(img[k])) {
            // Missing data as upstream makeCoaddTempExp leaves it: NaN, NO_DATA, infinite variance.
            img[k] = nan;
            mask[k] |= noData;
            var[k] = inf;
            ++sum.nNoData;
            continue;
        }
        finite.push_back(img[k]);
        // The image is sky-subtracted: saturation applies to the level before subtraction.
        if (info.saturate && img[k] + sky >= *info.saturate) {
            mask[k] |= sat;
            ++sum.nSaturated;
        }
    }
    if (finite.empty()) {
        log().warn("ingest: {}: every pixel is NaN: the warp is all NO_DATA (the coadd will skip it)",
                   info.path);
        sum.varianceSource = "none (no finite pixels)";
        sum.cosmicRays.ran = opts.detectCosmicRays;  // searched: nothing to find
        return mi;
    }
    const RobustStats all = robustStats(finite);

    // Variance model, ADU². With GAIN: Poisson noise of the full (sky + source) level plus read
    // noise, v = max(img + sky, 0)/gain + (RDNOISE/gain)². Without GAIN: no model, the robust
    // background variance as a constant (fixed by the calibration below).
    const bool useModel = info.gain && (info.readNoise || info.sky);
    if (info.gain && !useModel) {
        log().warn(
            "ingest: {}: GAIN without RDNOISE and AVSKY: a sky-subtracted image gives no noise level to "
            "model; using the robust background variance instead",
            info.path);
    }
    if (useModel) {
        const double g = *info.gain;
        const double rn = info.readNoise.value_or(0.0) / g;
        for (std::size_t k = 0; k < img.size(); ++k) {
            if ((mask[k] & noData) == 0) {
                var[k] = static_cast<float>(std::max(static_cast<double>(img[k]) + sky, 0.0) / g + rn * rn);
            }
        }
        sum.varianceSource =
            "GAIN" + std::string(info.readNoise ? "/RDNOISE" : "") + (info.sky ? "/AVSKY" : "") + " model";
        if (!info.readNoise) {
            log().warn("ingest: {}: GAIN without RDNOISE: the variance model has no read-noise term",
                       info.path);
        }
    } else {
        const auto v = static_cast<float>(all.sigma * all.sigma);
        for (std::size_t k = 0; k < img.size(); ++k) {
            if ((mask[k] & noData) == 0) {
                var[k] = v;
            }
        }
        sum.varianceSource =
            info.gain ? "robust constant (no RDNOISE/AVSKY)" : "robust constant (no GAIN card)";
    }

    // The background noise calibration needs the DETECTED pixels excluded, and detection needs the
    // variance: calibrate on the 3σ-clipped background, detect, recalibrate without the DETECTED
    // pixels, and detect again with the final variance.
    //
    // Cosmic rays are found and repaired between the final variance and the final detection, the
    // order of the single-frame pipeline: ISR makes the variance from the raw pixels (CRs
    // included), characterizeImage repairs the CRs (RepairTask, its σ from that variance), and
    // the detection whose DETECTED plane the calexp (and so the warp) carries runs on the repaired
    // image. So: the variance model and its calibration come from the unrepaired image (a CR's
    // bright pixels are outside the 3σ background cut, and DETECTED by the first detection, so it
    // hardly moves the calibration), the CR step uses the calibrated variance (and leaves it
    // unchanged), and the final DETECTED no longer holds the repaired cosmic rays.
    const VarianceCalibration first = calibrateVariance(mi, all, sat, info.path);
    detect(mi, info.psfSigma, opts.detectThreshold, dict);
    VarianceCalibration second = calibrateVariance(mi, all, sat | detBits, info.path);
    if (opts.detectCosmicRays) {
        sum.cosmicRays = repairCosmicRays(mi, info, all.median, opts.cosmicRays, dict);
    }
    sum.nDetected = detect(mi, info.psfSigma, opts.detectThreshold, dict);
    second.factor *= first.factor;
    second.modelSigma = first.modelSigma;
    sum.calibration = second;
    const MaskPixel detNeg = dict.bitMask("DETECTED_NEGATIVE");
    for (const MaskPixel m : mask) {
        sum.nDetectedNegative += (m & detNeg) != 0 ? 1 : 0;
    }
    return mi;
}

}  // namespace

void ingest(const IngestOptions& opts) {
    if (opts.files.empty()) {
        throw ConfigError("ingest: no input files");
    }
    if (opts.outDir.empty()) {
        throw ConfigError("ingest: --out is empty");
    }
    if (!(std::isfinite(opts.detectThreshold) && opts.detectThreshold > 0)) {
        throw ConfigError("ingest --threshold: " + std::to_string(opts.detectThreshold) +
                          " is not a positive number");
    }
    if (opts.detectCosmicRays) {
        try {
            opts.cosmicRays.validate();
        } catch (const InvalidParameter& e) {
            throw ConfigError(std::string("ingest: ") + e.what());
        }
    }

    // 1. Check every input before writing anything.
    std::vector<InputInfo> inputs;
    std::map<std::string, std::string> outNames;  // output name -> input path
    for (const std::string& path : opts.files) {
        if (const std::string problem = io::notRegularFileProblem(path); !problem.empty()) {
            throw InputError(path + ": " + problem);  // a FIFO must not block the open
        }
        InputInfo info = readInputHeader(path, opts);
        if (!inputs.empty() && (info.width != inputs.front().width || info.height != inputs.front().height)) {
            throw InputError(path + ": mismatched grid: " + std::to_string(info.width) + "x" +
                             std::to_string(info.height) + " pixels, but " + inputs.front().path + " has " +
                             std::to_string(inputs.front().width) + "x" +
                             std::to_string(inputs.front().height) +
                             " (ingest needs images already resampled onto one grid)");
        }
        info.outName = fitsStem(path) + ".warp.fits";
        if (const auto it = outNames.find(info.outName); it != outNames.end()) {
            throw InputError(path + ": output name " + info.outName + " is also the name for " + it->second +
                             " (rename one of the inputs)");
        }
        outNames.emplace(info.outName, path);
        inputs.push_back(std::move(info));
    }
    // Zero points: all from the option, all from the card, or none (equal scales). A card present
    // in some files only would silently mix calibrated and arbitrary scales: refuse that.
    const auto withZp = std::count_if(inputs.begin(), inputs.end(),
                                      [](const InputInfo& i) { return !i.zeroPointSource.empty(); });
    if (withZp == 0) {
        log().warn(
            "ingest: no --zero-point and no {} card: every input gets zero point {} (equal scales; the coadd "
            "is only photometrically right if the inputs already share one flux scale)",
            opts.zeroPointKey, kDefaultZeroPoint);
        for (InputInfo& i : inputs) {
            i.zeroPointSource = "default (equal scales)";
        }
    } else if (static_cast<std::size_t>(withZp) != inputs.size()) {
        for (const InputInfo& i : inputs) {
            if (i.zeroPointSource.empty()) {
                throw InputError(i.path + ": no " + opts.zeroPointKey +
                                 " card, but other inputs have one (give "
                                 "--zero-point, or add the card)");
            }
        }
    }

    // 2. Convert and write each file (one image in memory at a time).
    std::error_code ec;
    fs::create_directories(opts.outDir, ec);
    if (ec || !fs::is_directory(opts.outDir)) {
        throw OutputError(opts.outDir + ": cannot create the output directory" +
                          (ec ? ": " + ec.message() : std::string()));
    }
    const kernel::MaskDict dict = kernel::MaskDict::defaults();
    if (!opts.detectCosmicRays) {
        log().info("ingest: cosmic-ray detection off (--no-cosmic-rays): CR pixels stay in the warps");
    }
    // Visit ids (see IngestOptions::firstVisit): distinct within the batch.
    std::vector<std::int64_t> visits;
    visits.reserve(inputs.size());
    const bool allCards =
        std::all_of(inputs.begin(), inputs.end(), [](const InputInfo& i) { return i.visitCard; });
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        visits.push_back(opts.firstVisit ? *opts.firstVisit + static_cast<std::int64_t>(i)
                         : allCards      ? *inputs[i].visitCard
                                         : static_cast<std::int64_t>(i));
        for (std::size_t j = 0; j < i; ++j) {
            if (visits[j] == visits[i]) {
                throw InputError(inputs[i].path + ": visit " + std::to_string(visits[i]) + " (" +
                                 inputs[i].visitCardName + " card) is also the visit of " + inputs[j].path +
                                 "; give --first-visit N to number the batch instead");
            }
        }
    }
    if (!opts.firstVisit && !allCards) {
        log().warn(
            "ingest: {} has no {} card: visits are numbered by position (0..{}); give --first-visit N so "
            "that "
            "a second ingest batch does not reuse them",
            std::find_if(inputs.begin(), inputs.end(), [](const InputInfo& i) { return !i.visitCard; })->path,
            opts.visitKey.empty() ? std::string("EXPNUM or VISIT") : opts.visitKey, inputs.size() - 1);
    }
    io::ManifestPatch patch;
    patch.name = kPatchName;
    // xy0 = (0, 0): the inputs' LTV1/LTV2 (e.g. -1 in DECam CP files) are IRAF's physical-to-image
    // offsets of a cut-out, not an afw xy0, so they are ignored. FITS pixel (1,1) is PARENT (0,0),
    // and the copied WCS cards need no shift.
    patch.box = Box{0, 0, inputs.front().width, inputs.front().height};
    // All or nothing: every warp is first written (atomically) under a staging name, and only when
    // all of them are there are they renamed into place and the manifest written; a failure on any
    // frame removes the staged warps, so --out never holds a mix of new warps and an old manifest.
    std::vector<std::pair<std::string, std::string>> staged;  // (staging path, final path)
    struct Unstage {
        std::vector<std::pair<std::string, std::string>>& files;
        bool done = false;
        ~Unstage() {
            if (!done) {
                for (const auto& [tmp, dst] : files) {
                    std::error_code ec;
                    fs::remove(tmp, ec);
                }
            }
        }
    } unstage{staged};
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        const InputInfo& info = inputs[i];
        FileSummary sum;
        const kernel::MaskedImage mi = buildWarp(info, opts, dict, sum);
        const double fluxMag0 = std::pow(10.0, 0.4 * info.zeroPoint);

        io::ExposureData data;
        data.image = &mi;
        data.maskPlanes = &dict;
        data.wcsCards = info.wcsCards;
        data.imageUnit = "adu";  // the input's counts, unscaled; FLUXMAG0 gives the zero point
        data.imageUnitComment = "input counts; FLUXMAG0 is a mag-0 source";
        auto& pc = data.primaryCards;
        pc.push_back(
            {"FLUXMAG0", fluxMag0, "counts of a mag-0 source (zero point " + info.zeroPointSource + ")"});
        pc.push_back({"PSFSIGMA", info.psfSigma, "PSF sigma (px) from " + info.psfSource});
        pc.push_back({"VISIT", visits[i],
                      opts.firstVisit ? "--first-visit + position in the input list"
                      : allCards      ? std::string("from the ") + info.visitCardName + " card"
                                      : "position in the ingest input list"});
        if (!info.expName.empty()) {
            pc.push_back({"EXPNAME", info.expName, "EXP_BN of the input"});
        }
        if (!info.filter.empty()) {
            pc.push_back({"FILTER", info.filter, "filter of the input"});
        }
        pc.push_back({"INGSRC", fs::path(info.path).filename().string(), "ingested file"});
        pc.push_back({"INGVAR", sum.varianceSource, "variance source"});
        pc.push_back({"INGVSCL", sum.calibration.factor, "variance rescale to the background MAD"});
        pc.push_back({"INGDETT", opts.detectThreshold, "DETECTED threshold (sigma)"});
        pc.push_back({"CRDETECT", sum.cosmicRays.ran, "cosmic rays found and interpolated (CR, INTRP)"});
        if (sum.cosmicRays.ran) {
            pc.push_back({"NCR", sum.cosmicRays.nCr, "cosmic rays found"});
            pc.push_back({"NCRPIX", sum.cosmicRays.nPixels, "cosmic-ray pixels (CR plane, interpolated)"});
        }

        const std::string outPath = (fs::path(opts.outDir) / info.outName).string();
        if (sum.cosmicRays.ran) {
            log().info(
                "ingest: {}: {} cosmic rays, {} pixels set CR and interpolated (background {:.4g} ADU, "
                "PSF sigma {:.3f} px)",
                info.path, sum.cosmicRays.nCr, sum.cosmicRays.nPixels, sum.cosmicRays.background,
                info.psfSigma);
        }
        const std::string stagePath = outPath + ".staged." + std::to_string(::getpid());
        staged.emplace_back(stagePath, outPath);
        io::writeExposure(stagePath, data);
        patch.warps.push_back(io::ManifestWarp{visits[i], info.outName});
        log().info(
            "ingest: {} -> {}: variance {} x {:.4f} (model sigma {:.2f}, background sigma {:.2f} ADU on {} "
            "px); PSF sigma {:.3f} px ({}); zero point {:.4g} ({}), FLUXMAG0 {:.6g}; {} DETECTED, {} "
            "DETECTED_NEGATIVE, {} NO_DATA, {} SAT pixels",
            info.path, outPath, sum.varianceSource, sum.calibration.factor, sum.calibration.modelSigma,
            sum.calibration.backgroundSigma, sum.calibration.nBackground, info.psfSigma, info.psfSource,
            info.zeroPoint, info.zeroPointSource, fluxMag0, sum.nDetected, sum.nDetectedNegative, sum.nNoData,
            sum.nSaturated);
    }
    // The checks coadd will make (validate's, headers only): every frame on the first one's grid
    // (the same celestial WCS), zero points, filters. A frame 10 px off fails here, naming its input.
    {
        std::vector<std::string> paths;
        paths.reserve(staged.size());
        for (const auto& st : staged) {
            paths.push_back(st.first);
        }
        for (const io::WarpProblem& p : io::validateWarps(paths, nullptr, /*pixels=*/false)) {
            if (!p.fatal) {
                continue;
            }
            std::string problem = p.problem;
            for (std::size_t k = 0; k < staged.size(); ++k) {  // name the inputs, not the staged files
                for (std::size_t at; (at = problem.find(staged[k].first)) != std::string::npos;) {
                    problem.replace(at, staged[k].first.size(), inputs[k].path);
                }
            }
            const auto k =
                static_cast<std::size_t>(std::find(paths.begin(), paths.end(), p.file) - paths.begin());
            throw InputError((k < inputs.size() ? inputs[k].path : p.file) + ": " + problem);
        }
    }
    for (const auto& [tmp, dst] : staged) {
        std::error_code ec;
        fs::rename(tmp, dst, ec);
        if (ec) {
            throw OutputError(dst + ": cannot move the ingested warp into place: " + ec.message());
        }
    }
    unstage.done = true;
    io::Manifest manifest;
    manifest.patches.push_back(std::move(patch));
    const std::string manifestPath = (fs::path(opts.outDir) / "manifest.json").string();
    io::writeManifest(manifestPath, manifest);
    log().info("ingest: {} warps and {} written", inputs.size(), manifestPath);
}

}  // namespace safeclip::app
