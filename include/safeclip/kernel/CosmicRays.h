#pragma once
/// @file CosmicRays.h  Single-frame cosmic-ray detection and repair: LSST meas_algorithms
/// `findCosmicRays` (src/CR.cc, the SDSS PHOTO algorithm of Lupton & Gunn) as run by pipe_tasks'
/// RepairTask, written for safeclip's MaskedImage (image, mask, variance in PARENT coordinates).
///
/// Algorithm (upstream's order; "σ" is sqrt(variance) of the pixel, "bkgd" the caller's constant
/// background level, RepairTask passes the image median; every mean is of two pixels):
///  1. First pass, over the interior of the box (the 1-px border is never a candidate), in raster
///     order, in place. A pixel p of value v is a candidate when
///       - v >= 0 (upstream tests the raw value, not v - bkgd);
///       - condition 2: v >= mean + minSigma·σ for at least one of the 4 directions (N-S, W-E,
///         SW-NE, NW-SE) through p (minSigma < 0: v >= |minSigma| instead, as upstream);
///       - condition 3, the PSF-sharpness test, in the order N-S, W-E, SW-NE, NW-SE: for the first
///         direction where t·(v - bkgd - cond3_fac·σ) > (mean - bkgd) + cond3_fac·σ_mean, with
///         σ_mean = sqrt(var_a + var_b)/2 and t = thresV, thresH, thresD, thresD, p is sharper
///         than the PSF allows; its preliminary repaired value is that direction's mean;
///       - condition 4: p has none of badBits|intrpBit and no 8-neighbour has intrpBit.
///     A candidate is replaced at once by its preliminary value, so later pixels of the same CR
///     see it repaired (upstream: "increases the detection rate"). More than nCrPixelMax
///     candidates: the image is restored and TooManyCosmicRayPixels is thrown.
///  2. The candidates are grouped into CRs, 8-connected (as upstream's span aliasing), and the
///     image is restored to its input values.
///  3. Condition 1 (min_DN): a CR whose Σ(v - bkgd) over its pixels is below the min_DN threshold
///     (see "Units") is dropped.
///  4. The remaining CRs are repaired (step 6's procedure) and, niteration times, the pixels within
///     one pixel of each CR (rows 2..h-3 of the box, columns 1..w-2, as upstream's span clamping)
///     are tested again in raster order, in place, with minSigma/2 and cond3_fac = 0; a pixel that
///     passes takes its preliminary value and joins every CR whose 1-px neighbourhood holds it.
///     An iteration that finds nothing ends the loop. More than nCrPixelMax CR pixels in total:
///     restored, thrown.
///  5. crBit is set on every CR pixel.
///  6. keepCRs: the image is restored to its input values. Otherwise every CR pixel is replaced
///     (and gets intrpBit) by upstream's RemoveCR estimate: for the directions W-E, N-S, SW-NE,
///     SE-NW in that order, if the 4 pixels at ±1, ±2 along it lie in the box, are not CR pixels
///     and have none of badBits|intrpBit, the estimate is c1·(v₋₁ + v₊₁) + c2·(v₋₂ + v₊₂) (the LPC
///     coefficients of meas_algorithms Interp.h: c1 = 0.7737, c2 = -0.2737 along rows and
///     columns, 0.7358 / -0.2358 on diagonals); an estimate above bkgd - 2σ that is lower than
///     every earlier one is adopted (ngood counts the adoptions). ngood > 1: debiased by
///     +0.5641895835·σ (the mean of the minimum of two N(0,1) variates). ngood == 0: bkgd + σ·g,
///     g a standard normal deviate drawn from a hash of the pixel's PARENT (x, y), not a stream.
///     The variance plane is not changed (as upstream).
///
/// Deviations from upstream (meas_algorithms src/CR.cc, the Policy-era version with the
/// `LengthError` "Too many CR pixels" and the DM-9538 placeholder):
///  - RemoveCR tests `(loc.mask(..) | _badMask)` where `&` is meant, so with any bad plane defined
///    every directional estimate counts as contaminated, ngood is always 0, and since
///    interp::singlePixel (src/Interp.cc) is compiled to return "failed" outside SDSS, every CR
///    pixel becomes bkgd + σ·N(0,1) from an afw Random stream. safeclip implements the intended
///    estimate (as upstream's earlier vw-based port and PHOTO do) and takes as contaminated the CR
///    pixels themselves as well as badBits|intrpBit (upstream's badMask lacks the CR plane).
///  - upstream debiases by `min2GaussianBias·σ·gaussian()` (a zero-mean draw); safeclip subtracts
///    min2GaussianBias·σ, the debias the constant's comment describes (the early LSST port's
///    gaussdev() returned 1, which gives exactly this).
///  - a direction (a pair of opposite neighbours) takes part in conditions 2 and 3 only when its
///    mean is finite and at least bkgd - 10σ: upstream lets a -inf or hugely negative
///    defect make its neighbours candidates, whose in-place repair then carries the defect's value
///    on through the raster (one -inf pixel made a 6172-px "cosmic ray"). Noise never has a
///    two-pixel mean 10σ below the background, so this changes nothing else (the B16 coadd with
///    the stage is byte-identical with and without the guard).
///  - upstream's growth pass does not look at the mask; safeclip never lets a pixel with badBits
///    or intrpBit join a CR (so SAT or NO_DATA pixels are never interpolated as CRs).
///  - upstream removes CRs one after another in place (the order of its CR list); safeclip's
///    estimates read only non-CR pixels, whose values are never changed, so the order does not
///    matter. The growth pass is one raster sweep over the union of all CRs' neighbourhoods per
///    iteration, not CR by CR.
///  - on TooManyCosmicRayPixels the image is restored entirely (upstream leaves the growth pass's
///    preliminary values in place) and the mask is not changed.
///  - the CR plane is not cleared here (RepairTask clears it first: the caller's choice).
///
/// Units (upstream works on DN images with a gain; safeclip's images carry a variance plane in
/// image units, whatever they are):
///  - minSigma, cond3_fac: multiples of sqrt(variance) of the pixel, as upstream; no conversion.
///  - cond3_fac2: multiplies the dimensionless PSF ratios; no conversion. The ratios are those of
///    a circular Gaussian PSF of σ = psfSigma sampled at pixel centres (afw GaussianPsf's kernel
///    image): thresH = thresV = cond3_fac2·exp(-1/(2σ²)), thresD = cond3_fac2·exp(-1/σ²) (upstream:
///    the mean of the two horizontal/vertical/four diagonal neighbours of the PSF image's centre
///    over its centre).
///  - bkgd: image units (the caller's median of the image, as RepairTask; 0 for a
///    background-subtracted warp).
///  - min_DN (upstream 150 DN, a flux): an image in arbitrary units has no DN scale, only its
///    noise, so the flux is read in units of the sky noise: threshold = min_DN / skySigmaDn · σ_sky
///    where σ_sky = sqrt(median variance) over the pixels adjacent to the CR (8-neighbours not in
///    it; the CR's own pixels if none), the median being the element of rank floor(n/2). With the
///    default skySigmaDn = 20 (the sky noise, in DN, of an LSSTCam or HSC visit: ~1000–3000 e⁻ of
///    sky at 1.5–3 e⁻/DN gives 15–25 DN) a CR needs Σ(v - bkgd) >= 7.5 σ_sky. skySigmaDn <= 0
///    reads min_DN in image units directly (upstream exactly, for a DN image).
///
/// Reach (for a tiled stage with a halo). Let a cluster be a set of first-pass CRs linked
/// transitively when their pixels are within Chebyshev distance L = 2·niteration + 2 (8 for the
/// defaults). Everything the algorithm decides for a cluster's pixels (CR membership, min_DN, the
/// growth and the repaired values) depends only on the input pixels (all three planes) within
/// Chebyshev distance R = niteration + 2 (5) of its first-pass pixels, on bkgd, psfSigma and the
/// controls; pixels farther than R from every first-pass CR pixel are never changed, and whether a
/// pixel is a first-pass candidate depends on its 3×3 input neighbourhood and on the first-pass
/// state of its already-visited neighbours, which differs from the input only at candidates.
/// The box edge acts within 2 px of it (the border is not tested, the growth rows are clamped,
/// repair estimates need their 4 pixels in the box). Hence: a box (tile + halo) gives the same
/// answer as the whole image for every cluster whose first-pass pixels all lie at least
/// M = L + 3 = 2·niteration + 5 (11) px inside the box, given the same bkgd; a tiled driver keeps
/// such clusters and must enlarge the halo for a cluster closer to the edge (CR tracks have no
/// length bound). nCrPixelMax is inherently global (a count over the whole image): a tile sees
/// only its own count.
///
/// Determinism: one fixed raster order, no threads, no random stream: the same input gives the
/// same bits.
#include <cstdint>
#include <string>
#include <vector>

