#pragma once
/// @file Ingest.h  `safeclip ingest`: single-HDU exposures already on one grid -> afw-layout warps.
#include <optional>
#include <string>
#include <vector>

namespace safeclip::app {

struct IngestOptions {
    std::string outDir;
    std::vector<std::string> files;
    double detectThreshold = 5.0;          ///< per-exposure DETECTED threshold (σ)
    std::optional<double> psfFwhm;         ///< pixels; default from the FWHM header card
    std::optional<double> zeroPoint;       ///< AB mag for every file; default from zeroPointKey
    std::string zeroPointKey = "MAGZERO";  ///< header card holding the zero point
};

/// Writes OUT/<stem>.warp.fits per input and OUT/manifest.json (one patch "ingest").
/// @throws InputError / OutputError
void ingest(const IngestOptions& opts);

}  // namespace safeclip::app
