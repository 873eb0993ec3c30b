#pragma once
/// @file Ingest.h  `safeclip ingest`: single-HDU exposures already on one grid -> afw-layout warps.
#include <optional>
#include <string>
#include <vector>

#include "safeclip/kernel/CosmicRays.h"

namespace safeclip::app {

struct IngestOptions {
    std::string outDir;
    std::vector<std::string> files;
    double detectThreshold = 5.0;          ///< per-exposure DETECTED threshold (σ)
    std::optional<double> psfFwhm;         ///< pixels; default from the FWHM header card
    std::optional<double> zeroPoint;       ///< AB mag for every file; default from zeroPointKey
    std::string zeroPointKey = "MAGZERO";  ///< header card holding the zero point
    /// Find and repair cosmic rays in every frame (pipe_tasks RepairTask, as characterizeImage runs
    /// it): CR plane set, pixels interpolated, INTRP set. `--no-cosmic-rays` clears it.
    bool detectCosmicRays = true;
    /// meas_algorithms FindCosmicRaysConfig defaults. pipe_tasks
    /// python/lsst/pipe/tasks/characterizeImage.py (CharacterizeImageConfig.setDefaults) does not
    /// change repair.cosmicray, so nCrPixelMax stays 10000; the 100000 seen in LSST configs is an
    /// override (pipe_tasks' old config/processCcd.py, obs_cfht, obs_mosaic). `--cr-min-sigma` and
    /// `--cr-max-pixels` set minSigma and nCrPixelMax.
    kernel::CosmicRayControl cosmicRays;
    /// Visit ids: firstVisit + position when given (`--first-visit`); else the integer card
    /// `visitKey` (`--visit-key`; empty = EXPNUM, then VISIT) of every file; else the position in
    /// the list (0, 1, ...), with a warning that a second batch would collide.
    std::optional<std::int64_t> firstVisit;
    std::string visitKey;
};

/// Writes OUT/<stem>.warp.fits per input and OUT/manifest.json (one patch "ingest").
/// @throws InputError / OutputError
void ingest(const IngestOptions& opts);

}  // namespace safeclip::app
