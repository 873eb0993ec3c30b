#pragma once
/// @file Interp.h  Post-processing of the final coadd (spec §7.2.4–5, §8): INEXACT_PSF,
/// setCoaddEdgeBits, interpolation over NO_DATA, variance fix.
///
/// Interpolation over NO_DATA, line by line (rows; columns with transpose), image and variance
/// planes by the same procedure (upstream meas_algorithms interpolateOverDefects runs do_defects on
/// each plane); only afterwards are NaN or <= 0 variances set to +inf. A maximal run of non-good
/// pixels (NO_DATA or non-finite) is filled, on its NO_DATA pixels only, as follows:
///  - good pixels on both sides: linear between the nearest good pixels. Deviation (allowed by spec
///    §0.6): upstream uses the SDSS coefficient tables (MIDDLE/NEAR_*/WIDE) here.
///  - touching an end of the line (upstream's LEFT/RIGHT/WIDE_* cases), with g1 the good pixel next
///    to the run and g2 the one beyond it: the pixel at distance d from the data gets
///    a_d·g1 + b_d·g2 (d = 1..6: 1.4288/-0.4288, 1.0933/-0.0933, 0.6968/0.3032, 0.5370/0.4630,
///    0.5041/0.4959, 0.5003/0.4997; from d = 7 on 0.5/0.5), or g1 when g2 is not usable. With
///    useFallbackValueAtEdge a run longer than nUseInterp = 6 instead takes the fallback value
///    beyond the 6 pixels nearest the data, and those 6 taper from the fallback to the data with
///    upstream's 6-px coefficients (type 01403, or 01402 without g2). For a 7-px run upstream reads
///    its "NOTUSED" sentinel -1 as the outer fallback pixel; safeclip uses the fallback value.
///  - no good pixel in the line: the fallback value.
/// The fallback is the median of all finite coadd pixels, clamped to >= 0 unless
/// negativeFallbackAllowed; it serves the variance plane too, as upstream. Filled pixels get INTRP.
#include <cstdint>

#include "safeclip/kernel/Image.h"

namespace safeclip::kernel {

struct InterpControl {
    bool enabled = true;                   ///< doInterp
    bool useFallbackValueAtEdge = true;    ///< interpImage.useFallbackValueAtEdge
    bool negativeFallbackAllowed = false;  ///< interpImage.negativeFallbackAllowed
    bool transpose = false;                ///< interpImage.transpose (interpolate along columns)
};

struct PostBits {
    MaskPixel noData = 0;
    MaskPixel intrp = 0;
    MaskPixel inexactPsf = 0;
    MaskPixel inexactSources = 0;  ///< SENSOR_EDGE|CLIPPED|REJECTED
};

struct PostResult {
    std::int64_t nInterpolated = 0;
    std::int64_t nNoData = 0;
    double fallbackValue = 0;
};

/// Apply, in order: INEXACT_PSF where mask & inexactSources; NO_DATA where variance == 0;
/// interpolation over NO_DATA (when enabled); variance <= 0 or NaN -> +inf.
PostResult postProcessCoadd(MaskedImage& coadd, const PostBits& bits, const InterpControl& ctrl);

}  // namespace safeclip::kernel
