/// @file Config.cpp  The configuration schema, TOML parsing (toml11), --set overrides, validation,
/// the canonical dump and its hash.
#include "safeclip/app/Config.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <system_error>
#include <toml.hpp>
#include <tuple>

#include "safeclip/geom/Plan.h"
#include "safeclip/io/Hash.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"

namespace safeclip::app {

namespace {

using DoubleTable = std::vector<std::pair<std::string, double>>;

// ---- ranges (README "Configuration") -----------------------------------------------------------
constexpr std::int64_t kMaxTileSize = std::int64_t{1} << 30;
constexpr std::int64_t kMaxClipIter = 100;
/// The halo grows by min_pixels - 1 pixels.
constexpr std::int64_t kMaxMinPixels = 100000;
/// A footprint area: at most a whole patch (io::kMaxPatchPixels).
constexpr std::int64_t kMaxBigOverlap = std::int64_t{1} << 31;
/// PSF sigma in pixels: the smoothing kernel is n_sigma_for_kernel times as wide.
constexpr double kMaxPsfSigma = 100.0;
/// detect.n_sigma_to_grow and detect.n_sigma_for_kernel: radii in PSF sigmas (1e6 was an internal
/// error blaming DetectControl.nSigmaToGrow).
constexpr double kMaxSigmaMultiple = 100.0;
/// AB zero points of real data are 20-35; the scale 10^(0.4 (zp - 31.4)) must stay a finite float.
constexpr std::pair<double, double> kZeroPointRange{0.0, 50.0};
using StringList = std::vector<std::string>;

// ---- the schema -------------------------------------------------------------------------------

KeyDef key(std::string name, KeyType type, ConfigValue def, std::string doc) {
    return KeyDef{std::move(name), type, std::move(def), std::move(doc)};
}

std::vector<KeyDef> buildSchema() {
    using K = KeyType;
    std::vector<KeyDef> s;
    // input / output
    s.push_back(key("input.manifest", K::String, std::string(),
                    "path of the run manifest JSON (relative paths resolve against this file's directory)"));
    s.push_back(key("input.on_bad_warp", K::String, std::string("fail"),
                    "a warp that cannot be used: fail (stop the run, exit 3) or skip (log it and leave it "
                    "out); either way a warp upstream's prepareInputs skips (all-NaN image, non-finite "
                    "weight) is left out with a warning; strict stops the run for those too"));
    s.push_back(
        key("input.validate_pixels", K::Bool, false,
            "before any work, also scan every warp's pixels as `safeclip validate` does (variance "
            "finite and > 0 where the image is finite, not all NaN); costs one extra read of each warp"));
    s.push_back(key("input.allow_mixed_filters", K::Bool, false,
                    "coadd warps whose FILTER cards differ (validate, coadd and run refuse them otherwise, "
                    "naming both files); the coadd's FILTER card then lists them"));
    s.push_back(key("output.dir", K::String, std::string("out"), "directory for the coadds and reports"));
    s.push_back(key("output.weight_map", K::Bool, false,
                    "also write <patch>.weight.fits next to each coadd: its inverse variance (0 where "
                    "there is no data) in one HDU WEIGHT with the coadd's WCS, for SWarp/astropy users"));
    s.push_back(key("checkpoint.dir", K::String, std::string(),
                    "directory for restart checkpoints; empty = <output.dir>/checkpoints"));
    s.push_back(key("checkpoint.tile_interval", K::Double, 30.0,
                    "seconds of final-stack work between tile checkpoints, >= 0 (0 = after every tile); "
                    "a killed rank redoes at most this much of its final stack"));
    // resources
    s.push_back(key("tile.size", K::Int, std::int64_t{0},
                    "tile edge in pixels; 0 = derived from memory.max_per_rank, else in [16, 2^30] "
                    "(upstream subregionSize; results never depend on it)"));
    s.push_back(key("memory.max_per_rank", K::String, std::string("1GiB"),
                    "memory budget per MPI rank, e.g. \"512MiB\", \"2GiB\""));
    // algorithm
    s.push_back(key(
        "coadd.mode", K::String, std::string("safeclip"),
        "safeclip (SafeClipAssembleCoaddTask), comparewarp (CompareWarpAssembleCoaddTask: each PSF-matched "
        "warp against a template, [comparewarp]; unless set, stack.bad_mask_planes = [NO_DATA, BAD, "
        "SAT], stack.remove_mask_planes = [NOT_DEBLENDED, EDGE], stack.sigma_clip = 3.0, "
        "stack.clip_iter = 2) or mean (plain weighted mean, no clipping)"));
    s.push_back(key("stack.bad_mask_planes", K::StringList, StringList{"NO_DATA", "BAD", "SAT", "EDGE"},
                    "mask planes excluded from weights, trial coadds, overlap counts and the final "
                    "stack (badMaskPlanes)"));
    s.push_back(key("stack.sigma_clip", K::Double, 1.5,
                    "N-sigma for MEANCLIP and the weight estimate, > 0 (sigmaClip)"));
    s.push_back(key("stack.clip_iter", K::Int, std::int64_t{3},
                    "clipping iterations for MEANCLIP and the weights, in [1, 100] (clipIter)"));
    s.push_back(key("stack.calc_error_from_input_variance", K::Bool, true,
                    "coadd variance propagated from the input variances (calcErrorFromInputVariance)"));
    s.push_back(key("stack.mask_propagation_thresholds", K::DoubleTable, DoubleTable{{"SAT", 0.1}},
                    "plane = rejected-weight fraction in [0, 1] above which the plane is set on the coadd "
                    "(maskPropagationThresholds)"));
    s.push_back(key("stack.remove_mask_planes", K::StringList, StringList{"NOT_DEBLENDED"},
                    "mask planes cleared from each warp before stacking (removeMaskPlanes)"));
    s.push_back(key("stack.zero_point", K::Double, 27.0,
                    "AB zero point of the coadd, in [0, 50] (scaleZeroPoint.zeroPoint)"));
    s.push_back(
        key("detect.psf_sigma", K::Double, 0.0,
            "PSF sigma in pixels for detection smoothing, in [0, 100]; 0 = adaptive-moment (determinant) "
            "radius of the weight-averaged Gaussian PSFs from the warps' PSFSIGMA/FWHM header cards"));
    s.push_back(key("detect.threshold", K::Double, 2.0,
                    "detection threshold in per-pixel sigma, > 0 (clipDetection.thresholdValue)"));
    s.push_back(key("detect.n_sigma_to_grow", K::Double, 2.0,
                    "footprint growth in PSF sigma, in [0, 100] (clipDetection.nSigmaToGrow)"));
    s.push_back(key("detect.min_pixels", K::Int, std::int64_t{4},
                    "minimum footprint size before growth, in [1, 100000] (clipDetection.minPixels)"));
    s.push_back(
        key("detect.n_sigma_for_kernel", K::Double, 7.0,
            "full width of the smoothing kernel in sigma, in (0, 100] (clipDetection.nSigmaForKernel)"));
    s.push_back(key("clip.min_foot_overlap", K::Double, 0.6,
                    "general case: the one warp with overlap fraction above this is clipped, in [0, 1] "
                    "(minClipFootOverlap)"));
    s.push_back(key("clip.min_foot_overlap_single", K::Double, 0.5,
                    "single candidate: clipped if its fraction is above this, in [0, 1] "
                    "(minClipFootOverlapSingle)"));
    s.push_back(key("clip.min_foot_overlap_double", K::Double, 0.45,
                    "two-warp case: both fractions above this, in [0, 1] (minClipFootOverlapDouble)"));
    s.push_back(key("clip.max_foot_overlap_double", K::Double, 0.15,
                    "two-warp case: every other candidate at or below this, in [0, 1] "
                    "(maxClipFootOverlapDouble)"));
    s.push_back(
        key("clip.min_big_overlap", K::Int, std::int64_t{100},
            "detectClipBig: minimum footprint area and overlap in pixels, in [0, 2^31] (minBigOverlap)"));
    s.push_back(key("clip.uint16_counts", K::Bool, false,
                    "wrap each footprint's ign/det counts modulo 65536 before the decision, as upstream's "
                    "uint16 arrays do (to reproduce a historical LSST coadd); false = 64-bit counts"));
    s.push_back(key("interp.enabled", K::Bool, true, "interpolate over coadd NO_DATA pixels (doInterp)"));
    s.push_back(key("interp.use_fallback_value_at_edge", K::Bool, true,
                    "edge gaps longer than 6 px take the fallback value beyond the 6 px nearest the data "
                    "(interpImage.useFallbackValueAtEdge)"));
    s.push_back(key("interp.negative_fallback_allowed", K::Bool, false,
                    "allow a negative fallback value (interpImage.negativeFallbackAllowed)"));
    s.push_back(key("interp.transpose", K::Bool, false,
                    "interpolate along columns instead of rows (interpImage.transpose)"));
    s.push_back(key("cosmic_rays.detect", K::Bool, false,
                    "find cosmic rays in each warp before any stack (LSST's findCosmicRays, as RepairTask "
                    "runs it per exposure); their pixels are left out of every stack (CR plane, REJECTED "
                    "in the coadd). Off: LSST warps arrive with cosmic rays already repaired"));
    s.push_back(
        key("cosmic_rays.psf_sigma", K::Double, 0.0,
            "PSF sigma (px) for the sharpness test, in [0, 100]; 0 = each warp's PSFSIGMA/FWHM card"));
    s.push_back(key("cosmic_rays.cell_size", K::Int, std::int64_t{1024},
                    "each warp is searched in square cells of this many px (each with a 40-px halo), in "
                    "[64, 65536]; a warp no larger than a cell is searched whole, as upstream searches an "
                    "exposure"));
    s.push_back(key("cosmic_rays.background", K::Double, 0.0,
                    "background level of the warps (image units; RepairTask passes the image median, "
                    "warps are background-subtracted)"));
    s.push_back(key("cosmic_rays.min_sigma", K::Double, 6.0,
                    "a CR pixel is this many sigma (sqrt variance) above its neighbours, > 0 (minSigma)"));
    s.push_back(
        key("cosmic_rays.min_dn", K::Double, 150.0,
            "minimum summed excess of a CR, >= 0, read in units of sky_sigma_dn sky sigmas (min_DN)"));
    s.push_back(key("cosmic_rays.sky_sigma_dn", K::Double, 20.0,
                    "the sky noise in DN against which min_dn is read (150 / 20 = 7.5 sky sigma); <= 0 "
                    "reads min_dn in image units (safeclip's conversion: warps have no DN scale)"));
    s.push_back(key("cosmic_rays.cond3_fac", K::Double, 2.5,
                    "noise factor of the PSF-sharpness test, >= 0 (cond3_fac)"));
    s.push_back(key("cosmic_rays.cond3_fac2", K::Double, 0.6,
                    "factor on the PSF's neighbour/centre ratio of the sharpness test, > 0 (cond3_fac2; "
                    "obs_decam and obs_subaru use 0.4)"));
    s.push_back(key("cosmic_rays.niteration", K::Int, std::int64_t{3},
                    "passes that grow each CR into its neighbours, in [0, 20] (niteration)"));
    s.push_back(key("cosmic_rays.n_cr_pixel_max", K::Int, std::int64_t{100000},
                    "more CR pixels than this in one warp is a bad warp (input.on_bad_warp), in [1, 10^9] "
                    "(nCrPixelMax; 100000 as obs_decam and obs_subaru set it)"));
    // comparewarp mode (spec §10; upstream CompareWarpAssembleCoaddConfig names in parentheses)
    s.push_back(key("comparewarp.model_psf_sigma", K::Double, 0.0,
                    "sigma (px) of the Gaussian model PSF every warp is matched to, in [0, 100]; 0 = the "
                    "largest warp PSFSIGMA/FWHM card (modelPsf)"));
    s.push_back(key("comparewarp.template_sigma_clip", K::Double, 2.5,
                    "N-sigma of the template's MEANCLIP and of its weights, > 0 "
                    "(assembleStaticSkyModel.sigmaClip)"));
    s.push_back(key("comparewarp.template_clip_iter", K::Int, std::int64_t{3},
                    "clipping iterations of the template and its weights, in [1, 100] "
                    "(assembleStaticSkyModel.clipIter)"));
    s.push_back(key("comparewarp.threshold", K::Double, 5.0,
                    "detection threshold on each warp - template, per-pixel sigma, > 0 "
                    "(detect.thresholdValue; modern drp_tasks: 7.5)"));
    s.push_back(key("comparewarp.n_sigma_to_grow", K::Double, 0.4,
                    "growth of the difference detections in model PSF sigma, in [0, 100] "
                    "(detect.nSigmaToGrow)"));
    s.push_back(key("comparewarp.min_pixels", K::Int, std::int64_t{4},
                    "minimum difference detection size before growth, in [1, 100000] (detect.minPixels)"));
    s.push_back(key("comparewarp.max_num_epochs", K::Int, std::int64_t{2},
                    "temporal criterion: at most this many epochs plus max_fraction_epochs_high x nImage, "
                    "in [0, 10000] (maxNumEpochs)"));
    s.push_back(key("comparewarp.max_fraction_epochs_low", K::Double, 0.4,
                    "temporal criterion: at most this fraction of nImage, in [0, 1] (maxFractionEpochsLow)"));
    s.push_back(key("comparewarp.max_fraction_epochs_high", K::Double, 0.03,
                    "temporal criterion: fraction of nImage added to max_num_epochs, in [0, 1] "
                    "(maxFractionEpochsHigh)"));
    s.push_back(key("comparewarp.spatial_threshold", K::Double, 0.5,
                    "a candidate is an artefact when more than this fraction of its pixels passes the "
                    "temporal criterion, in [0, 1] (spatialThreshold)"));
    s.push_back(key("comparewarp.scale_warp_variance", K::Bool, true,
                    "rescale each PSF-matched warp's variance (ScaleVarianceTask) before the comparison "
                    "(doScaleWarpVariance)"));
    s.push_back(key("comparewarp.prefilter", K::Bool, true,
                    "drop candidates with too few good pixels (doPrefilterArtifacts)"));
    s.push_back(key("comparewarp.prefilter_ratio", K::Double, 0.05,
                    "keep a candidate when its good-pixel fraction is above this, in [0, 1] "
                    "(prefilterArtifactsRatio)"));
    s.push_back(key("comparewarp.prefilter_mask_planes", K::StringList,
                    StringList{"NO_DATA", "BAD", "SAT", "SUSPECT"},
                    "mask planes that make a pixel bad for the prefilter (prefilterArtifactsMaskPlanes; "
                    "modern drp_tasks: NO_DATA, BAD, SUSPECT)"));
    s.push_back(key("comparewarp.preserve_contained_by_source", K::Bool, true,
                    "keep an artefact that lies entirely inside one footprint of the template "
                    "(doPreserveContainedBySource)"));
    s.push_back(key("qa.enabled", K::Bool, false,
                    "also write a QA picture <patch>.qa.png next to each coadd (image, CLIPPED outlines, "
                    "NO_DATA, NIMAGE, per-warp clipped counts; same as `safeclip qa`)"));
    s.push_back(key("log.level", K::String, std::string("info"),
                    "log level: trace, debug, info, warn, error or off"));
    s.push_back(
        key("log.progress", K::String, std::string("auto"),
            "progress lines on rank 0 (patches done, rate, ETA) every 10 s: on, off, or auto = on when "
            "stderr is a terminal"));
    return s;
}

const KeyDef* findKey(const std::string& name) {
    static const std::map<std::string, std::size_t> index = [] {
        std::map<std::string, std::size_t> m;
        const auto& schema = configSchema();
        for (std::size_t i = 0; i < schema.size(); ++i) {
            m.emplace(schema[i].name, i);
        }
        return m;
    }();
    auto it = index.find(name);
    return it == index.end() ? nullptr : &configSchema()[it->second];
}

std::set<std::string> sectionNames() {
    std::set<std::string> out;
    for (const auto& k : configSchema()) {
        out.insert(k.name.substr(0, k.name.find('.')));
    }
    return out;
}

// ---- messages ---------------------------------------------------------------------------------

std::size_t editDistance(const std::string& a, const std::string& b) {
    std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) {
        prev[j] = j;
    }
    for (std::size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
        }
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

/// "unknown key 'x'" plus a suggestion when a schema key is close.
std::string unknownKeyMessage(const std::string& origin, const std::string& name) {
    std::string msg = origin + ": unknown key '" + name + "'";
    std::size_t best = 4;
    std::string bestName;
    for (const auto& k : configSchema()) {
        const std::size_t d = editDistance(name, k.name);
        if (d < best) {
            best = d;
            bestName = k.name;
        }
    }
    if (!bestName.empty()) {
        msg += " (did you mean '" + bestName + "'?)";
    }
    return msg;
}

std::string tomlTypeName(const toml::value& v) {
    switch (v.type()) {
        case toml::value_t::boolean:
            return "a boolean";
        case toml::value_t::integer:
            return "an integer";
        case toml::value_t::floating:
            return "a float";
        case toml::value_t::string:
            return "a string";
        case toml::value_t::array:
            return "an array";
        case toml::value_t::table:
            return "a table";
        case toml::value_t::offset_datetime:
        case toml::value_t::local_datetime:
        case toml::value_t::local_date:
        case toml::value_t::local_time:
            return "a date/time";
        default:
            return "nothing";
    }
}

std::string expectedName(KeyType t) {
    switch (t) {
        case KeyType::Bool:
            return "a boolean";
        case KeyType::Int:
            return "an integer";
        case KeyType::Double:
            return "a number";
        case KeyType::String:
            return "a string";
        case KeyType::StringList:
            return "an array of strings";
        case KeyType::DoubleTable:
            return "a table of numbers";
    }
    return "?";
}

std::string typeWord(KeyType t) {
    switch (t) {
        case KeyType::Bool:
            return "bool";
        case KeyType::Int:
            return "int";
        case KeyType::Double:
            return "float";
        case KeyType::String:
            return "string";
        case KeyType::StringList:
            return "list of strings";
        case KeyType::DoubleTable:
            return "table of floats";
    }
    return "?";
}

std::string trim(const std::string& s) {
    const auto b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) {
        return {};
    }
    const auto e = s.find_last_not_of(" \t\r\n");
    return s.substr(b, e - b + 1);
}

/// toml11 syntax errors are multi-line ("[error] toml::func: message", a source excerpt and
/// "^--- hint" lines): reduce to "message (hint)".
std::string oneLineTomlError(const std::string& what) {
    std::istringstream in(what);
    std::string line;
    std::string message;
    std::string hint;
    while (std::getline(in, line)) {
        if (message.empty()) {
            std::string m = trim(line);
            if (m.rfind("[error]", 0) == 0) {
                m = trim(m.substr(7));
            }
            if (m.rfind("toml::", 0) == 0) {
                const auto colon = m.find(": ");
                if (colon != std::string::npos) {
                    m = m.substr(colon + 2);
                }
            }
            message = m;
            continue;
        }
        const auto caret = line.find("^---");
        if (caret != std::string::npos) {
            hint = trim(line.substr(caret + 4));
        }
    }
    if (!hint.empty() && hint != "here") {
        message += " (" + hint + ")";
    }
    return message;
}

// ---- conversion -------------------------------------------------------------------------------

/// Convert a TOML value for key `def`, or throw "ORIGIN: key 'k': expected X, got Y".
ConfigValue convert(const KeyDef& def, const toml::value& v, const std::string& origin) {
    auto wrong = [&](const std::string& got) {
        return ConfigError(origin + ": key '" + def.name + "': expected " + expectedName(def.type) +
                           ", got " + got);
    };
    switch (def.type) {
        case KeyType::Bool:
            if (!v.is_boolean()) {
                throw wrong(tomlTypeName(v));
            }
            return v.as_boolean();
        case KeyType::Int:
            if (!v.is_integer()) {
                throw wrong(tomlTypeName(v));
            }
            return static_cast<std::int64_t>(v.as_integer());
        case KeyType::Double:
            if (v.is_integer()) {
                return static_cast<double>(v.as_integer());
            }
            if (!v.is_floating()) {
                throw wrong(tomlTypeName(v));
            }
            return static_cast<double>(v.as_floating());
        case KeyType::String:
            if (!v.is_string()) {
                throw wrong(tomlTypeName(v));
            }
            return static_cast<std::string>(v.as_string().str);
        case KeyType::StringList: {
            if (!v.is_array()) {
                throw wrong(tomlTypeName(v));
            }
            StringList out;
            for (const auto& e : v.as_array()) {
                if (!e.is_string()) {
                    throw wrong("an array containing " + tomlTypeName(e));
                }
                out.push_back(e.as_string().str);
            }
            return out;
        }
        case KeyType::DoubleTable: {
            if (!v.is_table()) {
                throw wrong(tomlTypeName(v));
            }
            DoubleTable out;
            for (const auto& [k, e] : v.as_table()) {
                if (e.is_integer()) {
                    out.emplace_back(k, static_cast<double>(e.as_integer()));
                } else if (e.is_floating()) {
                    out.emplace_back(k, static_cast<double>(e.as_floating()));
                } else {
                    throw wrong("a table with " + tomlTypeName(e) + " for '" + k + "'");
                }
            }
            std::sort(out.begin(), out.end());
            return out;
        }
    }
    throw InvalidParameter("Config: bad key type");
}

// ---- TOML text output -------------------------------------------------------------------------

std::string formatDouble(double v) {
    if (std::isnan(v)) {
        return "nan";
    }
    if (std::isinf(v)) {
        return v > 0 ? "inf" : "-inf";
    }
    std::array<char, 64> buf{};
    const auto res = std::to_chars(buf.data(), buf.data() + buf.size(), v);
    std::string s(buf.data(), res.ptr);
    // TOML floats need a fraction or an exponent; "27" -> "27.0", "1e+20" -> "1.0e+20".
    const auto e = s.find_first_of("eE");
    const std::string mant = s.substr(0, e);
    if (mant.find('.') == std::string::npos) {
        s = mant + ".0" + (e == std::string::npos ? std::string() : s.substr(e));
    }
    return s;
}

std::string quote(const std::string& s) {
    std::string out = "\"";
    for (const char c : s) {
        const auto u = static_cast<unsigned char>(c);
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\t':
                out += "\\t";
                break;
            case '\r':
                out += "\\r";
                break;
            default:
                if (u < 0x20 || u == 0x7f) {
                    char hex[8];
                    std::snprintf(hex, sizeof hex, "\\u%04x", static_cast<unsigned>(u));
                    out += hex;
                } else {
                    out += c;
                }
        }
    }
    return out + "\"";
}

