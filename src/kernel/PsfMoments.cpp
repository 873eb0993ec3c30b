/// @file PsfMoments.cpp  Adaptive-moment determinant radius of a Gaussian mixture (PsfMoments.h).
#include "safeclip/kernel/PsfMoments.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include "safeclip/kernel/Error.h"

namespace safeclip::kernel {

namespace {

struct Component {
    double var;  ///< σ_i²
    double weight;
};

/// M(t): the weighted per-axis second moment of the mixture under the weight exp(-r²/2t).
double weightedMoment(const std::vector<Component>& comps, double t) {
    double num = 0;
    double den = 0;
    for (const Component& c : comps) {
        const double a = c.weight / (c.var + t);  // ∫ N_i W, up to a common factor 2πt
        num += a * (c.var * t / (c.var + t));
        den += a;
    }
    return num / den;
}

/// Sign of t − 2M(t) (the fixed-point residual): Σ w_i (t − σ_i²)/(σ_i² + t)² has the same sign.
double residual(const std::vector<Component>& comps, double t) {
    double h = 0;
    for (const Component& c : comps) {
        h += c.weight * (t - c.var) / ((c.var + t) * (c.var + t));
    }
    return h;
}

}  // namespace

double mixtureDeterminantRadius(std::span<const double> sigmas, std::span<const double> weights) {
    if (sigmas.empty() || sigmas.size() != weights.size()) {
        throw InvalidParameter("mixtureDeterminantRadius: need as many weights as sigmas (got " +
                               std::to_string(sigmas.size()) + " and " + std::to_string(weights.size()) +
                               "), at least one");
    }
    std::vector<Component> comps;
    double lo = std::numeric_limits<double>::infinity();
    double hi = 0;
    for (std::size_t i = 0; i < sigmas.size(); ++i) {
        const double s = sigmas[i];
        const double w = weights[i];
        if (!std::isfinite(s) || s <= 0 || !std::isfinite(w) || w < 0) {
            throw InvalidParameter("mixtureDeterminantRadius: component " + std::to_string(i) +
                                   " has sigma " + std::to_string(s) + " and weight " + std::to_string(w) +
                                   "; need sigma > 0 and weight >= 0, both finite");
        }
        if (w > 0) {
            comps.push_back({s * s, w});
            lo = std::min(lo, s);
            hi = std::max(hi, s);
        }
    }
    if (comps.empty()) {
        throw InvalidParameter("mixtureDeterminantRadius: every weight is 0");
    }
    if (lo == hi) {
        return lo;  // one Gaussian: the adaptive moments are its own, exactly
    }
    const double tLo = lo * lo;
    const double tHi = hi * hi;
    // SdssShape's iteration (meas_base SdssShape.cc getAdaptiveMoments): start at 1.5 px², then
    // t <- (M⁻¹ − t⁻¹)⁻¹. After one step t stays in [tLo, tHi] (harmonic <= arithmetic mean); the
    // clamp only guards rounding. Near-tangent roots of extreme mixtures converge slowly.
    constexpr int kMaxIter = 10000;
    double t = 1.5;
    for (int iter = 0; iter < kMaxIter; ++iter) {
        const double m = weightedMoment(comps, t);
        const double next = std::clamp(1.0 / (1.0 / m - 1.0 / t), tLo, tHi);
        if (std::abs(next - t) <= 1e-12 * t) {
            return std::sqrt(next);
        }
        t = next;
    }
    // Not converged (never seen): bisect the residual, negative at tLo and positive at tHi.
    double a = tLo;
    double b = tHi;
    while (true) {
        const double mid = 0.5 * (a + b);
        if (mid <= a || mid >= b) {
            return std::sqrt(mid);
        }
        (residual(comps, mid) < 0 ? a : b) = mid;
    }
}

}  // namespace safeclip::kernel