#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/Image.h"
#include "safeclip/kernel/SpanSet.h"

namespace safeclip {

/// More cosmic-ray pixels than CosmicRayControl::nCrPixelMax (upstream: pex LengthError "Too many
/// CR pixels (max %d)"). The image and mask are left as they were.
class TooManyCosmicRayPixels : public InputError {
public:
    TooManyCosmicRayPixels(std::int64_t nPixels, int nCrPixelMax)
        : InputError("too many cosmic-ray pixels: " + std::to_string(nPixels) + " > nCrPixelMax " +
                     std::to_string(nCrPixelMax)),
          m_nPixels(nPixels),
          m_nCrPixelMax(nCrPixelMax) {}
    [[nodiscard]] std::int64_t nPixels() const noexcept { return m_nPixels; }
    [[nodiscard]] int nCrPixelMax() const noexcept { return m_nCrPixelMax; }

private:
    std::int64_t m_nPixels;
    int m_nCrPixelMax;
};

}  // namespace safeclip

namespace safeclip::kernel {

/// meas_algorithms FindCosmicRaysConfig, with its field names and defaults.
struct CosmicRayControl {
    /// nCrPixelMax (default 10000): maximum number of contaminated pixels; more throws
    /// TooManyCosmicRayPixels.
    int nCrPixelMax = 10000;
    /// minSigma (default 6.0): CRs must be > this many sky-sig above sky (condition 2; σ is the
    /// pixel's sqrt(variance)). Negative: -minSigma is an absolute threshold in image units.
    double minSigma = 6.0;
    /// min_DN (default 150.0): CRs must have > this many DN in initial detection (condition 1);
    /// converted with skySigmaDn, see "Units".
    double min_DN = 150.0;
    /// cond3_fac (default 2.5): noise factor of condition 3 (0 in the growth pass, as upstream).
    double cond3_fac = 2.5;
    /// cond3_fac2 (default 0.6): factor on the PSF's neighbour/centre ratios of condition 3.
    double cond3_fac2 = 0.6;
    /// niteration (default 3): number of times to look for contaminated pixels near known CR pixels.
    int niteration = 3;
    /// keepCRs (default false): don't interpolate over CR pixels (only set crBit).
    bool keepCRs = false;
    /// safeclip's conversion of min_DN (no upstream field): the sky noise in DN against which
    /// min_DN is read (default 20, so 150 DN -> 7.5 σ_sky); <= 0 reads min_DN in image units.
    double skySigmaDn = 20.0;