std::string tomlKey(const std::string& k) {
    const bool bare = !k.empty() && std::all_of(k.begin(), k.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
               c == '-';
    });
    return bare ? k : quote(k);
}

std::string formatValue(const ConfigValue& v) {
    struct Visitor {
        std::string operator()(bool b) const { return b ? "true" : "false"; }
        std::string operator()(std::int64_t i) const { return std::to_string(i); }
        std::string operator()(double d) const { return formatDouble(d); }
        std::string operator()(const std::string& s) const { return quote(s); }
        std::string operator()(const StringList& l) const {
            std::string out = "[";
            for (std::size_t i = 0; i < l.size(); ++i) {
                out += (i ? ", " : "") + quote(l[i]);
            }
            return out + "]";
        }
        std::string operator()(const DoubleTable& t) const {
            if (t.empty()) {
                return "{}";
            }
            std::string out = "{ ";
            for (std::size_t i = 0; i < t.size(); ++i) {
                out += (i ? ", " : "") + tomlKey(t[i].first) + " = " + formatDouble(t[i].second);
            }
            return out + " }";
        }
    };
    return std::visit(Visitor{}, v);
}

std::string valueText(const ConfigValue& v) {
    if (const auto* s = std::get_if<std::string>(&v)) {
        return *s;
    }
    return formatValue(v);
}

