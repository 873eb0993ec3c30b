#pragma once
// Tiny afw-layout warps for pipeline tests: unit-variance Gaussian noise on a flat sky, one static
// star in every warp (DETECTED in every warp) and, optionally, a bright transient in one warp
// (DETECTED only there). Written with io::writeExposure, read back by io::WarpReader.
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "safeclip/io/ExposureWriter.h"
#include "safeclip/kernel/MaskDict.h"

namespace safeclip::test {

struct TinyWarp {
    kernel::Box box{0, 0, 64, 64};
    std::int64_t visit = 0;
    unsigned seed = 1;
    float variance = 1.0F;     ///< per-pixel variance (the noise's)
    double psfSigma = 1.5;     ///< PSFSIGMA card
    double transientFlux = 0;  ///< 0 = none
    int detRadius = 9;         ///< the transient's DETECTED disk (as grown single-frame detection marks it)
    int tx = 40;
    int ty = 40;
    int sx = 20;                                            ///< static star
    const kernel::MaskDict* dict = nullptr;                 ///< the planes written (nullptr = canonical)
    std::pair<kernel::Box, kernel::MaskPixel> extraMask{};  ///< bits OR-ed into a box
    int sy = 20;
    int starDetR2 = -1;       ///< >= 0: the star's DETECTED is the disk r² <= this (else v > 3)
    int transientDetR2 = -1;  ///< >= 0: the transient's DETECTED disk is r² <= this (else detRadius²)
    bool nanImage = false;    ///< write every IMAGE pixel as NaN
    std::optional<float> varianceWritten;            ///< VARIANCE plane value written (default: `variance`)
    std::function<void(kernel::MaskedImage&)> edit;  ///< applied last, before writing (when set)
    std::vector<io::HeaderCard> extraCards;          ///< more primary-HDU cards (e.g. FILTER)
};

inline void gaussianBlob(kernel::ImageF& img, kernel::MaskImage& mask, kernel::MaskPixel det, int cx, int cy,
                         double flux, double sigma, double detLevel) {
    const kernel::Box& b = img.box();
    for (int y = b.y0; y < b.y1(); ++y) {
        for (int x = b.x0; x < b.x1(); ++x) {
            const double r2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
            const double v = flux / (2 * M_PI * sigma * sigma) * std::exp(-r2 / (2 * sigma * sigma));
            img(x, y) += static_cast<float>(v);
            if (v > detLevel) {
                mask(x, y) |= det;
            }
        }
    }
}

/// Write one warp to `path`.
inline void writeTinyWarp(const std::string& path, const TinyWarp& w) {
    const kernel::MaskDict canonical = kernel::MaskDict::canonical();
    const kernel::MaskDict& dict = w.dict != nullptr ? *w.dict : canonical;
    const kernel::MaskPixel det = dict.bitMask("DETECTED");
    kernel::MaskedImage mi(w.box);
    std::mt19937 rng(w.seed);
    std::normal_distribution<float> noise(0.0F, std::sqrt(w.variance));
    for (auto& v : mi.image.data()) {
        v = noise(rng);
    }
    mi.mask.fill(0);
    mi.variance.fill(w.variance);
    auto detDisk = [&](int cx, int cy, int r2) {
        for (int y = w.box.y0; y < w.box.y1(); ++y) {
            for (int x = w.box.x0; x < w.box.x1(); ++x) {
                if ((x - cx) * (x - cx) + (y - cy) * (y - cy) <= r2) {
                    mi.mask(x, y) |= det;
                }
            }
        }
    };
    gaussianBlob(mi.image, mi.mask, det, w.sx, w.sy, 2000.0, w.psfSigma, w.starDetR2 >= 0 ? 1e30 : 3.0);
    if (w.starDetR2 >= 0) {
        detDisk(w.sx, w.sy, w.starDetR2);
    }
    if (w.transientFlux > 0) {
        gaussianBlob(mi.image, mi.mask, det, w.tx, w.ty, w.transientFlux, w.psfSigma, 1e30);
        detDisk(w.tx, w.ty, w.transientDetR2 >= 0 ? w.transientDetR2 : w.detRadius * w.detRadius);
    }
    const auto& [extraBox, extraBits] = w.extraMask;
    for (int y = extraBox.y0; y < extraBox.y1(); ++y) {
        for (int x = extraBox.x0; x < extraBox.x1(); ++x) {
            mi.mask(x, y) |= extraBits;
        }
    }
    if (w.nanImage) {
        mi.image.fill(std::numeric_limits<float>::quiet_NaN());
    }
    if (w.varianceWritten) {
        mi.variance.fill(*w.varianceWritten);
    }
    if (w.edit) {
        w.edit(mi);
    }
    io::ExposureData data;
    data.image = &mi;
    data.maskPlanes = &dict;
    data.wcsCards = {"CTYPE1  = 'RA---TAN'", "CTYPE2  = 'DEC--TAN'", "CRVAL1  = 150.0",    "CRVAL2  = 2.0",
                     "CRPIX1  = 32.0",       "CRPIX2  = 32.0",       "CD1_1   = -5.0E-05", "CD1_2   = 0.0",
                     "CD2_1   = 0.0",        "CD2_2   = 5.0E-05"};
    data.primaryCards = {io::HeaderCard{"FLUXMAG0", std::pow(10.0, 0.4 * 27.0), "zero point"},
                         io::HeaderCard{"VISIT", w.visit, ""}, io::HeaderCard{"PSFSIGMA", w.psfSigma, "px"}};
    data.primaryCards.insert(data.primaryCards.end(), w.extraCards.begin(), w.extraCards.end());
    io::writeExposure(path, data);
}

}  // namespace safeclip::test
