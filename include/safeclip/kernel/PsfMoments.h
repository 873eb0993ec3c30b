#pragma once
/// @file PsfMoments.h  The detection smoothing width of spec §0.3/§6.1.2 for Gaussian warp PSFs:
/// the determinant radius of the adaptive (SdssShape) second moments of the weight-averaged PSF.
#include <span>

namespace safeclip::kernel {

/// Determinant radius (pixels) of the adaptive second moments of the normalised circular Gaussian
/// mixture  P(r) = Σ w_i N(r; σ_i)  (upstream: CoaddPsf kernel image -> ImagePsf::computeShape ->
/// SdssShapeAlgorithm::computeAdaptiveMoments -> getDeterminantRadius, spec §6.1.2).
///
/// With a circular Gaussian weight W(r) = exp(-r²/2t) (t = σ_w²), component i contributes
/// ∫ N_i W ∝ w_i / (σ_i² + t) and its weighted moment per axis is σ_i² t / (σ_i² + t) (the product
/// of two Gaussians is a Gaussian whose inverse covariances add). M(t) is their weighted mean.
/// SdssShape's update is its own: the object's covariance is estimated as (M⁻¹ − t⁻¹)⁻¹ and taken
/// as the next weight, t ← 1/(1/M(t) − 1/t), starting from SdssShape's t = 1.5; at the fixed point
/// M = t/2, and the shape returned is the weight's (xx = yy = t, xy = 0), so the determinant
/// radius (xx·yy − xy²)^¼ is √t. For one Gaussian (or equal σ's) it is that σ exactly; it always
/// lies in [min σ_i, max σ_i] over the components of positive weight.
///
/// The continuous mixture stands in for upstream's pixelised kernel image (float, tolerance 1e-5),
/// so results agree with upstream to a few 1e-4 px for σ ≳ 1, not bit for bit.
///
/// @param sigmas  the components' σ (pixels), finite and > 0
/// @param weights the components' weights (coadd weights), finite and >= 0, positive sum
/// @throws InvalidParameter for empty/mismatched spans or invalid values
double mixtureDeterminantRadius(std::span<const double> sigmas, std::span<const double> weights);

}  // namespace safeclip::kernel