bool isOneOf(const std::string& s, std::initializer_list<const char*> options) {
    return std::any_of(options.begin(), options.end(), [&](const char* o) { return s == o; });
}

}  // namespace

// ---- public -----------------------------------------------------------------------------------

const std::vector<KeyDef>& configSchema() {
    static const std::vector<KeyDef> schema = buildSchema();
    return schema;
}

Config::Config() {
    for (const auto& k : configSchema()) {
        m_values[k.name] = k.defaultValue;
        m_set[k.name] = false;
    }
}

namespace {

/// TOML files are UTF-8 text. Refuse anything else before toml11 sees it: toml11 3.7.1 reads past
/// its buffer on some invalid byte sequences (found by the config fuzz target). Returns "" or a
/// one-line description of the first bad byte.
std::string checkUtf8Text(const std::string& text) {
    int line = 1;
    for (std::size_t i = 0; i < text.size();) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c == '\n') {
            ++line;
            ++i;
            continue;
        }
        if (c < 0x20 && c != '\t' && c != '\r') {
            return "line " + std::to_string(line) + ": control character 0x" + "0123456789abcdef"[c >> 4] +
                   "0123456789abcdef"[c & 15] + " (config files are UTF-8 text)";
        }
        if (c < 0x80) {
            ++i;
            continue;
        }
        const int n = (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
        bool ok = n > 0 && c >= 0xC2 && c <= 0xF4;
        for (int k = 1; ok && k <= n; ++k) {
            ok = i + static_cast<std::size_t>(k) < text.size() &&
                 (static_cast<unsigned char>(text[i + static_cast<std::size_t>(k)]) & 0xC0) == 0x80;
        }
        if (!ok) {
            return "line " + std::to_string(line) + ": invalid UTF-8 (config files are UTF-8 text)";
        }
        i += static_cast<std::size_t>(n) + 1;
    }
    return {};
}

}  // namespace

