/// @file CoaddOutput.cpp  Stage "write": the coadd's FITS product (spec §9) on the root — primary
/// cards, IMAGE/MASK/VARIANCE with the first warp's WCS, NIMAGE, and the tables INPUTS,
/// FOOTPRINTS, CANDIDATES, CLIPPED_SPANS (safeclip mode; comparewarp: FOOTPRINTS of its candidates and
/// CLIPPED_SPANS), CR_SPANS (cosmic_rays.detect) and CONFIG — written atomically once every used warp is
/// checked to have the size and mtime "open" saw; then the patch's checkpoints are removed and the settings'
/// afterWrite hook runs.
#include <cmath>

#include "safeclip/Version.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/RowFormats.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/PsfMoments.h"
#include "safeclip/pipeline/Guard.h"
#include "safeclip/pipeline/PatchCheckpoint.h"
#include "safeclip/pipeline/Stages.h"

namespace safeclip::pipeline {

namespace {

io::Table inputsTable(const PatchContext& ctx) {
    io::Table inputs{"INPUTS", {}};
    std::vector<std::int64_t> visit;
    std::vector<std::string> file;
    std::vector<std::string> status;
    std::vector<double> scale;
    std::vector<double> weight;
    std::vector<std::int64_t> nClipped;
    std::vector<std::int64_t> usedPixels;
    std::vector<std::string> checksum;
    std::vector<std::int64_t> size;
    std::vector<std::int64_t> mtime;
    std::vector<std::int64_t> nBig;
    for (const Warp& w : ctx.warps) {
        size.push_back(w.fileSize);
        mtime.push_back(w.mtimeNs);
        nBig.push_back(w.nBigFootprints);
        usedPixels.push_back(w.nUsedPixels);
        checksum.push_back(w.checksum);
        visit.push_back(w.visit);
        file.push_back(w.input.path);
        status.push_back(w.status);
        scale.push_back(w.used ? static_cast<double>(w.scale) : std::nan(""));
        weight.push_back(w.used ? static_cast<double>(w.weight) : std::nan(""));
        nClipped.push_back(w.nClippedPixels);
    }
    inputs.columns = {{"visit", visit, ""},
                      {"file", file, ""},
                      {"scale", scale, ""},
                      {"weight", weight, ""},
                      {"status", status, ""},
                      {"n_clipped_pixels", nClipped, "pixel"},
                      {"n_used_pixels", usedPixels, "pixel"},
                      {"checksum", checksum, ""},
                      {"size", size, "byte"},
                      {"mtime_ns", mtime, "ns"},
                      {"n_big_footprints", nBig, ""}};
    if (ctx.settings.mode == "comparewarp") {
        std::vector<double> tw;
        std::vector<double> factor;
        for (const Warp& w : ctx.warps) {
            tw.push_back(w.used ? static_cast<double>(w.templateWeight) : std::nan(""));
            factor.push_back(w.used ? w.varianceFactor : std::nan(""));
        }
        inputs.columns.push_back({"template_weight", tw, ""});
        inputs.columns.push_back({"variance_factor", factor, ""});
        // The PSF-matched companions read (the manifest's "psf_matched"; "" = matched here), as
        // "open" saw them: --resume checks them like the warps.
        std::vector<std::string> companion;
        std::vector<std::int64_t> cSize;
        std::vector<std::int64_t> cMtime;
        for (const Warp& w : ctx.warps) {
            companion.push_back(w.input.psfMatchedPath);
            cSize.push_back(w.companionSize);
            cMtime.push_back(w.companionMtimeNs);
        }
        inputs.columns.push_back({"psf_matched", companion, ""});
        inputs.columns.push_back({"psf_matched_size", cSize, "byte"});
        inputs.columns.push_back({"psf_matched_mtime_ns", cMtime, "ns"});
    }
    if (ctx.settings.cosmicRays.detect) {  // only then: outputs without the stage are unchanged
        std::vector<std::int64_t> nCrPixels;
        std::vector<std::int64_t> nCr;
        for (const Warp& w : ctx.warps) {
            nCrPixels.push_back(w.cosmicRays.area());
            nCr.push_back(w.nCosmicRays);
        }
        inputs.columns.push_back({"n_cr_pixels", nCrPixels, "pixel"});
        inputs.columns.push_back({"n_cosmic_rays", nCr, ""});
    }
    return inputs;
}

/// (visit, y, x0, x1) rows of one span set per warp: CLIPPED_SPANS and CR_SPANS.
std::vector<kernel::ClippedSpanRow> spanRows(const PatchContext& ctx, kernel::SpanSet Warp::*member) {
    std::vector<kernel::ClippedSpanRow> rows;
    for (const Warp& w : ctx.warps) {
        for (const kernel::Span& s : (w.*member).spans()) {
            rows.push_back({w.visit, s.y, s.x0, s.x1});
        }
    }
    return rows;
}

/// Before publishing: every used warp must still have the size and mtime "open" saw, or the coadd
/// may mix two versions of a file (and INPUTS would name the wrong one). @throws InputError
void checkInputsUnchanged(const PatchContext& ctx) {
    for (const Warp& w : ctx.warps) {
        if (!w.used) {
            continue;
        }
        auto check = [&](const std::string& path, std::int64_t wasSize, std::int64_t wasMtime) {
            const auto [size, mtime] = io::fileSizeAndMtime(path);
            if (size != wasSize || mtime != wasMtime) {
                throw InputError(
                    path + ": changed during the run (size " + std::to_string(wasSize) + " -> " +
                    std::to_string(size) + " bytes, mtime " + std::to_string(wasMtime) + " -> " +
                    std::to_string(mtime) + " ns); patch " + ctx.name +
                    " not written; coadd it again (with --resume: --restart, its checkpoints are of "
                    "the old file)");
            }
        };
        check(w.input.path, w.fileSize, w.mtimeNs);
        if (ctx.settings.mode == "comparewarp" && !w.input.psfMatchedPath.empty()) {  // read too
            check(w.input.psfMatchedPath, w.companionSize, w.companionMtimeNs);
        }
    }
}

void write(const PatchContext& ctx) {
    const bool safeclip = ctx.clipStages;
    io::ExposureData data;
    data.image = &ctx.coadd;
    data.maskPlanes = &ctx.dict;
    data.nImage = &ctx.nImage;
    data.wcsCards = ctx.wcsCards;
    const double zp = ctx.settings.zeroPoint;
    data.imageUnit = "count";  // relative flux: mag = ZEROPNT - 2.5 log10(value)
    data.imageUnitComment = "mag = ZEROPNT - 2.5 log10(IMAGE)";
    auto& pc = data.primaryCards;
    pc.push_back({"FLUXMAG0", std::pow(10.0, 0.4 * zp), "coadd zero point: counts of a mag-0 source"});
    pc.push_back({"ZEROPNT", zp, "coadd AB zero point"});
    pc.push_back({"PATCH", ctx.name, "patch name"});
    pc.push_back({"SCMODE", ctx.settings.mode, "safeclip coadd mode"});
    pc.push_back({"SCVERS", std::string(kVersion), "safeclip version"});
    pc.push_back({"SCGITREV", std::string(kGitRevision), "safeclip git revision"});
    pc.push_back({"SCCFGHSH", ctx.settings.scienceConfigHash, "hash of the pixel-affecting configuration"});
    const bool compareWarp = ctx.settings.mode == "comparewarp";
    if (safeclip) {
        pc.push_back({"PSFSIGMA", ctx.detect.psfSigma, "detection smoothing sigma (px)"});
        pc.push_back({"PSFSRC", ctx.psfSource, "where PSFSIGMA came from"});
    } else if (compareWarp) {
        // The coadd is a mean of the direct warps (spec §10 step 9), so its PSF is their weighted
        // mixture, as in safeclip mode; σ_m is the PSF-matched warps' (CWMODPSF).
        std::vector<double> sigmas;
        std::vector<double> weights;
        for (const Warp& w : ctx.warps) {
            if (w.used && w.reader && w.reader->header().psfSigma) {
                sigmas.push_back(*w.reader->header().psfSigma);
                weights.push_back(w.weight);
            } else if (w.used) {
                sigmas.clear();
                break;
            }
        }
        if (sigmas.empty()) {
            pc.push_back({"PSFSIGMA", ctx.cwModelSigma, "model PSF sigma (a direct warp has no PSF card)"});
            pc.push_back({"PSFSRC", std::string("comparewarp model PSF sigma"), "where PSFSIGMA came from"});
        } else {
            pc.push_back({"PSFSIGMA", kernel::mixtureDeterminantRadius(sigmas, weights),
                          "coadd PSF sigma (px) of the direct warps"});
            pc.push_back({"PSFSRC", std::string("adaptive moments of the weight-averaged Gaussian PSFs"),
                          "where PSFSIGMA came from"});
        }
        pc.push_back({"CWMODPSF", ctx.cwModelSigma, "model PSF sigma of the PSF-matched warps (px)"});
        pc.push_back(
            {"CWNOCLIP", ctx.result.nothingClippable, "E = 0 at the mean nImage: nothing clippable"});
    }
    if (!ctx.filter.empty()) {
        pc.push_back({"FILTER", ctx.filter, "filter of the first warp"});
    }
    std::int64_t nUsed = 0;
    for (const Warp& w : ctx.warps) {
        nUsed += w.used ? 1 : 0;
    }
    pc.push_back({"NWARPS", static_cast<std::int64_t>(ctx.warps.size()), "warps given"});
    pc.push_back({"NUSED", nUsed, "warps used"});

    data.tables.push_back(inputsTable(ctx));
    if (safeclip) {
        data.tables.push_back(io::rowsToTable("FOOTPRINTS", ctx.decisions.footprints));
        data.tables.push_back(io::rowsToTable("CANDIDATES", ctx.decisions.candidates));
        data.tables.push_back(io::rowsToTable("CLIPPED_SPANS", spanRows(ctx, &Warp::clipped)));
    } else if (compareWarp) {
        // One row per candidate of each warp (spec §10 steps 5-8), and the artefacts per warp.
        data.tables.push_back(io::rowsToTable("FOOTPRINTS", ctx.cwRows));
        data.tables.push_back(io::rowsToTable("CLIPPED_SPANS", spanRows(ctx, &Warp::clipped)));
    }
    if (ctx.settings.cosmicRays.detect) {
        // Every CR pixel the "cosmic_rays" stage found, per warp (the whole warp box).
        data.tables.push_back(io::rowsToTable("CR_SPANS", spanRows(ctx, &Warp::cosmicRays)));
    }
    io::Table config{"CONFIG", {}};
    config.columns = {{"line", ctx.settings.scienceConfig, ""}};
    data.tables.push_back(std::move(config));
    io::writeExposure(ctx.outPath, data);
}

}  // namespace

void writeCoadd(PatchContext& ctx) {
    guardedOnRoot(ctx, "write", [&] {
        checkInputsUnchanged(ctx);
        write(ctx);
        removeCheckpoints(ctx);
        if (ctx.settings.afterWrite) {
            ctx.settings.afterWrite(ctx.name, ctx.outPath);
        }
    });
}

}  // namespace safeclip::pipeline
