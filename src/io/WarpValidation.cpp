/// @file WarpValidation.cpp  Warp checks for the start of coadd/run and for `safeclip validate`.
#include "safeclip/io/WarpValidation.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <sstream>

#include "safeclip/io/FitsFile.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/MaskDict.h"

namespace safeclip::io {

namespace {

/// The value of a fixed-format card "KEY     = value / comment": a quoted string (quotes
/// removed, '' unescaped) or the trimmed text before the comment.
struct CardValue {
    std::string text;
    std::optional<double> number;
};

std::string trim(const std::string& s) {
    const auto b = s.find_first_not_of(' ');
    if (b == std::string::npos) {
        return {};
    }
    return s.substr(b, s.find_last_not_of(' ') - b + 1);
}

std::pair<std::string, CardValue> parseCard(const std::string& card) {
    std::string key = trim(card.substr(0, std::min<std::size_t>(8, card.size())));
    CardValue v;
    if (card.size() <= 10) {
        return {key, v};
    }
    const std::string rest = card.substr(10);
    const auto b = rest.find_first_not_of(' ');
    if (b != std::string::npos && rest[b] == '\'') {
        std::string s;
        for (std::size_t i = b + 1; i < rest.size(); ++i) {
            if (rest[i] == '\'') {
                if (i + 1 < rest.size() && rest[i + 1] == '\'') {
                    s += '\'';
                    ++i;
                    continue;
                }
                break;
            }
            s += rest[i];
        }
        while (!s.empty() && s.back() == ' ') {
            s.pop_back();
        }
        v.text = s;
        return {key, v};
    }
    v.text = trim(rest.substr(0, rest.find('/')));
    std::string num = v.text;
    std::replace(num.begin(), num.end(), 'D', 'E');
    std::replace(num.begin(), num.end(), 'd', 'e');
    char* end = nullptr;
    const double d = std::strtod(num.c_str(), &end);
    if (!num.empty() && end == num.c_str() + num.size()) {
        v.number = d;
    }
    return {key, v};
}

using WcsMap = std::map<std::string, CardValue>;

/// WCS cards by key, with CRPIX1/2 moved to PARENT pixels (CRPIX + xy0) so that warps of one
/// grid with different boxes compare equal.
WcsMap wcsMap(const WarpHeader& h) {
    WcsMap m;
    for (const std::string& card : h.wcsCards) {
        auto [key, value] = parseCard(card);
        if (key == "CRPIX1" && value.number) {
            value.number = *value.number + h.box.x0;
        } else if (key == "CRPIX2" && value.number) {
            value.number = *value.number + h.box.y0;
        }
        m[key] = value;
    }
    return m;
}

bool sameNumber(double a, double b) {
    if (a == b) {
        return true;
    }
    const double d = std::abs(a - b);
    return d <= 1e-9 * std::max(std::abs(a), std::abs(b)) || d <= 1e-15;
}

std::string fmt(double v) {
    std::ostringstream o;
    o.precision(12);
    o << v;
    return o.str();
}

/// Differences of `m` from the reference `ref` (first readable warp), as one message or "".
/// Keys that define the mapping and must be in both headers: CTYPE, CRVAL, CRPIX, the CD or PC
/// matrix, PV and SIP terms. Others (CDELT beside a CD matrix, LONPOLE/LATPOLE, RADESYS, EQUINOX,
/// WCSAXES, CUNIT) default sensibly and are compared only when both headers have them: the real
/// DECam frames on one grid differ exactly that way.
bool essential(const std::string& key) {
    auto starts = [&](const char* p) { return key.rfind(p, 0) == 0; };
    if (starts("CDELT")) {
        return false;
    }
    return starts("CTYPE") || starts("CRVAL") || starts("CRPIX") || starts("CD") || starts("PC") ||
           starts("PV") || starts("A_") || starts("B_") || starts("AP_") || starts("BP_");
}

std::string compareWcs(const WcsMap& ref, const WcsMap& m, const std::string& refFile) {
    std::vector<std::string> diffs;
    for (const auto& [key, rv] : ref) {
        const auto it = m.find(key);
        if (it == m.end()) {
            if (essential(key)) {
                diffs.push_back(key + " missing");
            }
            continue;
        }
        const CardValue& v = it->second;
        const bool same = rv.number && v.number ? sameNumber(*rv.number, *v.number) : rv.text == v.text;
        if (!same) {
            const bool crpix = key == "CRPIX1" || key == "CRPIX2";
            diffs.push_back(key + (crpix ? " + xy0 = " : " = ") + (v.number ? fmt(*v.number) : v.text) +
                            " vs " + (rv.number ? fmt(*rv.number) : rv.text));
        }
    }
    for (const auto& [key, v] : m) {
        if (ref.count(key) == 0 && essential(key)) {
            diffs.push_back(key + " extra");
        }
    }
    if (diffs.empty()) {
        return {};
    }
    std::string s = "WCS differs from " + refFile + ": ";
    const std::size_t shown = std::min<std::size_t>(diffs.size(), 4);
    for (std::size_t i = 0; i < shown; ++i) {
        s += (i ? ", " : "") + diffs[i];
    }
    if (diffs.size() > shown) {
        s += ", ... (" + std::to_string(diffs.size()) + " cards)";
    }
    return s;
}

/// Strip a leading "PATH: " from an error message.
std::string withoutPath(const std::string& what, const std::string& path) {
    if (what.compare(0, path.size() + 2, path + ": ") == 0) {
        return what.substr(path.size() + 2);
    }
    return what;
}

/// The raw FLUXMAG0 card (primary, else IMAGE), for a precise message when it is not positive.
std::optional<double> rawFluxMag0(const std::string& path) {
    try {
        FitsFile f(path, FitsFile::Mode::Read);
        f.moveToHdu(1);
        if (auto v = f.readDouble("FLUXMAG0")) {
            return v;
        }
        if (const auto h = f.findExtension("IMAGE")) {
            f.moveToHdu(*h);
            return f.readDouble("FLUXMAG0");
        }
    } catch (const Error&) {
    }
    return std::nullopt;
}

struct PixelStats {
    std::int64_t nPixels = 0, nNaNImage = 0, nFiniteImage = 0, nBadVariance = 0, nZeroVariance = 0,
                 nNegVariance = 0, nNonFiniteVariance = 0;
};

PixelStats scanPixels(const WarpReader& r, kernel::MaskPixel noData) {
    PixelStats s;
    const kernel::Box box = r.header().box;
    const int rows = std::max(1, static_cast<int>(4'000'000 / std::max(1, box.width)));
    std::vector<float> image, variance;
    std::vector<kernel::MaskPixel> mask;
    for (int ya = box.y0; ya < box.y1(); ya += rows) {
        const kernel::Box chunk = box.rows(ya, std::min(box.y1(), ya + rows));
        const auto n = static_cast<std::size_t>(chunk.area());
        image.resize(n);
        mask.resize(n);
        variance.resize(n);
        r.readPlanes(chunk, image.data(), mask.data(), variance.data());
        for (std::size_t k = 0; k < n; ++k) {
            ++s.nPixels;
            if (std::isnan(image[k])) {
                ++s.nNaNImage;
            }
            if (!std::isfinite(image[k]) || (mask[k] & noData) != 0) {
                continue;
            }
            ++s.nFiniteImage;
            const float v = variance[k];
            if (!std::isfinite(v)) {
                ++s.nNonFiniteVariance;
            } else if (v == 0.0F) {
                ++s.nZeroVariance;
            } else if (v < 0.0F) {
                ++s.nNegVariance;
            } else {
                continue;
            }
            ++s.nBadVariance;
        }
    }
    return s;
}

}  // namespace

std::vector<WarpProblem> validateWarps(const std::vector<std::string>& paths, const kernel::Box* patchBox,
                                       bool pixels, bool allowMixedFilters,
                                       const std::vector<bool>* zeroPointGiven,
                                       const std::vector<std::string>* psfSigmaNeeded) {
    std::vector<WarpProblem> out;
    std::string refFilter;
    std::string refFilterFile;
    std::optional<kernel::Box> refBox;
    std::optional<WcsMap> refWcs;
    std::string refFile;
    std::map<std::int64_t, std::string> visits;
    for (std::size_t index = 0; index < paths.size(); ++index) {
        const std::string& path = paths[index];
        const bool zpGiven =
            zeroPointGiven != nullptr && index < zeroPointGiven->size() && (*zeroPointGiven)[index];
        auto problem = [&](const std::string& what, bool fatal = true) {
            out.push_back(WarpProblem{path, what, fatal});
        };
        std::optional<WarpReader> reader;
        try {
            reader.emplace(path);
        } catch (const Error& e) {
            problem(withoutPath(e.what(), path));
            continue;
        }
        kernel::MaskDict dict = kernel::MaskDict::canonical();
        reader->conformTo(dict);
        const WarpHeader& h = reader->header();

        if (h.visit) {
            const auto [it, inserted] = visits.emplace(*h.visit, path);
            if (!inserted) {
                problem("duplicate visit " + std::to_string(*h.visit) + " (also " + it->second + ")");
            }
        }
        // Geometry.
        if (patchBox != nullptr) {
            if (!h.box.contains(*patchBox)) {
                problem("mismatched grid: warp box " + h.box.str() + " does not cover patch box " +
                        patchBox->str());
            }
        } else if (!refBox) {
            refBox = h.box;
        } else if (h.box != *refBox) {
            problem("mismatched grid: warp box " + h.box.str() + " differs from " + refBox->str() + " of " +
                    refFile);
        }
        const WcsMap wcs = wcsMap(h);
        if (!refWcs) {
            refWcs = wcs;
            refFile = path;
            if (wcs.empty()) {
                problem("no celestial WCS cards on the IMAGE HDU (cannot check that the warps share a grid)",
                        false);
            }
        } else if (const std::string d = compareWcs(*refWcs, wcs, refFile); !d.empty()) {
            problem(d);
        }
        // Band: one coadd, one filter.
        if (!h.filter.empty()) {
            if (refFilter.empty()) {
                refFilter = h.filter;
                refFilterFile = path;
            } else if (h.filter != refFilter) {
                problem("filter '" + h.filter + "' differs from '" + refFilter + "' of " + refFilterFile +
                            (allowMixedFilters
                                 ? " (input.allow_mixed_filters = true: mixed on purpose)"
                                 : " (a coadd mixes bands only with input.allow_mixed_filters = true)"),
                        !allowMixedFilters);
            }
        }
        // PSF width, when the coadd needs it.
        if (psfSigmaNeeded != nullptr && index < psfSigmaNeeded->size() &&
            !(*psfSigmaNeeded)[index].empty() && !h.psfSigma) {
            problem((h.psfSigmaProblem.empty() ? std::string("no PSF width (no PSFSIGMA or FWHM card)")
                                               : "no PSF width (" + h.psfSigmaProblem + ")") +
                    ": " + (*psfSigmaNeeded)[index]);
        }
        // Calibration.
        if (!h.calibrationMean && !zpGiven) {
            const auto fm0 = rawFluxMag0(path);
            if (fm0) {
                problem("zero point: FLUXMAG0 = " + fmt(*fm0) +
                        " is not positive (a manifest entry's \"zero_point\" can give it)");
            } else {
                problem(
                    "missing zero point (no FLUXMAG0 card and no PhotoCalib calibrationMean; a manifest "
                    "entry's \"zero_point\" can give it)");
            }
        }
        // Mask planes.
        if (h.maskPlanes.bitOf("DETECTED") < 0) {
            problem("no DETECTED mask plane: this warp can never be a clip candidate (spec §11.11)", false);
        }
        // Pixels.
        if (!pixels) {
            continue;
        }
        try {
            const PixelStats s = scanPixels(*reader, dict.bitMask("NO_DATA"));
            if (s.nPixels > 0 && s.nNaNImage == s.nPixels) {
                problem("IMAGE is all NaN (" + std::to_string(s.nPixels) + " pixels)");
                out.back().upstreamSkips = true;
            } else if (s.nFiniteImage == 0) {
                problem("IMAGE has no finite pixel outside NO_DATA");
            }
            if (s.nBadVariance > 0) {
                std::string what = "VARIANCE: " + std::to_string(s.nBadVariance) + " of " +
                                   std::to_string(s.nFiniteImage) +
                                   " pixels with a finite image are not finite and > 0 (";
                std::string parts;
                auto part = [&parts](std::int64_t n, const char* name) {
                    if (n > 0) {
                        parts += (parts.empty() ? "" : ", ") + std::to_string(n) + " " + name;
                    }
                };
                part(s.nZeroVariance, "zero");
                part(s.nNegVariance, "negative");
                part(s.nNonFiniteVariance, "NaN/inf");
                problem(what + parts + ")");
                // Nowhere a finite positive variance: the weight would not be finite.
                out.back().upstreamSkips = s.nBadVariance == s.nFiniteImage && s.nNegVariance == 0;
            }
        } catch (const Error& e) {
            problem(withoutPath(e.what(), path));
        }
    }
    return out;
}

bool anyFatal(const std::vector<WarpProblem>& problems) {
    return std::any_of(problems.begin(), problems.end(), [](const WarpProblem& p) { return p.fatal; });
}

}  // namespace safeclip::io