Config Config::fromFile(const std::string& path) {
    if (const std::string problem = io::notRegularFileProblem(path); !problem.empty()) {
        throw ConfigError(path + ": " + problem);  // a FIFO would block in open(2)
    }
    std::ifstream file(path, std::ios::binary);
    if (!file) {
        throw ConfigError(path + ": cannot open config file");
    }
    std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (const std::string bad = checkUtf8Text(text); !bad.empty()) {
        throw ConfigError(path + ": " + bad);
    }
    std::istringstream in(text);
    toml::value root;
    try {
        root = toml::parse(in, path);
    } catch (const toml::syntax_error& e) {
        throw ConfigError(path + ": TOML syntax error at line " + std::to_string(e.location().line()) + ": " +
                          oneLineTomlError(e.what()));
    } catch (const std::exception& e) {
        throw ConfigError(path + ": TOML error: " + oneLineTomlError(e.what()));
    }

    Config cfg;
    std::error_code ec;
    std::filesystem::path abs = std::filesystem::absolute(path, ec);
    if (ec) {
        abs = path;
    }
    cfg.m_baseDir = abs.lexically_normal().parent_path().string();

    // Collect (line, name, value) and apply in file order, so the first problem in the file is reported.
    struct Entry {
        unsigned line;
        std::string name;
        const toml::value* value;
    };
    std::vector<Entry> entries;
    const auto sections = sectionNames();
    for (const auto& [section, sv] : root.as_table()) {
        if (!sv.is_table()) {
            entries.push_back({static_cast<unsigned>(sv.location().line()), section, &sv});
            continue;
        }
        if (sections.count(section) == 0 && sv.as_table().empty()) {
            throw ConfigError(path + ": unknown section '[" + section + "]'");
        }
        for (const auto& [k, v] : sv.as_table()) {
            entries.push_back({static_cast<unsigned>(v.location().line()), section + "." + k, &v});
        }
    }
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
        return std::tie(a.line, a.name) < std::tie(b.line, b.name);
    });
    for (const auto& e : entries) {
        const KeyDef* def = findKey(e.name);
        if (def == nullptr) {
            throw ConfigError(unknownKeyMessage(path, e.name));
        }
        cfg.assign(e.name, convert(*def, *e.value, path), path);
    }
    return cfg;
}