    /// @throws InvalidParameter for a negative nCrPixelMax or niteration, or a non-finite value.
    void validate() const;
    /// L: first-pass CRs this close (Chebyshev) may influence each other (2·niteration + 2).
    [[nodiscard]] int linkDistance() const { return 2 * niteration + 2; }
    /// R: a cluster's result depends on input pixels this close to its first-pass pixels.
    [[nodiscard]] int reach() const { return niteration + 2; }
    /// M: clusters whose first-pass pixels lie this far inside a box are reproduced exactly.
    [[nodiscard]] int edgeMargin() const { return linkDistance() + 3; }
};

/// Condition-3 thresholds for a circular Gaussian PSF of sigma psfSigma sampled at pixel centres.
struct CosmicRayThresholds {
    double h = 0;  ///< cond3_fac2 · (mean of the two horizontal neighbours of the centre) / centre
    double v = 0;  ///< the same, vertical
    double d = 0;  ///< the same, mean of the four diagonal neighbours
};
/// @throws InvalidParameter unless psfSigma is finite and > 0.
CosmicRayThresholds cosmicRayThresholds(double psfSigma, double cond3_fac2);

struct CosmicRayResult {
    std::vector<SpanSet> crs;     ///< one set per CR (PARENT), ordered by first-pass first pixel; may overlap
    SpanSet pixels;               ///< union of crs
    std::int64_t nCr = 0;         ///< crs.size()
    std::int64_t nPixels = 0;     ///< pixels.area()
    std::int64_t nFirstPass = 0;  ///< first-pass candidates (before min_DN and growth)
    SpanSet firstPass;            ///< those candidates (PARENT): what "Reach" measures distances from
};

/// Find cosmic rays in `mi`, set `crBit` on their pixels and, unless ctrl.keepCRs, replace their
/// values by the RemoveCR estimate and set `intrpBit` (0: none). Pixels with `badBits` or
/// `intrpBit` are never CR pixels and never used by the repair; a first-pass candidate must not
/// touch an `intrpBit` pixel. `background` is the constant bkgd (image units), `psfSigma` the PSF
/// Gaussian sigma in pixels. See the file comment for the algorithm, units and reach.
/// @throws TooManyCosmicRayPixels (mi unchanged), InvalidParameter (bad ctrl, psfSigma or
/// background, crBit == 0, or mismatched planes).
CosmicRayResult findCosmicRays(MaskedImage& mi, double psfSigma, double background,
                               const CosmicRayControl& ctrl, MaskPixel badBits, MaskPixel crBit,
                               MaskPixel intrpBit = 0);

}  // namespace safeclip::kernel
