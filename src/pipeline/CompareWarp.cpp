/// @file CompareWarp.cpp  The stages of coadd.mode = "comparewarp" (spec §10:
/// CompareWarpAssembleCoaddTask, pipe_tasks 5ad17f2c): cw_setup, cw_stats, cw_compare, cw_decide and
/// cw_edge. The mode's list (modeStages, Driver.cpp) is open, resume, cosmic_rays, weights,
/// cw_setup, setup, cw_stats, cw_compare, cw_decide, checkpoint, final, cw_edge, post, write: the
/// direct warps' weights (§3), the final MEAN stack (§7.2, CLIPPED a bad plane) and the decision
/// checkpoint are the safeclip mode's stages.
///
///  - cw_setup (every rank, identical): σ_i of each used warp (PSFSIGMA/FWHM card), the model σ_m
///    (comparewarp.model_psf_sigma, 0 = the largest σ_i), each warp's Gaussian matching kernel
///    (kernel::gaussianMatchingKernel), the detection controls and the tile halo
///    = largest kernel radius + the reach of detection on a difference (growth + minPixels − 1).
///  - cw_stats (warp i on group rank i mod R, all-gathered): the whole warp read and PSF-matched; its
///    template weight 1 / MEANCLIP(σ template_sigma_clip, template_clip_iter) of the scaled matched
///    variance over finite pixels without NO_DATA; with scale_warp_variance the ScaleVariance factor
///    of the scaled matched warp (a failure warns and uses 1). One whole warp in memory at a time
///    (geom::checkedCompareWarpStatsBytes).
///  - cw_compare (per tile of this rank, tile plus halo): every used warp PSF-matched, scaled, its
///    variance multiplied by its factor; the template (MEANCLIP, template clip settings, bad plane
///    NO_DATA, calcErrorFromInputVariance false, template weights, §8.2 variance fix); per warp
///    Δ_i = warp − template (variances add), detection on Δ_i (no smoothing, both polarities), its
///    detected pixels inside the tile cut into 8-connected pieces with an additive count of the
///    pixels bad for the prefilter; per warp the tile's "invalid" pixels (not in the approximate
///    nImage), "noData" pixels (kept on this rank for the final stack, and gathered to the root for
///    the decision checkpoint) and the matched EDGE pixels;
///    with preserve_contained_by_source the template's pixels inside the tile. Gathered to the
///    root, which assembles the whole template and detects its sources (kernel::detectTemplate:
///    threshold 5 × STDEVCLIP of the smoothed template, a statistic of the whole patch;
///    geom::checkedCompareWarpTemplateBytes).
///  - cw_decide (root): per warp its pieces merged into whole candidates (kernel::mergePieces),
///    prefilter, epoch counts, the temporal and spatial criteria, containment in a template
///    footprint; CLIPPED_i broadcast to the group.
///  - checkpoint (PatchCheckpoint.cpp, root, deferred): the decision checkpoint <patch>.reduced.h5,
///    which for this mode also holds each warp's template weight, variance factor and whole-patch
///    noData spans, σ_m and the largest kernel radius, the FOOTPRINTS rows, the EDGE spans and the
///    mean approximate nImage. With --resume, "resume" loads it and weights, cw_stats, cw_compare,
///    cw_decide and checkpoint are skipped; cw_setup keeps the checkpoint's σ_m and kernel radius
///    (the halo and PSFSIGMA of the first run). cosmic_rays runs again: "final" paints its pixels.
///  - cw_edge (root, after "final"): SENSOR_EDGE | INEXACT_PSF where any PSF-matched warp has EDGE
///    (applyAltEdgeMask).
///
/// Determinism: every pixel of the PSF-matched warps, the template and each Δ_i depends only on the
/// warps' pixels within the kernel radius; the halo covers the kernel radius plus detection's
/// reach, so each tile's detected pixels equal whole-patch detection there; pieces carry additive
/// counts and the root merges and decides once. Same bytes for any rank count, tile size, budget.
///
/// Deviations (also in README "Deviations"):
///  - without a manifest "psf_matched" companion (read as it is), the PSF-matched warp is made here
///    (Gaussian PSFs, analytic kernel: kernel/PsfMatch.h) from the direct warp's pixels inside the
///    patch box only;
///  - edge: a PSF-matched pixel needs the direct warp within its kernel radius, so the matched warp
///    has no value on an r_i-wide rim inside the patch box (upstream's warps usually extend beyond
///    the patch; safeclip's often equal it). Rim pixels are not comparable (left out of the
///    template, the approximate nImage and detection) but are NOT made NO_DATA for the final
///    stack, so the coadd keeps its rim;
///  - detectTemplate smooths with σ_m (upstream: the template's CoaddPsf, which is σ_m when every
///    PSF-matched warp has the model PSF) and runs no background steps (as configured upstream);
///  - the template's own prepareInputs skipping a PSF-matched warp is not separate from the direct
///    warp's: a warp with a non-finite template weight is a bad warp (input.on_bad_warp);
///  - with the cosmic-ray stage on, CR pixels are a bad plane of the template and invalid for the
///    approximate nImage and the prefilter too.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <iterator>
#include <limits>
#include <optional>