void Config::set(const std::string& assignment) {
    const std::string origin = "--set";
    const auto eq = assignment.find('=');
    if (eq == std::string::npos) {
        throw ConfigError(origin + ": expected key=value, got '" + assignment + "'");
    }
    const std::string name = trim(assignment.substr(0, eq));
    const std::string text = trim(assignment.substr(eq + 1));
    const KeyDef* def = findKey(name);
    if (def == nullptr) {
        throw ConfigError(unknownKeyMessage(origin, name));
    }
    std::optional<toml::value> parsed;
    try {
        std::istringstream in("v = " + text + "\n");
        const toml::value root = toml::parse(in, origin);
        if (root.is_table() && root.as_table().size() == 1 && root.contains("v")) {
            parsed = root.at("v");
        }
    } catch (const std::exception&) {
        parsed.reset();
    }
    // A bare word is a string; so is a value of a string key that TOML reads as something else
    // (e.g. output.dir=2024): the text as written.
    if (!parsed || (def->type == KeyType::String && !parsed->is_string())) {
        parsed = toml::value(text);
    }
    assign(name, convert(*def, *parsed, origin), origin);
}

void Config::assign(const std::string& key, const ConfigValue& value, const std::string& origin) {
    const KeyDef* def = findKey(key);
    if (def == nullptr) {
        throw ConfigError(unknownKeyMessage(origin, key));
    }
    if (value.index() != def->defaultValue.index()) {
        throw ConfigError(origin + ": key '" + key + "': expected " + expectedName(def->type));
    }
    m_values[key] = value;
    m_set[key] = true;
}

