/// @file PatchCoadd.cpp  The app layer's entry to the patch pipeline: configuration -> settings.
#include "safeclip/app/PatchCoadd.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <variant>

#include "safeclip/app/Logging.h"
#include "safeclip/app/Qa.h"
#include "safeclip/geom/Plan.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/Hash.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/MaskDict.h"

namespace safeclip::app {

using kernel::MaskPixel;

/// The keys that change pixels, as "key = value" lines in schema order. Execution keys (memory,
/// tiles, logging, paths, bad-warp policy) are left out so that the coadd's bytes do not depend
/// on them (determinism across budgets, tile sizes and rank counts).
namespace {

/// coadd.mode = comparewarp changes four base defaults (spec §10 setDefaults) when the user did not
/// set them: the value of `key` to use, as a config value.
std::optional<ConfigValue> compareWarpBaseDefault(const Config& cfg, const std::string& key) {
    if (cfg.getString("coadd.mode") != "comparewarp" || cfg.isSet(key)) {
        return std::nullopt;
    }
    if (key == "stack.bad_mask_planes") {
        return ConfigValue(std::vector<std::string>{"NO_DATA", "BAD", "SAT"});
    }
    if (key == "stack.remove_mask_planes") {
        return ConfigValue(std::vector<std::string>{"NOT_DEBLENDED", "EDGE"});
    }
    if (key == "stack.sigma_clip") {
        return ConfigValue(3.0);
    }
    if (key == "stack.clip_iter") {
        return ConfigValue(std::int64_t{2});
    }
    return std::nullopt;
}

std::vector<std::string> stringListOf(const Config& cfg, const std::string& key) {
    const auto d = compareWarpBaseDefault(cfg, key);
    return d ? std::get<std::vector<std::string>>(*d) : cfg.getStringList(key);
}

double doubleOf(const Config& cfg, const std::string& key) {
    const auto d = compareWarpBaseDefault(cfg, key);
    return d ? std::get<double>(*d) : cfg.getDouble(key);
}

std::int64_t intOf(const Config& cfg, const std::string& key) {
    const auto d = compareWarpBaseDefault(cfg, key);
    return d ? std::get<std::int64_t>(*d) : cfg.getInt(key);
}

}  // namespace

std::vector<std::string> scienceConfig(const Config& cfg) {
    static const char* const kExecution[] = {"input.manifest", "output.", "checkpoint.", "qa.",
                                             "tile.",          "memory.", "log."};
    // With the cosmic-ray stage off its parameters change no pixel: left out, so that a coadd made
    // without it keeps the bytes (CONFIG table, SCCFGHSH) it had before the stage existed.
    const bool crStage = cfg.getBool("cosmic_rays.detect");
    // The same for [comparewarp] outside coadd.mode = comparewarp (safeclip-mode outputs keep their bytes).
    const bool cwMode = cfg.getString("coadd.mode") == "comparewarp";
    std::vector<std::string> lines;
    for (const KeyDef& k : configSchema()) {
        bool skip = !crStage && k.name.rfind("cosmic_rays.", 0) == 0;
        skip = skip || (!cwMode && k.name.rfind("comparewarp.", 0) == 0);
        // And the safeclip-only keys in comparewarp mode (they change no pixel there; only the
        // smoothing width of the template-source detection comes from [detect]).
        skip = skip || (cwMode && (k.name.rfind("clip.", 0) == 0 || (k.name.rfind("detect.", 0) == 0 &&
                                                                     k.name != "detect.n_sigma_for_kernel")));
        for (const char* prefix : kExecution) {
            skip = skip || k.name.rfind(prefix, 0) == 0;
        }
        if (skip) {
            continue;
        }
        std::string v;
        char buf[64];
        switch (k.type) {
            case KeyType::Bool:
                v = cfg.getBool(k.name) ? "true" : "false";
                break;
            case KeyType::Int:
                v = std::to_string(intOf(cfg, k.name));
                break;
            case KeyType::Double:
                std::snprintf(buf, sizeof buf, "%.17g", doubleOf(cfg, k.name));
                v = buf;
                break;
            case KeyType::String:
                v = "\"" + cfg.getString(k.name) + "\"";
                break;
            case KeyType::StringList:
                for (const auto& e : stringListOf(cfg, k.name)) {
                    v += (v.empty() ? "" : ", ") + ("\"" + e + "\"");
                }
                v = "[" + v + "]";
                break;
            case KeyType::DoubleTable:
                for (const auto& [name, d] : cfg.getDoubleTable(k.name)) {
                    std::snprintf(buf, sizeof buf, "%.17g", d);
                    v += (v.empty() ? "" : ", ") + name + " = " + buf;
                }
                v = "{" + v + "}";
                break;
        }
        lines.push_back(k.name + " = " + v);
    }
    return lines;
}

std::string scienceConfigHash(const Config& cfg) {
    return io::hashStrings(scienceConfig(cfg));
}

namespace {

kernel::DetectControl detectControl(const Config& cfg) {
    kernel::DetectControl d;
    d.psfSigma = cfg.getDouble("detect.psf_sigma");
    d.thresholdValue = cfg.getDouble("detect.threshold");
    d.nSigmaToGrow = cfg.getDouble("detect.n_sigma_to_grow");
    d.minPixels = static_cast<int>(cfg.getInt("detect.min_pixels"));
    d.nSigmaForKernel = cfg.getDouble("detect.n_sigma_for_kernel");
    return d;
}

}  // namespace

double haloSigma(const Config& cfg, const std::vector<std::optional<double>>& headerSigmas) {
    return pipeline::haloSigma(detectControl(cfg), headerSigmas);
}

int tileHalo(const Config& cfg, double sigma) {
    return pipeline::tileHalo(detectControl(cfg), sigma);
}

std::string qaPicturePath(const std::string& fits) {
    const std::filesystem::path out(fits);
    return (out.parent_path() / (out.stem().string() + ".qa.png")).string();
}

std::string weightMapPath(const std::string& fits) {
    const std::filesystem::path out(fits);
    return (out.parent_path() / (out.stem().string() + ".weight.fits")).string();
}

void writeWeightMap(const std::string& fits, const std::string& path) {
    const io::WarpReader coadd(fits);
    kernel::ImageF variance(coadd.header().box);
    coadd.readPlanes(variance.box(), nullptr, nullptr, variance.data().data());
    kernel::ImageF weight(variance.box(), 0.0F);
    for (std::size_t k = 0; k < variance.data().size(); ++k) {
        const float v = variance.data()[k];
        weight.data()[k] = std::isfinite(v) && v > 0.0F ? 1.0F / v : 0.0F;
    }
    io::writeImageHdus(
        path, {{"WEIGHT", &weight}},
        {{"SCWEIGHT", std::string("1/VARIANCE"), "inverse variance of the coadd; 0 = no data"},
         {"SCCOADD", std::filesystem::path(fits).filename().string(), "the coadd it belongs to"}},
        coadd.header().wcsCards);
}

bool ensureWeightMap(const Config& cfg, const std::string& patch, const std::string& fits) {
    if (!cfg.getBool("output.weight_map")) {
        return false;
    }
    const std::string path = weightMapPath(fits);
    std::error_code ec;
    const auto t = std::filesystem::last_write_time(path, ec);
    if (!ec && t >= std::filesystem::last_write_time(fits, ec) && !ec &&
        io::checkFitsIntegrity(path).problem.empty()) {
        return false;
    }
    writeWeightMap(fits, path);
    log().info("patch {}: weight map {} (it was missing or older than the coadd)", patch, path);
    return true;
}

bool ensureQaPicture(const Config& cfg, const std::string& patch, const std::string& fits) {
    if (!cfg.getBool("qa.enabled")) {
        return false;
    }
    const std::string png = qaPicturePath(fits);
    std::error_code ec;
    const auto pngTime = std::filesystem::last_write_time(png, ec);
    if (!ec && pngTime >= std::filesystem::last_write_time(fits, ec) && !ec) {
        return false;
    }
    writeQaPng(fits, png);
    log().info("patch {}: QA picture {} (it was missing)", patch, png);
    return true;
}

pipeline::PatchSettings makePatchSettings(const Config& cfg) {
    pipeline::PatchSettings s;
    s.mode = cfg.getString("coadd.mode");
    s.skipBadWarps = cfg.getString("input.on_bad_warp") == "skip";
    s.skipEmptyWarps = cfg.getString("input.on_bad_warp") != "strict";
    s.validatePixels = cfg.getBool("input.validate_pixels");
    s.allowMixedFilters = cfg.getBool("input.allow_mixed_filters");
    s.memoryBudget = geom::parseByteSize(cfg.getString("memory.max_per_rank"), "memory.max_per_rank");
    s.tileSize = static_cast<int>(cfg.getInt("tile.size"));
    s.zeroPoint = cfg.getDouble("stack.zero_point");
    s.sigmaClip = doubleOf(cfg, "stack.sigma_clip");
    s.clipIter = static_cast<int>(intOf(cfg, "stack.clip_iter"));
    s.calcErrorFromInputVariance = cfg.getBool("stack.calc_error_from_input_variance");
    s.badMaskPlanes = stringListOf(cfg, "stack.bad_mask_planes");
    s.removeMaskPlanes = stringListOf(cfg, "stack.remove_mask_planes");
    for (const auto& [plane, t] : cfg.getDoubleTable("stack.mask_propagation_thresholds")) {
        s.maskPropagationThresholds.emplace_back(plane, t);
    }
    s.clipRules.minClipFootOverlap = cfg.getDouble("clip.min_foot_overlap");
    s.clipRules.minClipFootOverlapSingle = cfg.getDouble("clip.min_foot_overlap_single");
    s.clipRules.minClipFootOverlapDouble = cfg.getDouble("clip.min_foot_overlap_double");
    s.clipRules.maxClipFootOverlapDouble = cfg.getDouble("clip.max_foot_overlap_double");
    s.clipRules.minBigOverlap = cfg.getInt("clip.min_big_overlap");
    s.clipRules.uint16Counts = cfg.getBool("clip.uint16_counts");
    s.clipRules.validate();
    s.detect = detectControl(cfg);
    s.interp.enabled = cfg.getBool("interp.enabled");
    s.interp.useFallbackValueAtEdge = cfg.getBool("interp.use_fallback_value_at_edge");
    s.interp.negativeFallbackAllowed = cfg.getBool("interp.negative_fallback_allowed");
    s.interp.transpose = cfg.getBool("interp.transpose");
    s.cosmicRays.detect = cfg.getBool("cosmic_rays.detect");
    s.cosmicRays.psfSigma = cfg.getDouble("cosmic_rays.psf_sigma");
    s.cosmicRays.background = cfg.getDouble("cosmic_rays.background");
    s.cosmicRays.cellSize = static_cast<int>(cfg.getInt("cosmic_rays.cell_size"));
    kernel::CosmicRayControl& cr = s.cosmicRays.control;
    cr.minSigma = cfg.getDouble("cosmic_rays.min_sigma");
    cr.min_DN = cfg.getDouble("cosmic_rays.min_dn");
    cr.skySigmaDn = cfg.getDouble("cosmic_rays.sky_sigma_dn");
    cr.cond3_fac = cfg.getDouble("cosmic_rays.cond3_fac");
    cr.cond3_fac2 = cfg.getDouble("cosmic_rays.cond3_fac2");
    cr.niteration = static_cast<int>(cfg.getInt("cosmic_rays.niteration"));
    cr.nCrPixelMax = static_cast<int>(cfg.getInt("cosmic_rays.n_cr_pixel_max"));
    cr.keepCRs = true;  // the stage finds; the warps are never repaired
    cr.validate();
    pipeline::CompareWarpSettings& cw = s.compareWarp;
    cw.modelPsfSigma = cfg.getDouble("comparewarp.model_psf_sigma");
    cw.templateSigmaClip = cfg.getDouble("comparewarp.template_sigma_clip");
    cw.templateClipIter = static_cast<int>(cfg.getInt("comparewarp.template_clip_iter"));
    cw.threshold = cfg.getDouble("comparewarp.threshold");
    cw.nSigmaToGrow = cfg.getDouble("comparewarp.n_sigma_to_grow");
    cw.minPixels = static_cast<int>(cfg.getInt("comparewarp.min_pixels"));
    cw.maxNumEpochs = static_cast<int>(cfg.getInt("comparewarp.max_num_epochs"));
    cw.maxFractionEpochsLow = cfg.getDouble("comparewarp.max_fraction_epochs_low");
    cw.maxFractionEpochsHigh = cfg.getDouble("comparewarp.max_fraction_epochs_high");
    cw.spatialThreshold = cfg.getDouble("comparewarp.spatial_threshold");
    cw.scaleWarpVariance = cfg.getBool("comparewarp.scale_warp_variance");
    cw.prefilter = cfg.getBool("comparewarp.prefilter");
    cw.prefilterRatio = cfg.getDouble("comparewarp.prefilter_ratio");
    cw.prefilterMaskPlanes = cfg.getStringList("comparewarp.prefilter_mask_planes");
    cw.preserveContainedBySource = cfg.getBool("comparewarp.preserve_contained_by_source");
    s.scienceConfig = scienceConfig(cfg);
    s.scienceConfigHash = io::hashStrings(s.scienceConfig);
    const bool qa = cfg.getBool("qa.enabled");
    const bool weightMap = cfg.getBool("output.weight_map");
    if (qa || weightMap) {
        s.afterWrite = [qa, weightMap](const std::string& patch, const std::string& fits) {
            if (weightMap) {
                const std::string path = weightMapPath(fits);
                writeWeightMap(fits, path);
                log().info("patch {}: weight map {}", patch, path);
            }
            if (qa) {
                const std::string png = qaPicturePath(fits);
                writeQaPng(fits, png);
                log().info("patch {}: QA picture {}", patch, png);
            }
        };
    }
    return s;
}

PatchResult coaddPatch(const std::string& name, const kernel::Box& box, const std::vector<WarpInput>& warps,
                       const Config& cfg, const std::string& outPath, const parallel::Comm* group,
                       const CheckpointOptions& checkpoints) {
    const pipeline::PatchSettings settings = makePatchSettings(cfg);
    return pipeline::runPatch(name, box, warps, settings, outPath, group, checkpoints);
}

}  // namespace safeclip::app