#include "safeclip/geom/MemoryBudget.h"
#include "safeclip/kernel/Detect.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/FootprintMerge.h"
#include "safeclip/kernel/PixelOps.h"
#include "safeclip/kernel/PsfMatch.h"
#include "safeclip/kernel/SampleStats.h"
#include "safeclip/kernel/ScaleVariance.h"
#include "safeclip/kernel/Stack.h"
#include "safeclip/parallel/Collectives.h"
#include "safeclip/parallel/Logging.h"
#include "safeclip/parallel/Signals.h"
#include "safeclip/pipeline/Driver.h"
#include "safeclip/pipeline/Guard.h"
#include "safeclip/pipeline/Stages.h"

namespace safeclip::pipeline {

using kernel::Box;
using kernel::MaskedImage;
using kernel::MaskPixel;
using kernel::SpanSet;
using parallel::log;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

/// Template detection (detectTemplate: SourceDetectionConfig defaults, thresholdType "stdev").
constexpr double kTemplateThreshold = 5.0;
constexpr double kTemplateNSigmaToGrow = 2.4;

/// Mask bits of this mode, from the patch's dictionary.
struct CwBits {
    MaskPixel match = 0;      ///< NO_DATA: a support with it is NaN in the PSF-matched warp
    MaskPixel noData = 0;     ///< NO_DATA (| CR with the cosmic-ray stage): the template's bad planes
    MaskPixel invalid = 0;    ///< NO_DATA | BAD | SAT (| CR): not counted in the approximate nImage
    MaskPixel prefilter = 0;  ///< comparewarp.prefilter_mask_planes (| CR)
    MaskPixel scaleVarianceIgnore = 0;
    MaskPixel edge = 0;
};

CwBits cwBits(const PatchContext& ctx) {
    const kernel::MaskDict& d = ctx.dict;
    CwBits b;
    b.match = d.bitMask("NO_DATA");
    b.noData = b.match | (ctx.settings.cosmicRays.detect ? ctx.bits.cr : 0);
    b.invalid = b.noData | d.bitMask("BAD") | d.bitMask("SAT");
    b.prefilter = ctx.settings.cosmicRays.detect ? ctx.bits.cr : 0;
    for (const std::string& p : ctx.settings.compareWarp.prefilterMaskPlanes) {
        b.prefilter |= d.bitMask(p);  // a plane no warp has masks nothing
    }
    b.scaleVarianceIgnore = d.bitMask("DETECTED") | d.bitMask("DETECTED_NEGATIVE") | d.bitMask("BAD") |
                            d.bitMask("SAT") | d.bitMask("NO_DATA") | d.bitMask("INTRP");
    b.edge = d.bitMask("EDGE");
    return b;
}

/// The matched warp's valid domain inside the patch: the patch box shrunk by the kernel radius
/// (outside it is the rim of the edge note).
Box matchedDomain(const PatchContext& ctx, const Warp& w) {
    return ctx.box.grown(-w.matchKernel.halfWidth).intersect(ctx.box);
}

// ---- cw_setup -------------------------------------------------------------------------------------

void setup(PatchContext& ctx) {
    // PSF-matched companions (the manifest's "psf_matched", LSST's psfMatchedWarps): read instead of
    // matching; on the direct warp's box, with its own mask planes conformed to the patch's dictionary.
    for (Warp* w : ctx.usedWarps()) {
        if (w->input.psfMatchedPath.empty()) {
            continue;
        }
        w->matchedReader = std::make_unique<io::WarpReader>(w->input.psfMatchedPath);
        const Box mb = w->matchedReader->header().box;
        if (mb != w->reader->header().box) {
            throw InputError(w->input.psfMatchedPath + ": PSF-matched companion of " + w->input.path +
                             " has the box " + mb.str() + ", the warp " + w->reader->header().box.str());
        }
        w->matchedReader->conformTo(ctx.dict);
    }
    std::vector<CompareWarpPsf> psfs;
    for (Warp* w : ctx.usedWarps()) {
        const auto& s = w->matchedReader ? w->matchedReader->header().psfSigma : w->reader->header().psfSigma;
        if (!s) {
            throw InputError(
                w->matchedReader
                    ? w->input.psfMatchedPath +
                          ": no PSFSIGMA or FWHM card on the PSF-matched "
                          "companion of " +
                          w->input.path + " (its PSF sigma should be the model PSF's)"
                    : w->input.path +
                          ": no PSFSIGMA or FWHM card; coadd.mode = comparewarp PSF-matches each "
                          "warp and needs its PSF sigma");
        }
        psfs.push_back({w->input.path, *s, w->matchedReader != nullptr});
    }
    // After a resume, σ_m and the largest kernel radius are the first run's (the decision
    // checkpoint's): cw_stats may have dropped a warp since that run's cw_setup measured them.
    CompareWarpGeometry g = compareWarpGeometry(
        ctx.settings, psfs, ctx.resumed ? std::optional<double>(ctx.cwModelSigma) : std::nullopt);
    ctx.cwModelSigma = g.modelSigma;
    if (!ctx.resumed) {
        ctx.cwMaxRadius = g.maxRadius;
    }
    std::size_t k = 0;
    int capped = 0;
    double worst = 0;
    for (Warp* w : ctx.usedWarps()) {
        w->matchKernel = std::move(g.kernels[k++]);
        // The kernel is capped at upstream's 21 px (half-width 10): past σ_k ~ 5.7 px its second
        // moment falls short of σ_k², so the matched PSF is narrower than the model's.
        const kernel::MatchingKernel& mk = w->matchKernel;
        if (mk.sigma > 0 && mk.secondMoment < 0.99 * mk.sigma * mk.sigma) {
            ++capped;
            worst = std::max(worst, mk.sigma);
        }
    }
    if (capped > 0 && ctx.isRoot()) {
        log().warn(
            "patch {}: comparewarp: {} warp(s) need a matching kernel wider than upstream's 21 px "
            "(sigma_k up to {:.2f} px); their PSF-matched PSF stays narrower than the model's "
            "sigma_m = {:.2f} px, so their stars can leave residuals; lower comparewarp.model_psf_sigma",
            ctx.name, capped, worst, ctx.cwModelSigma);
    }
    ctx.cwDetect = g.detect;
    ctx.cwTemplateDetect = g.templateDetect;
    ctx.halo = ctx.cwMaxRadius + detectionHalo(g.detect);  // = g.halo unless resumed
    ctx.detect.psfSigma = ctx.cwModelSigma;                // PSFSIGMA card of the coadd
    ctx.psfSource = "comparewarp model PSF sigma";
}

// ---- cw_stats -------------------------------------------------------------------------------------

struct WarpStats {
    std::int64_t index = 0;
    float templateWeight = 0;
    double factor = 1.0;
    std::string problem;  ///< "" or why the warp cannot be used