void Config::validate() const {
    auto fail = [](const std::string& key, const std::string& problem, const ConfigValue& v) {
        return ConfigError("config key '" + key + "': " + problem + ", got " + valueText(v));
    };
    auto finite = [&](const std::string& key) {
        const double v = getDouble(key);
        if (!std::isfinite(v)) {
            throw fail(key, "must be a finite number", m_values.at(key));
        }
        return v;
    };
    auto positive = [&](const std::string& key) {
        if (!(finite(key) > 0.0)) {
            throw fail(key, "must be > 0", m_values.at(key));
        }
    };
    auto nonNegative = [&](const std::string& key) {
        if (!(finite(key) >= 0.0)) {
            throw fail(key, "must be >= 0", m_values.at(key));
        }
    };
    auto unit = [&](const std::string& key) {
        const double v = finite(key);
        if (!(v >= 0.0 && v <= 1.0)) {
            throw fail(key, "must be in [0, 1]", m_values.at(key));
        }
    };
    // Every int key has a range that fits the int it becomes (no silent truncation).
    auto intIn = [&](const std::string& key, std::int64_t lo, std::int64_t hi) {
        const std::int64_t v = getInt(key);
        if (v < lo || v > hi) {
            throw fail(key, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]",
                       m_values.at(key));
        }
    };
    auto doubleIn = [&](const std::string& key, double lo, double hi) {
        const double v = finite(key);
        if (!(v >= lo && v <= hi)) {
            throw fail(key, "must be in [" + formatDouble(lo) + ", " + formatDouble(hi) + "]",
                       m_values.at(key));
        }
    };
    auto choice = [&](const std::string& key, std::initializer_list<const char*> options) {
        if (!isOneOf(getString(key), options)) {
            std::string list;
            for (const char* o : options) {
                if (!list.empty()) {
                    list += '|';
                }
                list += o;
            }
            throw fail(key, "must be one of " + list, m_values.at(key));
        }
    };
    auto planeNames = [&](const std::string& key) {
        for (const auto& n : getStringList(key)) {
            if (n.empty() || n.find_first_of(" \t=") != std::string::npos) {
                throw fail(key, "mask plane names must be non-empty words", m_values.at(key));
            }
        }
    };

    choice("input.on_bad_warp", {"fail", "skip", "strict"});
    if (getString("output.dir").empty()) {
        throw fail("output.dir", "must not be empty", m_values.at("output.dir"));
    }
    const std::int64_t tile = getInt("tile.size");
    if (tile != 0 && (tile < 16 || tile > kMaxTileSize)) {
        throw fail("tile.size", "must be 0 (automatic) or in [16, " + std::to_string(kMaxTileSize) + "]",
                   m_values.at("tile.size"));
    }
    (void)geom::parseByteSize(getString("memory.max_per_rank"), "memory.max_per_rank");
    nonNegative("checkpoint.tile_interval");
    choice("coadd.mode", {"safeclip", "mean", "comparewarp"});
    planeNames("stack.bad_mask_planes");
    positive("stack.sigma_clip");
    intIn("stack.clip_iter", 1, kMaxClipIter);
    for (const auto& [plane, v] : getDoubleTable("stack.mask_propagation_thresholds")) {
        if (plane.empty() || !(v >= 0.0 && v <= 1.0)) {
            throw ConfigError("config key 'stack.mask_propagation_thresholds': value for '" + plane +
                              "' must be in [0, 1], got " + formatDouble(v));
        }
    }
    planeNames("stack.remove_mask_planes");
    doubleIn("stack.zero_point", kZeroPointRange.first, kZeroPointRange.second);
    doubleIn("detect.psf_sigma", 0.0, kMaxPsfSigma);
    positive("detect.threshold");
    doubleIn("detect.n_sigma_to_grow", 0.0, kMaxSigmaMultiple);
    intIn("detect.min_pixels", 1, kMaxMinPixels);
    positive("detect.n_sigma_for_kernel");
    doubleIn("detect.n_sigma_for_kernel", 0.0, kMaxSigmaMultiple);
    unit("clip.min_foot_overlap");
    unit("clip.min_foot_overlap_single");
    unit("clip.min_foot_overlap_double");
    unit("clip.max_foot_overlap_double");
    intIn("clip.min_big_overlap", 0, kMaxBigOverlap);
    doubleIn("cosmic_rays.psf_sigma", 0.0, kMaxPsfSigma);
    intIn("cosmic_rays.cell_size", 64, 65536);
    finite("cosmic_rays.background");
    positive("cosmic_rays.min_sigma");
    nonNegative("cosmic_rays.min_dn");
    finite("cosmic_rays.sky_sigma_dn");
    nonNegative("cosmic_rays.cond3_fac");
    positive("cosmic_rays.cond3_fac2");
    intIn("cosmic_rays.niteration", 0, 20);
    intIn("cosmic_rays.n_cr_pixel_max", 1, 1000000000);
    doubleIn("comparewarp.model_psf_sigma", 0.0, kMaxPsfSigma);
    positive("comparewarp.template_sigma_clip");
    intIn("comparewarp.template_clip_iter", 1, kMaxClipIter);
    positive("comparewarp.threshold");
    doubleIn("comparewarp.n_sigma_to_grow", 0.0, kMaxSigmaMultiple);
    intIn("comparewarp.min_pixels", 1, kMaxMinPixels);
    intIn("comparewarp.max_num_epochs", 0, 10000);
    unit("comparewarp.max_fraction_epochs_low");
    unit("comparewarp.max_fraction_epochs_high");
    unit("comparewarp.spatial_threshold");
    unit("comparewarp.prefilter_ratio");
    planeNames("comparewarp.prefilter_mask_planes");
    choice("log.level", {"trace", "debug", "info", "warn", "error", "off"});
    choice("log.progress", {"auto", "on", "off"});
}

