#include "safeclip/app/PatchCoadd.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include "safeclip/Version.h"
#include "safeclip/app/Logging.h"
#include "safeclip/geom/Plan.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/ClipDecision.h"
#include "safeclip/kernel/Detect.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/Interp.h"
#include "safeclip/kernel/MaskDict.h"
#include "safeclip/kernel/SpanSet.h"
#include "safeclip/kernel/Stack.h"

namespace safeclip::app {

using kernel::Box;
using kernel::MaskedImage;
using kernel::MaskPixel;
using kernel::SpanSet;

/// The keys that change pixels, as "key = value" lines in schema order. Execution keys (memory,
/// tiles, logging, paths, bad-warp policy) are left out so that the coadd's bytes do not depend
/// on them (determinism across budgets, tile sizes and rank counts).
std::vector<std::string> scienceConfig(const Config& cfg) {
    static const char* const kExecution[] = {"input.manifest", "output.", "checkpoint.",
                                             "tile.",          "memory.", "log."};
    std::vector<std::string> lines;
    for (const KeyDef& k : configSchema()) {
        bool skip = false;
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
                v = std::to_string(cfg.getInt(k.name));
                break;
            case KeyType::Double:
                std::snprintf(buf, sizeof buf, "%.17g", cfg.getDouble(k.name));
                v = buf;
                break;
            case KeyType::String:
                v = "\"" + cfg.getString(k.name) + "\"";
                break;
            case KeyType::StringList:
                for (const auto& e : cfg.getStringList(k.name)) {
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

namespace {
/// FNV-1a 64 of the lines, as 16 hex digits.
std::string hashLines(const std::vector<std::string>& lines) {
    std::uint64_t h = 14695981039346656037ULL;
    for (const auto& line : lines) {
        for (const char c : line + "\n") {
            h ^= static_cast<unsigned char>(c);
            h *= 1099511628211ULL;
        }
    }
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
    return buf;
}

}  // namespace

std::string scienceConfigHash(const Config& cfg) {
    return hashLines(scienceConfig(cfg));
}

namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// One input warp and everything learnt about it.
struct Warp {
    WarpInput input;
    std::int64_t visit = -1;
    std::unique_ptr<io::WarpReader> reader;
    float scale = 1.0F;   ///< s_i (float32, as upstream)
    float weight = 0.0F;  ///< w_i
    bool used = false;
    std::string status;           ///< "used" or "skipped: reason"
    kernel::WarpMaskSpans spans;  ///< bad / DETECTED spans from pass 1 (raw mask)
    SpanSet clipped;              ///< CLIPPED_i (footprints + big footprints)
    std::int64_t nClippedPixels = 0;
    std::int64_t nBigFootprints = 0;
};

/// Mask bits of the canonical dictionary used by the pipeline.
struct Bits {
    MaskPixel bad = 0;  ///< B (stack.bad_mask_planes)
    MaskPixel det = 0;  ///< DETECTED | DETECTED_NEGATIVE
    MaskPixel clipped = 0;
    MaskPixel rejected = 0;
    MaskPixel sensorEdge = 0;
    MaskPixel inexactPsf = 0;
    MaskPixel noData = 0;
    MaskPixel edge = 0;
    MaskPixel intrp = 0;
    MaskPixel remove = 0;  ///< stack.remove_mask_planes
};

/// Spans of `s` in rows [y0, y1) (binary search on the sorted spans; no full scan).
SpanSet restrictRows(const SpanSet& s, int y0, int y1) {
    const auto& sp = s.spans();
    auto lo =
        std::lower_bound(sp.begin(), sp.end(), y0, [](const kernel::Span& a, int y) { return a.y < y; });
    auto hi = std::lower_bound(lo, sp.end(), y1, [](const kernel::Span& a, int y) { return a.y < y; });
    return SpanSet::fromSortedSpans(std::vector<kernel::Span>(lo, hi));
}

std::string joinVisits(const std::vector<Warp*>& warps) {
    std::string out;
    for (const Warp* w : warps) {
        if (!out.empty()) {
            out += ",";
        }
        out += std::to_string(w->visit);
    }
    return out;
}

/// Apply the zero-point scale in place (MaskedImage *= s: image *= s, variance *= s*s in float32).
void scaleInPlace(MaskedImage& mi, float s) {
    const float s2 = s * s;
    auto& img = mi.image.data();
    auto& var = mi.variance.data();
    for (std::size_t k = 0; k < img.size(); ++k) {
        img[k] *= s;
        var[k] *= s2;
    }
}

class PatchRun {
public:
    PatchRun(std::string name, const Box& box, const std::vector<WarpInput>& inputs, const Config& cfg)
        : m_name(std::move(name)),
          m_box(box),
          m_cfg(cfg),
          m_dict(kernel::MaskDict::canonical()),
          m_requireSameBox(box.empty()) {
        m_skipBad = cfg.getString("input.on_bad_warp") == "skip";
        m_budget = geom::parseByteSize(cfg.getString("memory.max_per_rank"), "memory.max_per_rank");
        openWarps(inputs);
        setupBits();
        setupControls();
    }

    PatchResult run(const std::string& outPath) {
        const auto t0 = Clock::now();
        PatchResult result;
        result.name = m_name;
        result.outputPath = outPath;
        result.nWarps = static_cast<int>(m_warps.size());

        computeWeights();
        const bool safeclip = m_cfg.getString("coadd.mode") == "safeclip";
        if (safeclip) {
            trialStacks();
            detectAndDecide(result);
        }
        MaskedImage coadd(m_box);
        kernel::ImageU16 nImage(m_box, 0);
        finalStack(coadd, nImage);

        kernel::PostBits pb{m_bits.noData, m_bits.intrp, m_bits.inexactPsf,
                            static_cast<MaskPixel>(m_bits.sensorEdge | m_bits.clipped | m_bits.rejected)};
        kernel::InterpControl ic;
        ic.enabled = m_cfg.getBool("interp.enabled");
        ic.useFallbackValueAtEdge = m_cfg.getBool("interp.use_fallback_value_at_edge");
        ic.negativeFallbackAllowed = m_cfg.getBool("interp.negative_fallback_allowed");
        ic.transpose = m_cfg.getBool("interp.transpose");
        const kernel::PostResult post = kernel::postProcessCoadd(coadd, pb, ic);
        log().info("patch {}: post-processing: {} NO_DATA pixels, {} interpolated (fallback {:.4g})", m_name,
                   post.nNoData, post.nInterpolated, post.fallbackValue);

        for (const MaskPixel m : coadd.mask.data()) {
            if ((m & m_bits.clipped) != 0) {
                ++result.nCoaddClippedPixels;
            }
        }
        for (const Warp& w : m_warps) {
            if (w.used) {
                ++result.nUsed;
                result.nClippedWarpPixels += w.nClippedPixels;
                result.nBigFootprints += w.nBigFootprints;
            }
        }
        write(outPath, coadd, nImage, safeclip);
        result.seconds = secondsSince(t0);
        return result;
    }

private:
    // ---- setup ---------------------------------------------------------------------------------
    void fail(Warp& w, const std::string& why) {
        if (!m_skipBad) {
            throw InputError(why);
        }
        log().warn("skipping warp: {}", why);
        w.used = false;
        w.status = "skipped: " + why;
        w.reader.reset();
    }

    void openWarps(const std::vector<WarpInput>& inputs) {
        if (inputs.empty()) {
            throw InputError("patch " + m_name + ": no warps given");
        }
        m_warps.resize(inputs.size());
        for (std::size_t i = 0; i < inputs.size(); ++i) {
            Warp& w = m_warps[i];
            w.input = inputs[i];
            w.visit = inputs[i].visit >= 0 ? inputs[i].visit : static_cast<std::int64_t>(i);
            try {
                w.reader = std::make_unique<io::WarpReader>(inputs[i].path);
                const auto& h = w.reader->header();
                if (inputs[i].visit < 0 && h.visit) {
                    w.visit = *h.visit;
                }
                w.used = true;
                w.status = "used";
            } catch (const InputError& e) {
                fail(w, e.what());
            }
        }
        for (std::size_t i = 0; i < m_warps.size(); ++i) {
            for (std::size_t j = 0; j < i; ++j) {
                if (m_warps[i].visit == m_warps[j].visit) {
                    throw InputError(m_warps[i].input.path + ": duplicate visit " +
                                     std::to_string(m_warps[i].visit) + " (also " + m_warps[j].input.path +
                                     "); give each warp its own visit id (VISIT card or manifest)");
                }
            }
        }
        // The patch box: the manifest's, or the warps' common box.
        for (Warp& w : m_warps) {
            if (!w.used) {
                continue;
            }
            const Box wb = w.reader->header().box;
            if (m_box.empty()) {
                m_box = wb;
            }
            if (!wb.contains(m_box)) {
                fail(w, w.input.path + ": mismatched grid: warp box " + wb.str() +
                            " does not cover patch box " + m_box.str());
            } else if (m_requireSameBox && wb != m_box) {
                // No patch box given (`safeclip coadd`): every warp must be on the same box.
                fail(w, w.input.path + ": mismatched grid: warp box " + wb.str() + " differs from " +
                            m_box.str() + " of the first warp");
            }
        }
        for (Warp& w : m_warps) {
            if (!w.used) {
                continue;
            }
            const auto& h = w.reader->header();
            if (!h.calibrationMean || !(*h.calibrationMean > 0) || !std::isfinite(*h.calibrationMean)) {
                fail(w, w.input.path +
                            ": missing zero point (no FLUXMAG0 card and no PhotoCalib calibrationMean)");
                continue;
            }
            if (h.maskPlanes.bitOf("DETECTED") < 0) {
                log().warn(
                    "{}: no DETECTED mask plane: this warp can never be a clip candidate (spec §11.11)",
                    w.input.path);
            }
            w.reader->conformTo(m_dict);
            // s_i = c_i / f_zp, f_zp = 10^(-0.4 (zp - 31.4)) nJy; upstream casts s to float32 (§3.2-3).
            const double zp = m_cfg.getDouble("stack.zero_point");
            const double fzp = std::pow(10.0, -0.4 * (zp - 31.4));
            w.scale = static_cast<float>(*h.calibrationMean / fzp);
        }
        if (m_box.empty()) {
            throw InputError("patch " + m_name + ": no readable warps (all " +
                             std::to_string(m_warps.size()) + " skipped)");
        }
        m_wcsCards.clear();
        for (const Warp& w : m_warps) {
            if (w.used) {
                m_wcsCards = w.reader->header().wcsCards;
                m_filter = w.reader->header().filter;
                break;
            }
        }
    }

    void setupBits() {
        m_bits.bad = 0;
        for (const auto& name : m_cfg.getStringList("stack.bad_mask_planes")) {
            const int bit = m_dict.bitOf(name);
            if (bit < 0) {
                throw ConfigError("stack.bad_mask_planes: unknown mask plane '" + name +
                                  "' (not a default plane and not in any input's MP_* cards)");
            }
            m_bits.bad |= static_cast<MaskPixel>(1U << static_cast<unsigned>(bit));
        }
        m_bits.det = m_dict.bitMask("DETECTED") | m_dict.bitMask("DETECTED_NEGATIVE");
        m_bits.clipped = m_dict.bitMask("CLIPPED");
        m_bits.rejected = m_dict.bitMask("REJECTED");
        m_bits.sensorEdge = m_dict.bitMask("SENSOR_EDGE");
        m_bits.inexactPsf = m_dict.bitMask("INEXACT_PSF");
        m_bits.noData = m_dict.bitMask("NO_DATA");
        m_bits.edge = m_dict.bitMask("EDGE");
        m_bits.intrp = m_dict.bitMask("INTRP");
        m_bits.remove = 0;
        for (const auto& name : m_cfg.getStringList("stack.remove_mask_planes")) {
            m_bits.remove |= m_dict.bitMask(name);
        }
    }

    kernel::StackControl makeControl(kernel::Statistic stat, MaskPixel andMask) const {
        kernel::StackControl c;
        c.statistic = stat;
        c.sigmaClip = m_cfg.getDouble("stack.sigma_clip");
        c.clipIter = static_cast<int>(m_cfg.getInt("stack.clip_iter"));
        c.andMask = andMask;
        c.clippedBit = m_bits.clipped;
        c.noGoodPixelsMask = m_bits.noData;
        c.calcErrorFromInputVariance = m_cfg.getBool("stack.calc_error_from_input_variance");
        // §7.2.2: (A & ~NO_DATA & ~EDGE & ~CLIPPED -> REJECTED), (EDGE -> SENSOR_EDGE), (CLIPPED -> CLIPPED)
        const MaskPixel rejectedSrc = andMask & ~m_bits.noData & ~m_bits.edge & ~m_bits.clipped;
        c.maskMap = {{rejectedSrc, m_bits.rejected},
                     {m_bits.edge, m_bits.sensorEdge},
                     {m_bits.clipped, m_bits.clipped}};
        for (const auto& [plane, t] : m_cfg.getDoubleTable("stack.mask_propagation_thresholds")) {
            const MaskPixel b = m_dict.bitMask(plane);
            if (b != 0) {
                c.propagationThresholds.emplace_back(b, t);
            }
        }
        c.validate();
        return c;
    }

    void setupControls() {
        m_meanCtrl = makeControl(kernel::Statistic::Mean, m_bits.bad);
        m_clipCtrl = makeControl(kernel::Statistic::MeanClip, m_bits.bad);
        m_finalCtrl = makeControl(kernel::Statistic::Mean, m_bits.bad | m_bits.clipped);
        m_clipRules.minClipFootOverlap = m_cfg.getDouble("clip.min_foot_overlap");
        m_clipRules.minClipFootOverlapSingle = m_cfg.getDouble("clip.min_foot_overlap_single");
        m_clipRules.minClipFootOverlapDouble = m_cfg.getDouble("clip.min_foot_overlap_double");
        m_clipRules.maxClipFootOverlapDouble = m_cfg.getDouble("clip.max_foot_overlap_double");
        m_clipRules.minBigOverlap = m_cfg.getInt("clip.min_big_overlap");
        m_clipRules.validate();
    }

    std::vector<Warp*> usedWarps() {
        std::vector<Warp*> out;
        for (Warp& w : m_warps) {
            if (w.used) {
                out.push_back(&w);
            }
        }
        return out;
    }

    /// Rows per chunk: all used warps' chunk buffers (12 B/px each) plus two trial-stack outputs
    /// (24 B/px), after the full-patch arrays (difference image 8 B/px or coadd + nImage 14 B/px).
    int chunkRows(int nWarps) const {
        const std::int64_t fixed = m_box.area() * 14;
        const std::int64_t avail = m_budget - fixed;
        if (avail <= 0) {
            throw ConfigError("memory.max_per_rank = " + geom::formatByteSize(m_budget) +
                              " is smaller than the patch's full-plane arrays (" +
                              geom::formatByteSize(fixed) + " for " + m_box.str() + ")");
        }
        int rows = geom::rowsPerChunk(m_box, nWarps, 12, 24, avail);
        if (const auto tile = m_cfg.getInt("tile.size"); tile > 0) {
            rows = std::min(rows, static_cast<int>(tile));
        }
        return rows;
    }

    // ---- pass 0: weights (§3) ------------------------------------------------------------------
    void computeWeights() {
        const auto t0 = Clock::now();
        const int rows = chunkRows(1);
        std::vector<float> var;
        std::vector<MaskPixel> mask;
        std::vector<float> sample;
        for (Warp* w : usedWarps()) {
            sample.clear();
            const float s2 = w->scale * w->scale;
            for (const Box& chunk : geom::rowChunks(m_box, rows)) {
                var.resize(static_cast<std::size_t>(chunk.area()));
                mask.resize(static_cast<std::size_t>(chunk.area()));
                w->reader->readPlanes(chunk, nullptr, mask.data(), var.data());
                for (std::size_t k = 0; k < var.size(); ++k) {
                    const float v = var[k] * s2;
                    if ((mask[k] & m_bits.bad) == 0 && std::isfinite(v)) {
                        sample.push_back(v);
                    }
                }
            }
            const double meanVar =
                kernel::meanClipUnweighted(sample, m_cfg.getDouble("stack.sigma_clip"),
                                           static_cast<int>(m_cfg.getInt("stack.clip_iter")));
            const double weight = 1.0 / meanVar;
            if (!std::isfinite(weight)) {
                w->used = false;
                w->status =
                    "skipped: non-finite weight (clipped mean variance " + std::to_string(meanVar) + ")";
                log().warn("patch {}: {}: {}", m_name, w->input.path, w->status);
                continue;
            }
            w->weight = static_cast<float>(weight);
            log().debug("patch {}: visit {} scale {:.6g} weight {:.6g}", m_name, w->visit, w->scale,
                        w->weight);
        }
        log().info("patch {}: weights for {} warps in {:.2f} s", m_name, usedWarps().size(),
                   secondsSince(t0));
    }

    // ---- pass 1: trial stacks and the difference image (§5) -----------------------------------
    /// Returns the warps found to be all-NaN (they are then skipped and the pass is repeated).
    bool trialStacksOnce() {
        auto warps = usedWarps();
        if (warps.empty()) {
            throw InputError("patch " + m_name + ": no usable warps");
        }
        const int rows = chunkRows(static_cast<int>(warps.size()));
        m_diffImage = kernel::ImageF(m_box);
        m_diffVar = kernel::ImageF(m_box);
        std::vector<MaskedImage> bufs(warps.size());
        std::vector<std::vector<kernel::Span>> bad(warps.size()), detGood(warps.size()), detAll(warps.size());
        std::vector<char> anyFinite(warps.size(), 0);
        std::vector<float> weights;
        for (Warp* w : warps) {
            weights.push_back(w->weight);
        }
        const auto chunks = geom::rowChunks(m_box, rows);
        for (const Box& chunk : chunks) {
            std::vector<const MaskedImage*> ptrs;
            for (std::size_t i = 0; i < warps.size(); ++i) {
                warps[i]->reader->read(chunk, bufs[i]);
                MaskedImage& b = bufs[i];
                for (int y = chunk.y0; y < chunk.y1(); ++y) {
                    const MaskPixel* m = b.mask.row(y);
                    kernel::appendMaskRuns(bad[i], y, chunk.x0, m, chunk.width, m_bits.bad);
                    kernel::appendMaskRuns(detGood[i], y, chunk.x0, m, chunk.width, m_bits.det, m_bits.bad);
                    kernel::appendMaskRuns(detAll[i], y, chunk.x0, m, chunk.width, m_bits.det);
                }
                if (anyFinite[i] == 0) {
                    anyFinite[i] = std::any_of(b.image.data().begin(), b.image.data().end(),
                                               [](float v) { return std::isfinite(v); })
                                       ? 1
                                       : 0;
                }
                scaleInPlace(b, warps[i]->scale);
                if (m_bits.remove != 0) {
                    for (MaskPixel& m : b.mask.data()) {
                        m &= ~m_bits.remove;
                    }
                }
                ptrs.push_back(&b);
            }
            MaskedImage mean(chunk);
            MaskedImage clip(chunk);
            kernel::stackRegion(ptrs, weights, m_meanCtrl, chunk, mean);
            kernel::stackRegion(ptrs, weights, m_clipCtrl, chunk, clip);
            for (int y = chunk.y0; y < chunk.y1(); ++y) {
                const float* mi = mean.image.row(y);
                const float* ci = clip.image.row(y);
                const float* mv = mean.variance.row(y);
                const float* cv = clip.variance.row(y);
                float* di = m_diffImage.row(y);
                float* dv = m_diffVar.row(y);
                for (int k = 0; k < chunk.width; ++k) {
                    di[k] = mi[k] - ci[k];
                    dv[k] = mv[k] + cv[k];
                }
            }
        }
        bool anySkipped = false;
        for (std::size_t i = 0; i < warps.size(); ++i) {
            if (anyFinite[i] == 0) {
                warps[i]->used = false;
                warps[i]->status = "skipped: every image pixel is NaN";
                log().warn("patch {}: {}: {}", m_name, warps[i]->input.path, warps[i]->status);
                anySkipped = true;
                continue;
            }
            warps[i]->spans.bad = SpanSet::fromSortedSpans(std::move(bad[i]));
            warps[i]->spans.detGood = SpanSet::fromSortedSpans(std::move(detGood[i]));
            warps[i]->spans.detAll = SpanSet::fromSortedSpans(std::move(detAll[i]));
        }
        return !anySkipped;
    }

    void trialStacks() {
        const auto t0 = Clock::now();
        while (!trialStacksOnce()) {
            log().info("patch {}: repeating the trial stacks without the all-NaN warps", m_name);
        }
        log().info("patch {}: trial stacks (MEAN, MEANCLIP) of {} warps in {:.2f} s", m_name,
                   usedWarps().size(), secondsSince(t0));
    }

    // ---- detection and clip decisions (§6, §7.1) -----------------------------------------------
    double psfSigma() {
        const double fromConfig = m_cfg.getDouble("detect.psf_sigma");
        if (fromConfig > 0) {
            m_psfSource = "config detect.psf_sigma";
            return fromConfig;
        }
        double sw = 0;
        double swSigma = 0;
        for (Warp* w : usedWarps()) {
            const auto& s = w->reader->header().psfSigma;
            if (!s) {
                throw ConfigError(w->input.path +
                                  ": no PSFSIGMA or FWHM card and detect.psf_sigma = 0; set "
                                  "detect.psf_sigma to the coadd PSF sigma in pixels");
            }
            sw += w->weight;
            swSigma += w->weight * *s;
        }
        m_psfSource = "weight-averaged PSFSIGMA/FWHM of the warps";
        return swSigma / sw;
    }

    void detectAndDecide(PatchResult& result) {
        const auto t0 = Clock::now();
        kernel::DetectControl dc;
        dc.psfSigma = psfSigma();
        m_psfSigma = dc.psfSigma;
        dc.thresholdValue = m_cfg.getDouble("detect.threshold");
        dc.nSigmaToGrow = m_cfg.getDouble("detect.n_sigma_to_grow");
        dc.minPixels = static_cast<int>(m_cfg.getInt("detect.min_pixels"));
        dc.nSigmaForKernel = m_cfg.getDouble("detect.n_sigma_for_kernel");
        dc.validate();
        const std::vector<SpanSet> footprints = kernel::detectFootprints(m_diffImage, m_diffVar, dc);
        m_diffImage = kernel::ImageF();
        m_diffVar = kernel::ImageF();
        result.nFootprints = static_cast<std::int64_t>(footprints.size());
        log().info(
            "patch {}: {} footprints on the difference image (psf sigma {:.3f} px from {}) in {:.2f} s",
            m_name, footprints.size(), dc.psfSigma, m_psfSource, secondsSince(t0));

        auto warps = usedWarps();
        std::vector<std::vector<const SpanSet*>> clippedBy(warps.size());
        std::vector<kernel::WarpCounts> counts(warps.size());
        for (std::size_t j = 0; j < footprints.size(); ++j) {
            const SpanSet& f = footprints[j];
            const Box bb = f.bbox();
            for (std::size_t i = 0; i < warps.size(); ++i) {
                kernel::WarpMaskSpans local{restrictRows(warps[i]->spans.bad, bb.y0, bb.y1()),
                                            restrictRows(warps[i]->spans.detGood, bb.y0, bb.y1()), SpanSet()};
                counts[i] = kernel::overlapCounts(f, local);
            }
            kernel::FootprintDecision d = kernel::decideClip(f.area(), counts, m_clipRules);
            for (int i : d.clippedWarps) {
                clippedBy[static_cast<std::size_t>(i)].push_back(&f);
            }
            if (!d.clippedWarps.empty()) {
                ++result.nClippedFootprints;
            }
            recordDecision(static_cast<std::int64_t>(j), f, d, warps);
        }
        for (std::size_t i = 0; i < warps.size(); ++i) {
            Warp& w = *warps[i];
            if (clippedBy[i].empty()) {
                continue;
            }
            std::vector<SpanSet> parts;
            for (const SpanSet* f : clippedBy[i]) {
                parts.push_back(*f);
            }
            const SpanSet unionClipped = kernel::uniteAll(parts);
            const std::vector<SpanSet> big =
                kernel::bigFootprints(w.spans.detAll, unionClipped, m_clipRules.minBigOverlap);
            w.nBigFootprints = static_cast<std::int64_t>(big.size());
            parts.assign(1, unionClipped);
            parts.insert(parts.end(), big.begin(), big.end());
            w.clipped = kernel::uniteAll(parts);
            w.nClippedPixels = w.clipped.area();
        }
        for (Warp* w : warps) {
            w->spans = kernel::WarpMaskSpans();  // no longer needed
        }
        log().info(
            "patch {}: {} footprints clipped in at least one warp; {} CLIPPED warp pixels; {:.2f} s", m_name,
            result.nClippedFootprints,
            [&] {
                std::int64_t n = 0;
                for (Warp* w : warps) {
                    n += w->nClippedPixels;
                }
                return n;
            }(),
            secondsSince(t0));
    }

    void recordDecision(std::int64_t id, const SpanSet& f, const kernel::FootprintDecision& d,
                        const std::vector<Warp*>& warps) {
        const Box bb = f.bbox();
        m_fpId.push_back(id);
        m_fpX0.push_back(bb.x0);
        m_fpY0.push_back(bb.y0);
        m_fpX1.push_back(bb.x1() - 1);
        m_fpY1.push_back(bb.y1() - 1);
        m_fpArea.push_back(f.area());
        m_fpRule.emplace_back(kernel::toString(d.rule));
        m_fpReason.push_back(d.reason);
        std::vector<Warp*> clipped;
        for (int i : d.clippedWarps) {
            clipped.push_back(warps[static_cast<std::size_t>(i)]);
        }
        m_fpClipped.push_back(joinVisits(clipped));
        for (const kernel::Candidate& c : d.candidates) {
            m_cdFootprint.push_back(id);
            m_cdVisit.push_back(warps[static_cast<std::size_t>(c.warp)]->visit);
            m_cdDet.push_back(c.det);
            m_cdIgn.push_back(c.ign);
            m_cdFraction.push_back(c.fraction);
            m_cdClipped.push_back(c.clipped ? 1 : 0);
        }
    }

    // ---- pass 2: final stack (§7.2) ------------------------------------------------------------
    void finalStack(MaskedImage& coadd, kernel::ImageU16& nImage) {
        const auto t0 = Clock::now();
        auto warps = usedWarps();
        if (warps.empty()) {
            throw InputError("patch " + m_name + ": no usable warps");
        }
        const int rows = chunkRows(static_cast<int>(warps.size()));
        const MaskPixel andMask = m_finalCtrl.andMask;
        std::vector<MaskedImage> bufs(warps.size());
        std::vector<float> weights;
        for (Warp* w : warps) {
            weights.push_back(w->weight);
        }
        const auto chunks = geom::rowChunks(m_box, rows);
        std::size_t done = 0;
        auto lastLog = Clock::now();
        for (const Box& chunk : chunks) {
            std::vector<const MaskedImage*> ptrs;
            for (std::size_t i = 0; i < warps.size(); ++i) {
                warps[i]->reader->read(chunk, bufs[i]);
                MaskedImage& b = bufs[i];
                if (!warps[i]->clipped.empty()) {
                    restrictRows(warps[i]->clipped, chunk.y0, chunk.y1()).paint(b.mask, m_bits.clipped);
                }
                scaleInPlace(b, warps[i]->scale);
                for (int y = chunk.y0; y < chunk.y1(); ++y) {
                    const MaskPixel* m = b.mask.row(y);
                    std::uint16_t* n = nImage.row(y) + (chunk.x0 - m_box.x0);
                    for (int k = 0; k < chunk.width; ++k) {
                        n[k] = static_cast<std::uint16_t>(n[k] + ((m[k] & andMask) == 0 ? 1 : 0));
                    }
                }
                if (m_bits.remove != 0) {
                    for (MaskPixel& m : b.mask.data()) {
                        m &= ~m_bits.remove;
                    }
                }
                ptrs.push_back(&b);
            }
            kernel::stackRegion(ptrs, weights, m_finalCtrl, chunk, coadd);
            ++done;
            if (secondsSince(lastLog) > 10.0) {
                lastLog = Clock::now();
                log().info("patch {}: final stack {}/{} chunks", m_name, done, chunks.size());
            }
        }
        log().info("patch {}: final stack of {} warps in {} chunks of {} rows in {:.2f} s", m_name,
                   warps.size(), chunks.size(), rows, secondsSince(t0));
    }

    // ---- output --------------------------------------------------------------------------------
    void write(const std::string& outPath, const MaskedImage& coadd, const kernel::ImageU16& nImage,
               bool safeclip) {
        io::ExposureData data;
        data.image = &coadd;
        data.maskPlanes = &m_dict;
        data.nImage = &nImage;
        data.wcsCards = m_wcsCards;
        const double zp = m_cfg.getDouble("stack.zero_point");
        auto& pc = data.primaryCards;
        pc.push_back({"FLUXMAG0", std::pow(10.0, 0.4 * zp), "coadd zero point: counts of a mag-0 source"});
        pc.push_back({"ZEROPNT", zp, "coadd AB zero point"});
        pc.push_back({"PATCH", m_name, "patch name"});
        pc.push_back({"SCMODE", m_cfg.getString("coadd.mode"), "safeclip coadd mode"});
        pc.push_back({"SCVERS", std::string(kVersion), "safeclip version"});
        pc.push_back({"SCGITREV", std::string(kGitRevision), "safeclip git revision"});
        const std::vector<std::string> science = scienceConfig(m_cfg);
        pc.push_back({"SCCFGHSH", scienceConfigHash(m_cfg), "hash of the pixel-affecting configuration"});
        if (safeclip) {
            pc.push_back({"PSFSIGMA", m_psfSigma, "detection smoothing sigma (px)"});
            pc.push_back({"PSFSRC", m_psfSource, "where PSFSIGMA came from"});
        }
        if (!m_filter.empty()) {
            pc.push_back({"FILTER", m_filter, "filter of the first warp"});
        }
        std::int64_t nUsed = 0;
        for (const Warp& w : m_warps) {
            nUsed += w.used ? 1 : 0;
        }
        pc.push_back({"NWARPS", static_cast<std::int64_t>(m_warps.size()), "warps given"});
        pc.push_back({"NUSED", nUsed, "warps used"});

        io::Table inputs{"INPUTS", {}};
        std::vector<std::int64_t> visit;
        std::vector<std::string> file;
        std::vector<std::string> status;
        std::vector<double> scale;
        std::vector<double> weight;
        std::vector<std::int64_t> nClipped;
        for (const Warp& w : m_warps) {
            visit.push_back(w.visit);
            file.push_back(w.input.path);
            status.push_back(w.status);
            scale.push_back(w.used ? static_cast<double>(w.scale) : std::nan(""));
            weight.push_back(w.used ? static_cast<double>(w.weight) : std::nan(""));
            nClipped.push_back(w.nClippedPixels);
        }
        inputs.columns = {{"visit", visit, ""},   {"file", file, ""},
                          {"scale", scale, ""},   {"weight", weight, ""},
                          {"status", status, ""}, {"n_clipped_pixels", nClipped, "pixel"}};
        data.tables.push_back(std::move(inputs));

        if (safeclip) {
            io::Table fp{"FOOTPRINTS", {}};
            fp.columns = {{"id", m_fpId, ""},
                          {"bbox_x0", m_fpX0, "pixel"},
                          {"bbox_y0", m_fpY0, "pixel"},
                          {"bbox_x1", m_fpX1, "pixel"},
                          {"bbox_y1", m_fpY1, "pixel"},
                          {"area", m_fpArea, "pixel"},
                          {"rule", m_fpRule, ""},
                          {"reason", m_fpReason, ""},
                          {"clipped_visits", m_fpClipped, ""}};
            data.tables.push_back(std::move(fp));
            io::Table cd{"CANDIDATES", {}};
            cd.columns = {{"footprint_id", m_cdFootprint, ""}, {"visit", m_cdVisit, ""},
                          {"det", m_cdDet, "pixel"},           {"ign", m_cdIgn, "pixel"},
                          {"fraction", m_cdFraction, ""},      {"clipped", m_cdClipped, ""}};
            data.tables.push_back(std::move(cd));
            io::Table spans{"CLIPPED_SPANS", {}};
            std::vector<std::int64_t> sv;
            std::vector<std::int64_t> sy;
            std::vector<std::int64_t> sx0;
            std::vector<std::int64_t> sx1;
            for (const Warp& w : m_warps) {
                for (const kernel::Span& s : w.clipped.spans()) {
                    sv.push_back(w.visit);
                    sy.push_back(s.y);
                    sx0.push_back(s.x0);
                    sx1.push_back(s.x1);
                }
            }
            spans.columns = {
                {"visit", sv, ""}, {"y", sy, "pixel"}, {"x0", sx0, "pixel"}, {"x1", sx1, "pixel"}};
            data.tables.push_back(std::move(spans));
        }
        io::Table config{"CONFIG", {}};
        config.columns = {{"line", science, ""}};
        data.tables.push_back(std::move(config));
        io::writeExposure(outPath, data);
    }

    std::string m_name;
    Box m_box;
    const Config& m_cfg;
    kernel::MaskDict m_dict;
    bool m_requireSameBox = false;
    bool m_skipBad = false;
    std::int64_t m_budget = 0;
    std::vector<Warp> m_warps;
    std::vector<std::string> m_wcsCards;
    std::string m_filter;
    Bits m_bits;
    kernel::StackControl m_meanCtrl, m_clipCtrl, m_finalCtrl;
    kernel::ClipControl m_clipRules;
    kernel::ImageF m_diffImage, m_diffVar;
    double m_psfSigma = 0;
    std::string m_psfSource;
    // decision table columns
    std::vector<std::int64_t> m_fpId, m_fpX0, m_fpY0, m_fpX1, m_fpY1, m_fpArea;
    std::vector<std::string> m_fpRule, m_fpReason, m_fpClipped;
    std::vector<std::int64_t> m_cdFootprint, m_cdVisit, m_cdDet, m_cdIgn, m_cdClipped;
    std::vector<double> m_cdFraction;
};

}  // namespace

PatchResult coaddPatch(const std::string& name, const kernel::Box& box, const std::vector<WarpInput>& warps,
                       const Config& cfg, const std::string& outPath) {
    PatchRun run(name, box, warps, cfg);
    return run.run(outPath);
}

}  // namespace safeclip::app
