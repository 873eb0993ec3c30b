/// @file OpenWarps.cpp  Stage "open": open every warp, validate its header (and with
/// input.validate_pixels its pixels), apply input.on_bad_warp, fix the patch box and each warp's
/// zero-point scale (spec §3.2-3).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <tuple>

#include "safeclip/io/WarpValidation.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/parallel/Collectives.h"
#include "safeclip/parallel/Logging.h"
#include "safeclip/pipeline/Driver.h"
#include "safeclip/pipeline/Guard.h"
#include "safeclip/pipeline/Stages.h"

namespace safeclip::pipeline {

using parallel::log;

void PatchContext::failWarp(Warp& w, const std::string& why, bool upstreamSkips) const {
    if (!(upstreamSkips ? settings.skipEmptyWarps : settings.skipBadWarps)) {
        throw InputError(why);
    }
    log().warn("skipping warp: {}", why);
    w.used = false;
    w.status = "skipped: " + why;
    w.reader.reset();
}

void PatchContext::requireUsedWarps() const {
    std::string why;
    for (const Warp& w : warps) {
        if (w.used) {
            return;
        }
        why += (why.empty() ? "" : "; ") + w.input.path + ": " + w.status;
    }
    throw InputError("patch " + name + ": no usable warps (all " + std::to_string(warps.size()) +
                     " skipped: " + why + ")");
}

namespace {

/// ((file, problem), 0 = a warning, 1 = fatal, 2 = fatal but a case upstream's prepareInputs skips)
using Verdicts = std::vector<std::pair<std::pair<std::string, std::string>, int>>;

/// The checks of `safeclip validate`: headers only (every rank), or with input.validate_pixels
/// also the pixels (the group root; shared by a broadcast outside any guard).
Verdicts validateInputs(const PatchContext& ctx, bool pixels) {
    std::vector<std::string> paths;
    std::vector<bool> zeroPointGiven;
    std::vector<std::string> psfNeeds;
    for (const Warp& w : ctx.warps) {
        paths.push_back(w.input.path);
        zeroPointGiven.push_back(w.input.zeroPoint.has_value());
        psfNeeds.push_back(
            psfSigmaNeed(ctx.settings.mode, ctx.settings.detect.psfSigma, !w.input.psfMatchedPath.empty()));
    }
    const kernel::Box* patchBox = ctx.box.empty() ? nullptr : &ctx.box;
    Verdicts out;
    for (const io::WarpProblem& p : io::validateWarps(paths, patchBox, pixels, ctx.settings.allowMixedFilters,
                                                      &zeroPointGiven, &psfNeeds)) {
        out.push_back({{p.file, p.problem}, !p.fatal ? 0 : p.upstreamSkips ? 2 : 1});
    }
    return out;
}

/// Problems go through input.on_bad_warp like every other bad warp (in particular every warp's
/// celestial WCS must equal the first warp's).
void applyVerdicts(PatchContext& ctx, const Verdicts& verdicts) {
    for (const auto& [fp, fatal] : verdicts) {
        const auto& [file, problem] = fp;
        if (problem.rfind("duplicate visit", 0) == 0) {
            continue;  // visits are checked with the manifest's ids, not the headers'
        }
        for (Warp& w : ctx.warps) {
            if (w.input.path != file || !w.used) {
                continue;
            }
            if (fatal != 0) {
                ctx.failWarp(w, file + ": " + problem, fatal == 2);
            } else if (ctx.isRoot()) {
                log().warn("{}: {}", file, problem);
            }
        }
    }
}

/// Open every warp's reader; visits must be distinct.
void openReaders(PatchContext& ctx) {
    if (ctx.warps.empty()) {
        throw InputError("patch " + ctx.name + ": no warps given");
    }
    for (std::size_t i = 0; i < ctx.warps.size(); ++i) {
        Warp& w = ctx.warps[i];
        w.visit = w.input.visit >= 0 ? w.input.visit : static_cast<std::int64_t>(i);
        // Before the first read: "write" checks that the file still has this size and mtime.
        std::tie(w.fileSize, w.mtimeNs) = io::fileSizeAndMtime(w.input.path);
        if (ctx.settings.mode == "comparewarp" && !w.input.psfMatchedPath.empty()) {
            std::tie(w.companionSize, w.companionMtimeNs) = io::fileSizeAndMtime(w.input.psfMatchedPath);
        }
        try {
            w.reader = std::make_unique<io::WarpReader>(w.input.path);
            const auto& h = w.reader->header();
            ctx.headerPsfSigmas.push_back(h.psfSigma);  // for haloSigma(), as `safeclip plan` sees them
            if (w.input.visit < 0 && h.visit) {
                w.visit = *h.visit;
            }
            w.used = true;
            w.status = "used";
        } catch (const InputError& e) {
            ctx.failWarp(w, e.what());
        }
    }
    // The same file twice (another spelling, a link) would count its pixels twice.
    std::map<std::pair<std::uint64_t, std::uint64_t>, std::size_t> seen;
    for (std::size_t i = 0; i < ctx.warps.size(); ++i) {
        const auto id = io::fileIdentity(ctx.warps[i].input.path);
        if (!id) {
            continue;  // unreadable: already failed or skipped above
        }
        if (const auto [it, fresh] = seen.emplace(*id, i); !fresh) {
            throw InputError(ctx.warps[i].input.path + ": the same file as " +
                             ctx.warps[it->second].input.path + " (a warp may be listed once)");
        }
    }
    for (std::size_t i = 0; i < ctx.warps.size(); ++i) {
        for (std::size_t j = 0; j < i; ++j) {
            if (ctx.warps[i].visit == ctx.warps[j].visit) {
                throw InputError(ctx.warps[i].input.path + ": duplicate visit " +
                                 std::to_string(ctx.warps[i].visit) + " (also " + ctx.warps[j].input.path +
                                 "); give each warp its own visit id (VISIT card or manifest)");
            }
        }
    }
}

/// After validation: the patch box, each warp's zero-point scale, the mask planes.
void settle(PatchContext& ctx) {
    // The patch box: the manifest's, or the warps' common box.
    for (Warp& w : ctx.warps) {
        if (!w.used) {
            continue;
        }
        const kernel::Box wb = w.reader->header().box;
        if (ctx.box.empty()) {
            ctx.box = wb;
        }
        if (!wb.contains(ctx.box)) {
            ctx.failWarp(w, w.input.path + ": mismatched grid: warp box " + wb.str() +
                                " does not cover patch box " + ctx.box.str());
        } else if (ctx.requireSameBox && wb != ctx.box) {
            // No patch box given (`safeclip coadd`): every warp must be on the same box.
            ctx.failWarp(w, w.input.path + ": mismatched grid: warp box " + wb.str() + " differs from " +
                                ctx.box.str() + " of the first warp");
        }
    }
    for (Warp& w : ctx.warps) {
        if (!w.used) {
            continue;
        }
        const auto& h = w.reader->header();
        // The manifest's "zero_point" wins over the header (issue 16: an afw file with FLUXMAG0 = 0).
        const std::optional<double> calibration =
            w.input.zeroPoint
                ? std::optional<double>(io::calibrationFromFluxMag0(std::pow(10.0, 0.4 * *w.input.zeroPoint)))
                : h.calibrationMean;
        if (!calibration || !(*calibration > 0) || !std::isfinite(*calibration)) {
            ctx.failWarp(w, w.input.path +
                                ": missing zero point (no FLUXMAG0 card and no PhotoCalib calibrationMean; "
                                "the manifest's \"zero_point\" can give it)");
            continue;
        }
        w.reader->conformTo(ctx.dict);  // (a missing DETECTED plane was warned about by the validation)
        // s_i = c_i / f_zp, f_zp = 10^(-0.4 (zp - 31.4)) nJy; upstream casts s to float32 (§3.2-3).
        const double fzp = std::pow(10.0, -0.4 * (ctx.settings.zeroPoint - 31.4));
        w.scale = static_cast<float>(*calibration / fzp);
    }
    if (ctx.box.empty() || ctx.usedWarps().empty()) {
        throw InputError("patch " + ctx.name + ": no readable warps (all " +
                         std::to_string(ctx.warps.size()) + " skipped)");
    }
    for (const Warp& w : ctx.warps) {
        if (w.used) {
            ctx.wcsCards = w.reader->header().wcsCards;
            ctx.filter = w.reader->header().filter;
            break;
        }
    }
    // With input.allow_mixed_filters the FILTER card says so: "mixed: g DECam, i DECam".
    std::vector<std::string> filters;
    for (const Warp& w : ctx.warps) {
        const std::string& f = w.reader && w.used ? w.reader->header().filter : std::string();
        if (!f.empty() && std::find(filters.begin(), filters.end(), f) == filters.end()) {
            filters.push_back(f);
        }
    }
    if (filters.size() > 1) {
        std::string text = "mixed:";
        for (const std::string& f : filters) {
            text += (text.size() > 6 ? ", " : " ") + f;
        }
        ctx.filter = text.substr(0, 68);  // a FITS string value holds at most 68 characters
    }
}

}  // namespace

void openWarps(PatchContext& ctx) {
    guarded(ctx, "open", [&] { openReaders(ctx); });
    Verdicts verdicts;
    if (ctx.settings.validatePixels) {
        // The root scans the pixels; the verdicts are broadcast outside the guard, so a rank that
        // failed never leaves the others in the broadcast.
        guarded(
            ctx, "open",
            [&] {
                if (ctx.isRoot()) {
                    verdicts = validateInputs(ctx, /*pixels=*/true);
                }
            },
            /*injectAtStart=*/false);
        parallel::broadcastFromRoot(ctx.group, verdicts);
    }
    guarded(
        ctx, "open",
        [&] {
            applyVerdicts(ctx,
                          ctx.settings.validatePixels ? verdicts : validateInputs(ctx, /*pixels=*/false));
            settle(ctx);
            resolveMaskPlanes(ctx);
        },
        /*injectAtStart=*/false);
}

}  // namespace safeclip::pipeline