namespace {

template <typename T>
const T& getTyped(const std::map<std::string, ConfigValue>& values, const std::string& key,
                  const char* want) {
    const auto it = values.find(key);
    if (it == values.end()) {
        throw InvalidParameter("Config: no key '" + key + "'");
    }
    const T* v = std::get_if<T>(&it->second);
    if (v == nullptr) {
        throw InvalidParameter("Config: key '" + key + "' is not " + std::string(want));
    }
    return *v;
}

}  // namespace

bool Config::getBool(const std::string& key) const {
    return getTyped<bool>(m_values, key, "a bool");
}

std::int64_t Config::getInt(const std::string& key) const {
    return getTyped<std::int64_t>(m_values, key, "an int");
}

double Config::getDouble(const std::string& key) const {
    return getTyped<double>(m_values, key, "a double");
}

const std::string& Config::getString(const std::string& key) const {
    return getTyped<std::string>(m_values, key, "a string");
}

const std::vector<std::string>& Config::getStringList(const std::string& key) const {
    return getTyped<StringList>(m_values, key, "a string list");
}

const std::vector<std::pair<std::string, double>>& Config::getDoubleTable(const std::string& key) const {
    return getTyped<DoubleTable>(m_values, key, "a double table");
}

bool Config::isSet(const std::string& key) const {
    const auto it = m_set.find(key);
    if (it == m_set.end()) {
        throw InvalidParameter("Config: no key '" + key + "'");
    }
    return it->second;
}

