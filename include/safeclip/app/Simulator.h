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
};

/// Writes OUT/manifest.json, OUT/truth.json, OUT/<patch>/warp-<visit>.fits and
/// OUT/<patch>/truth.fits. Deterministic for a given seed. @throws OutputError
void simulate(const SimulateOptions& opts);

}  // namespace safeclip::app
