#pragma once
/// @file Simulator.h  `safeclip simulate`: seeded afw-layout warps with known truth.
#include <cstdint>
#include <string>

namespace safeclip::app {

struct SimulateOptions {
    std::string outDir;
    int warps = 8;
    int width = 256;
    int height = 256;
    int patches = 1;
    std::uint64_t seed = 1;
    /// Cosmic rays per million pixels per warp, all kinds together. The default, 62.5 (one per
    /// 16000 px), is the rate the simulator has always used. Range [0, 100000]; 0: none.
    double cosmicRayRate = 62.5;
    /// Fraction of the cosmic rays that are tracks of 5-40 px at random angles; the rest are
    /// single-pixel hits and 2-4 px clusters. Range [0, 1]; the default 0 makes no tracks.
    /// Hits and clusters number lround(A * rate * (1 - f) / 1e6) per warp of A pixels, at least one
    /// when rate * (1 - f) > 0 (as before); tracks are Poisson with mean A * rate * f / 1e6.
    double cosmicRayTrackFraction = 0.0;
    /// Each warp's Gaussian PSF sigma (px) is drawn uniformly from [psfSigmaMin, psfSigmaMax]
    /// (defaults: the range the simulator has always used). Range [0.3, 20], min <= max. A wide range
    /// (e.g. 1.0-2.6) is where per-pixel clipping cuts star cores.
    double psfSigmaMin = 1.3;
    double psfSigmaMax = 2.2;
};

/// Writes OUT/manifest.json, OUT/truth.json, OUT/<patch>/warp-<visit>.fits and
/// OUT/<patch>/truth.fits. Deterministic for a given seed. @throws OutputError
void simulate(const SimulateOptions& opts);

}  // namespace safeclip::app