std::string Config::dump() const {
    // m_values is a std::map: keys come sorted, and so do sections.
    std::string out;
    std::string section;
    for (const auto& [name, value] : m_values) {
        const auto dot = name.find('.');
        const std::string sec = name.substr(0, dot);
        if (sec != section) {
            out += (out.empty() ? "" : "\n") + std::string("[") + sec + "]\n";
            section = sec;
        }
        out += name.substr(dot + 1) + " = " + formatValue(value) + "\n";
    }
    return out;
}

std::string Config::hash() const {
    return io::fnv1a64Hex(dump());
}

std::string Config::path(const std::string& key) const {
    const std::string& v = getString(key);
    if (v.empty() || m_baseDir.empty()) {
        return v;
    }
    const std::filesystem::path p(v);
    if (p.is_absolute()) {
        return v;
    }
    return (std::filesystem::path(m_baseDir) / p).lexically_normal().string();
}

std::string describeConfig() {
    std::string out =
        "# safeclip configuration: every key with its default value, type and meaning.\n"
        "# Save this text as a .toml file and edit it; unknown keys are errors. Names in parentheses\n"
        "# are the upstream SafeClipAssembleCoaddConfig fields.\n";
    std::string section;
    for (const auto& k : configSchema()) {
        const auto dot = k.name.find('.');
        const std::string sec = k.name.substr(0, dot);
        if (sec != section) {
            out += "\n[" + sec + "]\n";
            section = sec;
        }
        out += k.name.substr(dot + 1) + " = " + formatValue(k.defaultValue) + "  # " + typeWord(k.type) +
               "; " + k.doc + "\n";
    }
    return out;
}

}  // namespace safeclip::app