    template <class Archive>
    void serialize(Archive& ar, const unsigned int /*version*/) {
        ar& index& templateWeight& factor& problem;
    }
};

std::vector<WarpStats> measureStats(const PatchContext& ctx) {
    const CompareWarpSettings& cs = ctx.settings.compareWarp;
    const CwBits bits = cwBits(ctx);
    const int me = ctx.rank();
    const int n = parallel::sizeOf(ctx.group);
    std::vector<WarpStats> out;
    // Reused from warp to warp: a fresh whole-warp allocation per warp cost more in page faults
    // than the PSF matching itself (perf, B16 at 1 rank).
    MaskedImage raw;
    MaskedImage matched;
    std::vector<float> sample;
    for (std::size_t i = 0; i < ctx.warps.size(); ++i) {
        const Warp& w = ctx.warps[i];
        if (!w.used || static_cast<int>(i % static_cast<std::size_t>(n)) != me) {
            continue;
        }
        parallel::throwIfStopRequested("during the comparewarp statistics");
        const Box warpBox = w.reader->header().box;
        (void)geom::checkedCompareWarpStatsBytes(warpBox, ctx.settings.memoryBudget);
        if (w.matchedReader) {
            w.matchedReader->read(warpBox, matched);
            paintCosmicRays(w, warpBox, matched.mask.data().data(), ctx.bits.cr);
        } else {
            w.reader->read(warpBox, raw);
            paintCosmicRays(w, warpBox, raw.mask.data().data(), ctx.bits.cr);
            const int r = w.matchKernel.halfWidth;
            Box valid = warpBox.grown(-r);
            if (valid.width <= 0 || valid.height <= 0) {
                valid = Box{warpBox.x0 + r, warpBox.y0 + r, 0, 0};
            }
            matched.reshape(valid);  // every pixel is written
            kernel::psfMatchGaussianInto(raw, valid, w.matchKernel, bits.match, ctx.bits.noData, matched);
        }
        kernel::scaleInPlace(matched, w.scale);
        WarpStats st;
        st.index = static_cast<std::int64_t>(i);
        sample.clear();
        sample.reserve(static_cast<std::size_t>(matched.box().area()));
        const auto& var = matched.variance.data();
        const auto& mask = matched.mask.data();
        for (std::size_t k = 0; k < var.size(); ++k) {
            if ((mask[k] & bits.noData) == 0 && std::isfinite(var[k])) {
                sample.push_back(var[k]);
            }
        }
        const double meanVar = kernel::meanClipUnweighted(sample, cs.templateSigmaClip, cs.templateClipIter);
        st.templateWeight = static_cast<float>(1.0 / meanVar);
        if (!std::isfinite(st.templateWeight) || !(st.templateWeight > 0)) {
            st.problem =
                (w.matchedReader ? w.input.psfMatchedPath + " (PSF-matched companion of " + w.input.path + ")"
                                 : w.input.path) +
                ": no positive finite template weight for comparewarp (clipped mean variance of "
                "the PSF-matched warp " +
                std::to_string(meanVar) + ")";
        }
        if (cs.scaleWarpVariance && st.problem.empty()) {
            const kernel::ScaleVarianceResult r =
                kernel::scaleVarianceFactor(matched, bits.scaleVarianceIgnore);
            if (r.ok) {
                st.factor = r.factor;
            } else {
                log().warn(
                    "patch {}: {}: ScaleVariance failed (pixel-based factor {}, image-based {}); the "
                    "variance is left unscaled",
                    ctx.name, w.input.path, r.pixelFactor, r.imageFactor);
            }
        }
        out.push_back(std::move(st));
    }
    return out;
}

// ---- cw_compare -----------------------------------------------------------------------------------

/// One tile's contribution, gathered to the root.
struct TileResult {
    std::vector<std::vector<kernel::FootprintPiece>> pieces;  ///< per used warp
    std::vector<std::vector<kernel::Span>> invalid;           ///< per used warp
    std::vector<std::vector<kernel::Span>> noData;            ///< per used warp (Warp::noData)
    std::vector<float> templateImage;           ///< the template on the tile, row-major (preserve only)
    int x0 = 0, y0 = 0, width = 0, height = 0;  ///< the tile
    std::vector<kernel::Span> edge;             ///< union over warps of the matched EDGE pixels

