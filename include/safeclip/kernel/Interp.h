#pragma once
/// @file Interp.h  Post-processing of the final coadd (spec §7.2.4–5, §8): INEXACT_PSF,
/// setCoaddEdgeBits, interpolation over NO_DATA, variance fix.
///
/// Deviation (allowed by spec §0.6): interpolation is row-linear (column-linear with transpose),
/// not the SDSS coefficient tables: a NO_DATA run with good pixels on both sides of its row is
/// filled linearly between the nearest good pixels; a run touching the image edge, and a row
/// with no good pixel, gets the fallback value (median of all finite coadd pixels, clamped to >= 0
/// unless negativeFallbackAllowed). Interpolated pixels get INTRP and variance +inf (spec §11.1).
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