    template <class Archive>
    void serialize(Archive& ar, const unsigned int /*version*/) {
        ar& pieces& invalid& noData& templateImage& x0& y0& width& height& edge;
    }
};

/// Runs of pixels of `box` (row-major flags) as spans.
std::vector<kernel::Span> flagSpans(const Box& box, const std::vector<char>& flags) {
    std::vector<kernel::Span> out;
    for (int y = box.y0; y < box.y1(); ++y) {
        const char* row = flags.data() + static_cast<std::size_t>(y - box.y0) * box.width;
        int x = 0;
        while (x < box.width) {
            if (row[x] == 0) {
                ++x;
                continue;
            }
            const int x0 = x;
            while (x < box.width && row[x] != 0) {
                ++x;
            }
            out.push_back({y, box.x0 + x0, box.x0 + x - 1});
        }
    }
    return out;
}

/// Pixel buffers of compareTile, kept from tile to tile of one rank: the next tile reshapes them
/// (same or smaller size: no allocation, no page faults). The memory model counts them per tile.
struct TileWorkspace {
    std::vector<MaskedImage> matched;  ///< per used warp, on cb
    MaskedImage raw;                   ///< one warp on hb
    MaskedImage tmpl;
    kernel::ImageF dImage;
    kernel::ImageF dVar;
};

TileResult compareTile(PatchContext& ctx, const Box& tile, const std::vector<Warp*>& warps,
                       const std::vector<float>& templateWeights, const CwBits& bits, TileWorkspace& ws) {
    const std::size_t n = warps.size();
    const Box hb = tile.grown(ctx.halo).intersect(ctx.box);                    // raw reads
    const Box cb = tile.grown(ctx.halo - ctx.cwMaxRadius).intersect(ctx.box);  // matched, template, Δ
    (void)geom::checkedCompareWarpTileBytes(hb, static_cast<int>(n), ctx.settings.memoryBudget);
    // 1. PSF-matched, scaled warps on cb; the rim (outside the matched domain) is NaN + NO_DATA.
    std::vector<MaskedImage>& matched = ws.matched;
    matched.resize(n);
    {
        MaskedImage& raw = ws.raw;
        for (std::size_t i = 0; i < n; ++i) {
            const Warp& w = *warps[i];
            MaskedImage& m = matched[i];
            if (w.matchedReader) {  // the companion, read on cb as it is
                w.matchedReader->read(cb, m);
                paintCosmicRays(w, cb, m.mask.data().data(), ctx.bits.cr);
                kernel::scaleInPlace(m, w.scale);
                continue;
            }
            warps[i]->reader->read(hb, raw);
            paintCosmicRays(w, hb, raw.mask.data().data(), ctx.bits.cr);
            m.reshape(cb);
            const Box valid = cb.intersect(matchedDomain(ctx, w));
            if (!(valid == cb)) {  // the rim outside the matched domain
                m.image.fill(kNaN);
                m.variance.fill(kNaN);
                m.mask.fill(ctx.bits.noData);
            }
            if (!valid.empty()) {
                kernel::psfMatchGaussianInto(raw, valid, w.matchKernel, bits.match, ctx.bits.noData, m);
            }
            kernel::scaleInPlace(m, w.scale);
        }
    }
    // 2. The template (spec §10 step 1): MEANCLIP, bad planes NO_DATA, error from the scatter, §8.2
    //    variance fix, mask cleared.
    kernel::StackControl tc;
    tc.statistic = kernel::Statistic::MeanClip;
    tc.sigmaClip = ctx.settings.compareWarp.templateSigmaClip;
    tc.clipIter = ctx.settings.compareWarp.templateClipIter;
    tc.andMask = bits.noData;
    tc.noGoodPixelsMask = ctx.bits.noData;
    tc.calcErrorFromInputVariance = false;
    tc.validate();
    MaskedImage& tmpl = ws.tmpl;
    tmpl.reshape(cb);  // stackRegion writes every pixel of cb
    {
        std::vector<const MaskedImage*> ptrs;
        ptrs.reserve(matched.size());
        for (const MaskedImage& m : matched) {
            ptrs.push_back(&m);
        }
        kernel::stackRegion(ptrs, templateWeights, tc, cb, tmpl);
    }
    for (auto& v : tmpl.variance.data()) {
        if (!(v > 0) || !std::isfinite(v)) {
            v = std::numeric_limits<float>::infinity();
        }
    }
    tmpl.mask.fill(0);
    TileResult out;
    out.pieces.resize(n);
    out.invalid.resize(n);
    out.noData.resize(n);
    out.x0 = tile.x0;
    out.y0 = tile.y0;
    out.width = tile.width;
    out.height = tile.height;
    if (ctx.settings.compareWarp.preserveContainedBySource) {  // detected on the root (whole patch)
        out.templateImage.reserve(static_cast<std::size_t>(tile.area()));
        for (int y = tile.y0; y < tile.y1(); ++y) {
            const float* row = &tmpl.image(tile.x0, y);
            out.templateImage.insert(out.templateImage.end(), row, row + tile.width);
        }
    }
    // 3. Per warp: Δ_i, detection, pieces, invalid / noData / EDGE pixels of the tile.
    kernel::ImageF& dImage = ws.dImage;
    kernel::ImageF& dVar = ws.dVar;
    dImage.reshape(cb);  // written in full per warp below
    dVar.reshape(cb);
    std::vector<char> invalid(static_cast<std::size_t>(tile.area()));
    std::vector<char> noData(static_cast<std::size_t>(tile.area()));
    std::vector<char> prefilterBad(static_cast<std::size_t>(tile.area()));
    std::vector<char> edge(static_cast<std::size_t>(tile.area()), 0);
    for (std::size_t i = 0; i < n; ++i) {
        Warp& w = *warps[i];
        MaskedImage& m = matched[i];
        const double factor = w.varianceFactor;
        for (std::size_t k = 0; k < m.variance.data().size(); ++k) {
            const float v = static_cast<float>(static_cast<double>(m.variance.data()[k]) * factor);
            dImage.data()[k] = m.image.data()[k] - tmpl.image.data()[k];
            dVar.data()[k] = v + tmpl.variance.data()[k];
        }
        const SpanSet detected =
            kernel::uniteAll(kernel::detectFootprints(dImage, dVar, ctx.cwDetect)).clippedTo(tile);
        const Box dom = matchedDomain(ctx, w);
        for (int y = tile.y0; y < tile.y1(); ++y) {
            for (int x = tile.x0; x < tile.x1(); ++x) {
                const std::size_t k = static_cast<std::size_t>(y - tile.y0) * tile.width + (x - tile.x0);
                const bool finite = std::isfinite(dImage(x, y));
                const MaskPixel mk = m.mask(x, y);
                invalid[k] = static_cast<char>(!finite || (mk & bits.invalid) != 0);
                noData[k] = static_cast<char>(!finite && dom.contains(x, y));
                prefilterBad[k] = static_cast<char>(!finite || (mk & bits.prefilter) != 0);
                if (dom.contains(x, y) && (mk & bits.edge) != 0) {
                    edge[k] = 1;
                }
            }
        }
        out.invalid[i] = flagSpans(tile, invalid);
        out.noData[i] = flagSpans(tile, noData);
        w.noData = w.noData.unite(SpanSet::fromSortedSpans(out.noData[i]));
        const SpanSet bad = SpanSet::fromSortedSpans(flagSpans(tile, prefilterBad));
        for (const SpanSet& piece : kernel::connectedComponents8(detected)) {
            kernel::FootprintPiece p;
            p.spans = piece.spans();
            p.ign.push_back(piece.intersectArea(bad));
            p.det.push_back(0);
            out.pieces[i].push_back(std::move(p));
        }
    }
    out.edge = flagSpans(tile, edge);
    return out;
}

/// Root: the tiles' results into the patch's candidates, invalid/NO_DATA/EDGE spans, and the
/// template's sources (detected here, over the whole patch).
void collectTiles(PatchContext& ctx, const std::vector<std::vector<TileResult>>& gathered,
                  std::chrono::steady_clock::time_point t0) {
    const std::vector<Warp*> used = ctx.usedWarps();
    const std::size_t n = used.size();
    ctx.cwPieces.assign(n, {});
    std::vector<std::vector<kernel::Span>> invalid(n);
    std::vector<std::vector<kernel::Span>> noData(n);  // the whole patch's, for the decision checkpoint
    std::vector<kernel::Span> edge;
    const bool preserve = ctx.settings.compareWarp.preserveContainedBySource;
    kernel::ImageF templateImage;
    if (preserve) {  // its bytes were checked on every rank in the tiles' stage
        templateImage = kernel::ImageF(ctx.box, kNaN);
    }
    for (const auto& fromRank : gathered) {
        for (const TileResult& r : fromRank) {
            for (std::size_t i = 0; i < n; ++i) {
                ctx.cwPieces[i].insert(ctx.cwPieces[i].end(), r.pieces[i].begin(), r.pieces[i].end());
                invalid[i].insert(invalid[i].end(), r.invalid[i].begin(), r.invalid[i].end());
                noData[i].insert(noData[i].end(), r.noData[i].begin(), r.noData[i].end());
            }
            if (preserve) {
                for (int y = 0; y < r.height; ++y) {
                    std::copy_n(r.templateImage.data() + static_cast<std::size_t>(y) * r.width, r.width,
                                &templateImage(r.x0, r.y0 + y));
                }
            }
            edge.insert(edge.end(), r.edge.begin(), r.edge.end());
        }
    }
    ctx.cwTemplateFootprints = SpanSet();
    if (preserve) {
        const auto td0 = std::chrono::steady_clock::now();
        const kernel::DetectControl& t = ctx.cwTemplateDetect;
        const kernel::TemplateDetection td = kernel::detectTemplate(
            templateImage, t.psfSigma, t.nSigmaForKernel, t.thresholdValue, t.nSigmaToGrow);
        ctx.cwTemplateFootprints = td.footprints;
        log().info(
            "patch {}: comparewarp: template sources above {:.6g} (5 x clipped stdev {:.6g} of the "
            "smoothed template): {} px in {:.2f} s",
            ctx.name, td.threshold, td.stdev, td.footprints.area(),
            std::chrono::duration<double>(std::chrono::steady_clock::now() - td0).count());
    }
    ctx.cwInvalid.clear();
    for (auto& s : invalid) {
        ctx.cwInvalid.push_back(SpanSet::fromSpans(std::move(s)));
    }
    ctx.cwEdge = SpanSet::fromSpans(std::move(edge));
    for (std::size_t i = 0; i < n; ++i) {  // the root's tiles' spans are among them
        used[i]->noData = SpanSet::fromSpans(std::move(noData[i]));
    }
    log().info(
        "patch {}: comparewarp: template and differences of {} warps in {} tiles of {} px (halo {}) "
        "in {:.2f} s",
        ctx.name, n, ctx.tiles.tiles.size(), ctx.tiles.tileSize, ctx.halo,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

// ---- cw_decide ------------------------------------------------------------------------------------

/// The temporal criterion's epoch limit for a mean approximate nImage nBar (spec §10 step 8):
/// E = int(min(maxFractionEpochsLow·N̄, maxNumEpochs + maxFractionEpochsHigh·N̄)).
int maxEpochsAt(const CompareWarpSettings& cs, double nBar) {
    return static_cast<int>(
        std::min(cs.maxFractionEpochsLow * nBar, cs.maxNumEpochs + cs.maxFractionEpochsHigh * nBar));
}

/// The smallest N̄ with E >= 1 by the config (2.5 with the defaults: 0.4·N̄ >= 1); +inf when no N̄
/// gives an epoch (a zero low fraction, or maxNumEpochs < 1 without a high fraction). For the log
/// line only: the flag itself is maxEpochsAt(mean) == 0, the decision's own formula.
double smallestNImageWithAnEpoch(const CompareWarpSettings& cs) {
    const double inf = std::numeric_limits<double>::infinity();
    const double low = cs.maxFractionEpochsLow > 0 ? 1.0 / cs.maxFractionEpochsLow : inf;
    const double high = cs.maxNumEpochs >= 1           ? 0.0
                        : cs.maxFractionEpochsHigh > 0 ? (1.0 - cs.maxNumEpochs) / cs.maxFractionEpochsHigh
                                                       : inf;
    return std::max(low, high);
}

void decide(PatchContext& ctx) {
    const auto t0 = std::chrono::steady_clock::now();
    const CompareWarpSettings& cs = ctx.settings.compareWarp;
    const std::vector<Warp*> warps = ctx.usedWarps();
    const std::size_t n = warps.size();
    // Approximate nImage (step 3): the used warps minus those invalid at the pixel.
    std::int64_t invalidTotal = 0;
    for (const SpanSet& s : ctx.cwInvalid) {
        invalidTotal += s.area();
    }
    const double meanNImage =
        static_cast<double>(n) - static_cast<double>(invalidTotal) / static_cast<double>(ctx.box.area());
    auto meanNImageOver = [&](const SpanSet& c) {
        std::int64_t sum = static_cast<std::int64_t>(n) * c.area();
        for (const SpanSet& s : ctx.cwInvalid) {
            sum -= c.intersectArea(s);
        }
        return static_cast<double>(sum) / static_cast<double>(c.area());
    };
    // Candidates (steps 4-5) and epoch counts (step 6).
    std::vector<kernel::MergedFootprints> cands(n);
    std::vector<std::vector<bool>> kept(n);
    kernel::ImageU16 epochs(ctx.box, 0);
    for (std::size_t i = 0; i < n; ++i) {
        try {
            cands[i] = kernel::mergePieces(ctx.cwPieces[i], 1);
        } catch (const Error& e) {
            throw Error("patch " + ctx.name + ": " + e.what(), e.code());
        }
        ctx.cwPieces[i].clear();
        for (std::size_t j = 0; j < cands[i].footprints.size(); ++j) {
            const SpanSet& c = cands[i].footprints[j];
            const std::int64_t good = c.area() - cands[i].counts[j][0].ign;
            const bool keep = !cs.prefilter ||
                              static_cast<double>(good) / static_cast<double>(c.area()) > cs.prefilterRatio;
            kept[i].push_back(keep);
            if (keep) {  // the candidates of one warp are disjoint: +1 per warp
                for (const kernel::Span& s : c.spans()) {
                    std::uint16_t* row = epochs.row(s.y);
                    for (int x = s.x0; x <= s.x1; ++x) {
                        ++row[x - ctx.box.x0];
                    }
                }
            }
        }
    }
    const std::vector<SpanSet> templateFps = kernel::connectedComponents8(ctx.cwTemplateFootprints);
    // Filter (step 8).
    std::int64_t id = 0;
    std::int64_t nArtefacts = 0;
    std::int64_t clippedPixels = 0;
    for (std::size_t i = 0; i < n; ++i) {
        std::vector<SpanSet> artefacts;
        for (std::size_t j = 0; j < cands[i].footprints.size(); ++j) {
            const SpanSet& c = cands[i].footprints[j];
            const Box bb = c.bbox();
            kernel::CompareWarpRow row;
            row.id = id++;
            row.visit = warps[i]->visit;
            row.x0 = bb.x0;
            row.y0 = bb.y0;
            row.x1 = bb.x1() - 1;
            row.y1 = bb.y1() - 1;
            row.area = c.area();
            row.nGood = c.area() - cands[i].counts[j][0].ign;
            row.meanNImage = meanNImageOver(c);
            if (!kept[i][j]) {
                row.rule = "dropped: prefilter";
                ctx.cwRows.push_back(std::move(row));
                continue;
            }
            const double nBar = row.meanNImage;
            const int maxEpochs = maxEpochsAt(cs, nBar);
            std::int64_t pass = 0;
            for (const kernel::Span& s : c.spans()) {
                const std::uint16_t* r = epochs.row(s.y);
                for (int x = s.x0; x <= s.x1; ++x) {
                    const int e = r[x - ctx.box.x0];
                    pass += (e > 0 && e <= maxEpochs) ? 1 : 0;
                }
            }
            row.maxEpochs = maxEpochs;
            row.epochFraction = static_cast<double>(pass) / static_cast<double>(c.area());
            if (!(row.epochFraction > cs.spatialThreshold)) {
                row.rule = "kept: spatial";
            } else if (cs.preserveContainedBySource &&
                       std::any_of(templateFps.begin(), templateFps.end(),
                                   [&](const SpanSet& f) { return f.intersectArea(c) == c.area(); })) {
                row.rule = "kept: contained by source";
            } else {
                row.rule = "artefact";
                artefacts.push_back(c);
            }
            ctx.cwRows.push_back(std::move(row));
        }
        Warp& w = *warps[i];
        nArtefacts += static_cast<std::int64_t>(artefacts.size());
        w.clipped = kernel::uniteAll(artefacts);
        w.nClippedPixels = w.clipped.area();
        clippedPixels += w.nClippedPixels;
    }
    ctx.cwInvalid.clear();
    ctx.cwMeanNImage = meanNImage;  // for the decision checkpoint
    ctx.result.nFootprints = static_cast<std::int64_t>(ctx.cwRows.size());
    ctx.result.nClippedFootprints = nArtefacts;
    // "Nothing can be clipped" (spec §10 step 8): E = 0 at the patch's mean nImage. The threshold
    // follows from comparewarp.max_fraction_epochs_low/high and max_num_epochs (2.5 with the
    // defaults), not a fixed number. A footprint whose own mean nImage is higher can still pass.
    ctx.result.nothingClippable = compareWarpNothingClippable(cs, meanNImage);
    if (ctx.result.nothingClippable) {
        log().warn(
            "patch {}: comparewarp: mean nImage {:.2f} < {:.2f}: no artefact can be clipped (E = 0: "
            "int(min({}·N, {} + {}·N)) with comparewarp.max_fraction_epochs_low, max_num_epochs, "
            "max_fraction_epochs_high) where the coverage is the mean; report.json "
            "nothing_can_be_clipped, FITS card CWNOCLIP (spec §10 step 8)",
            ctx.name, meanNImage, smallestNImageWithAnEpoch(cs), cs.maxFractionEpochsLow, cs.maxNumEpochs,
            cs.maxFractionEpochsHigh);
    }
    log().info(
        "patch {}: comparewarp: model psf sigma {:.3f} px, {} candidates, {} artefacts; {} CLIPPED warp "
        "pixels; mean approximate nImage {:.2f}; {:.2f} s",
        ctx.name, ctx.cwModelSigma, ctx.cwRows.size(), nArtefacts, clippedPixels, meanNImage,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

void broadcastClipped(PatchContext& ctx) {
    std::vector<std::pair<std::vector<kernel::Span>, std::int64_t>> clipped;
    if (ctx.isRoot()) {
        for (const Warp& w : ctx.warps) {
            clipped.push_back({w.clipped.spans(), w.nClippedPixels});
        }
    }
    parallel::broadcastFromRoot(ctx.group, clipped);
    if (!ctx.isRoot()) {
        for (std::size_t i = 0; i < ctx.warps.size(); ++i) {
            ctx.warps[i].clipped = SpanSet::fromSortedSpans(std::move(clipped[i].first));
            ctx.warps[i].nClippedPixels = clipped[i].second;
        }
    }
}

}  // namespace

CompareWarpGeometry compareWarpGeometry(const PatchSettings& settings,
                                        const std::vector<CompareWarpPsf>& psfs,
                                        std::optional<double> modelSigma) {
    const CompareWarpSettings& cs = settings.compareWarp;
    CompareWarpGeometry g;
    double sigmaMax = 0;
    for (const CompareWarpPsf& p : psfs) {
        sigmaMax = std::max(sigmaMax, p.sigma);
    }
    g.modelSigma = modelSigma ? *modelSigma : cs.modelPsfSigma > 0 ? cs.modelPsfSigma : sigmaMax;
    for (const CompareWarpPsf& p : psfs) {
        if (p.psfMatched) {  // already matched: nothing to convolve
            g.kernels.push_back(kernel::gaussianMatchingKernel(g.modelSigma, g.modelSigma));
            continue;
        }
        if (p.sigma > g.modelSigma) {
            throw ConfigError("comparewarp.model_psf_sigma = " + std::to_string(g.modelSigma) +
                              " is smaller than the PSF sigma " + std::to_string(p.sigma) + " of " + p.path +
                              " (no deconvolution); set 0 to use the largest warp PSF sigma");
        }
        g.kernels.push_back(kernel::gaussianMatchingKernel(p.sigma, g.modelSigma));
        g.maxRadius = std::max(g.maxRadius, g.kernels.back().halfWidth);
    }
    kernel::DetectControl& d = g.detect;
    d.doSmooth = false;
    d.psfSigma = g.modelSigma;  // the PSF-matched warps' PSF: only the growth radius uses it
    d.thresholdValue = cs.threshold;
    d.polarity = kernel::Polarity::Both;
    d.nSigmaToGrow = cs.nSigmaToGrow;
    d.minPixels = cs.minPixels;
    d.validate();
    kernel::DetectControl& t = g.templateDetect;
    t.psfSigma = g.modelSigma;
    t.thresholdValue = kTemplateThreshold;
    t.polarity = kernel::Polarity::Positive;
    t.nSigmaToGrow = kTemplateNSigmaToGrow;
    t.minPixels = 1;
    t.nSigmaForKernel = settings.detect.nSigmaForKernel;
    t.validate();
    // The template's sources are detected on the root over the whole patch: no halo for them.
    g.halo = g.maxRadius + detectionHalo(d);
    g.detectTemplate = cs.preserveContainedBySource;
    return g;
}

geom::CompareWarpStage compareWarpStage(const CompareWarpGeometry& geometry, std::vector<bool> psfMatched) {
    return geom::CompareWarpStage{geometry.maxRadius, std::move(psfMatched), geometry.detectTemplate};
}

bool compareWarpNothingClippable(const CompareWarpSettings& cs, double meanNImage) {
    return maxEpochsAt(cs, meanNImage) <= 0;
}

void compareWarpSetup(PatchContext& ctx) {
    guarded(ctx, "cw_setup", [&] { setup(ctx); });
}

void compareWarpStats(PatchContext& ctx) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<WarpStats> mine;
    guarded(ctx, "cw_stats", [&] { mine = measureStats(ctx); });
    for (const auto& fromRank : parallel::allGather(ctx.group, mine)) {
        for (const WarpStats& st : fromRank) {
            Warp& w = ctx.warps[static_cast<std::size_t>(st.index)];
            w.templateWeight = st.templateWeight;
            w.varianceFactor = st.factor;
            if (!st.problem.empty()) {
                ctx.failWarp(w, st.problem);  // the same gathered verdicts on every rank
            }
        }
    }
    ctx.requireUsedWarps();
    if (ctx.isRoot()) {
        log().info("patch {}: comparewarp template weights and variance factors of {} warps in {:.2f} s",
                   ctx.name, ctx.usedWarps().size(),
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
}

void compareWarpCompare(PatchContext& ctx) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<TileResult> mine;
    guarded(ctx, "cw_compare", [&] {
        if (ctx.settings.compareWarp.preserveContainedBySource) {  // the root's template, checked on all
            (void)geom::checkedCompareWarpTemplateBytes(ctx.box, ctx.settings.memoryBudget);
        }
        const std::vector<Warp*> warps = ctx.usedWarps();
        std::vector<float> weights;
        weights.reserve(warps.size());
        for (const Warp* w : warps) {
            weights.push_back(w->templateWeight);
        }
        const CwBits bits = cwBits(ctx);
        for (Warp& w : ctx.warps) {
            w.noData = SpanSet();
        }
        TileWorkspace ws;
        for (std::size_t t : ctx.myTiles()) {
            parallel::throwIfStopRequested("during the comparewarp comparison");
            mine.push_back(compareTile(ctx, ctx.tiles.tiles[t], warps, weights, bits, ws));
        }
    });
    const auto gathered = parallel::gatherToRoot(ctx.group, mine);
    mine.clear();
    guardedOnRoot(ctx, "cw_compare", [&] { collectTiles(ctx, gathered, t0); });
}

void compareWarpDecide(PatchContext& ctx) {
    guardedOnRoot(ctx, "cw_decide", [&] { decide(ctx); });
    broadcastClipped(ctx);
}

void compareWarpEdge(PatchContext& ctx) {
    guardedOnRoot(ctx, "cw_edge", [&] {
        // applyAltEdgeMask: SENSOR_EDGE | INEXACT_PSF where any PSF-matched warp has EDGE.
        ctx.cwEdge.paint(ctx.coadd.mask, ctx.bits.sensorEdge | ctx.bits.inexactPsf);
        ctx.cwEdge = SpanSet();
    });
}

}  // namespace safeclip::pipeline
