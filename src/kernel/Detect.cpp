/// @file Detect.cpp  Footprint detection on a difference image (spec §6.1): separable Gaussian
/// smoothing in double, n-sigma per-pixel thresholds, 8-connected footprints, disk growth, merge.
#include "safeclip/kernel/Detect.h"

#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/SampleStats.h"

namespace safeclip::kernel {

namespace {

/// Largest kernel half-width accepted (guards the int arithmetic; real kernels are ~10 pixels).
constexpr int kMaxHalfWidth = 1 << 20;

/// Half-width r = floor(floor(nSigma*sigma + 0.5)/2), so that K = 2r + 1 (spec §6.1.3).
/// @throws InvalidParameter when sigma or nSigma is not finite and positive, or r is absurdly large.
int halfWidthFor(double sigma, double nSigma) {
    if (!std::isfinite(sigma) || sigma <= 0.0) {
        throw InvalidParameter("Gaussian kernel: sigma must be finite and > 0, got " + std::to_string(sigma));
    }
    if (!std::isfinite(nSigma) || nSigma <= 0.0) {
        throw InvalidParameter("Gaussian kernel: nSigmaForKernel must be finite and > 0, got " +
                               std::to_string(nSigma));
    }
    const double m = std::floor(nSigma * sigma + 0.5);
    const double r = std::floor(m / 2.0);
    if (r > kMaxHalfWidth) {
        throw InvalidParameter("Gaussian kernel: half-width " + std::to_string(r) + " exceeds " +
                               std::to_string(kMaxHalfWidth) + " (sigma " + std::to_string(sigma) + ")");
    }
    return static_cast<int>(r);
}

/// One plane of the separable convolution. For each output row y of `valid`: the column pass
/// acc[x] = sum_t taps[t]*in(x, y-r+t) over every column of the box, then the row pass
/// out(x, y) = sum_t taps[t]*acc[x-r+t] over the valid columns, both in double with t ascending.
/// The value at a pixel therefore depends only on the input pixels under its kernel (tiling
/// invariant), and NaN anywhere under the kernel gives NaN by IEEE propagation.
void convolvePlane(const ImageF& in, ImageF& out, const std::vector<double>& taps, int r, const Box& valid,
                   std::vector<double>& acc, std::vector<double>& rowOut) {
    const Box& box = in.box();
    const auto w = static_cast<std::size_t>(box.width);
    const auto vw = static_cast<std::size_t>(valid.width);
    const std::size_t k = taps.size();
    const std::size_t vOff = static_cast<std::size_t>(valid.x0 - box.x0);
    for (int y = valid.y0; y < valid.y1(); ++y) {
        double* a = acc.data();
        for (std::size_t x = 0; x < w; ++x) {
            a[x] = 0.0;
        }
        for (std::size_t t = 0; t < k; ++t) {
            const float* src = in.row(y - r + static_cast<int>(t));
            const double g = taps[t];
            for (std::size_t x = 0; x < w; ++x) {
                a[x] += g * static_cast<double>(src[x]);
            }
        }
        double* o = rowOut.data();
        for (std::size_t x = 0; x < vw; ++x) {
            o[x] = 0.0;
        }
        // out column vOff + x uses acc columns vOff + x - r + t = x + t (vOff == r).
        for (std::size_t t = 0; t < k; ++t) {
            const double g = taps[t];
            const double* src = a + t + (vOff - static_cast<std::size_t>(r));
            for (std::size_t x = 0; x < vw; ++x) {
                o[x] += g * src[x];
            }
        }
        float* dst = out.row(y) + vOff;
        for (std::size_t x = 0; x < vw; ++x) {
            dst[x] = static_cast<float>(o[x]);
        }
    }
}

/// Pass test of thresholdSpans for one pixel. Polarity::Both passes when either polarity passes.
bool passes(float value, float variance, double threshold, Polarity pol) {
    const double var = variance;
    if (!std::isfinite(var)) {
        return false;
    }
    const double limit = threshold * std::sqrt(var);  // NaN for var < 0: never passes
    const double v = value;
    switch (pol) {
        case Polarity::Positive:
            return v >= limit;
        case Polarity::Negative:
            return -v >= limit;
        case Polarity::Both:
            return v >= limit || -v >= limit;
    }
    return false;
}

/// Pixels of `valid` where pol*img >= threshold*sqrt(var) (NaN/inf never pass); image and
/// variance may have a larger box than `valid`.
SpanSet thresholdPlanes(const ImageF& image, const ImageF& variance, const Box& v, double threshold,
                        Polarity pol) {
    std::vector<Span> out;
    if (v.empty()) {
        return SpanSet{};
    }
    for (int y = v.y0; y < v.y1(); ++y) {
        const float* img = image.row(y) + (v.x0 - image.box().x0);
        const float* var = variance.row(y) + (v.x0 - variance.box().x0);
        int k = 0;
        while (k < v.width) {
            while (k < v.width && !passes(img[k], var[k], threshold, pol)) {
                ++k;
            }
            if (k >= v.width) {
                break;
            }
            const int start = k;
            while (k < v.width && passes(img[k], var[k], threshold, pol)) {
                ++k;
            }
            out.push_back(Span{y, v.x0 + start, v.x0 + k - 1});
        }
    }
    return SpanSet::fromSortedSpans(std::move(out));
}

/// Footprints of one polarity: threshold, 8-connected components with >= minPixels pixels, disk
/// growth clipped to `full`. Dilation distributes over union, so the union of the grown footprints
/// is the dilation of the union of the kept components.
SpanSet grownPolarity(const ImageF& image, const ImageF& variance, const Box& valid,
                      const DetectControl& ctrl, Polarity pol, const Box& full) {
    const std::vector<SpanSet> comps =
        connectedComponents8(thresholdPlanes(image, variance, valid, ctrl.thresholdValue, pol));
    std::vector<Span> kept;
    for (const SpanSet& c : comps) {
        if (c.area() >= ctrl.minPixels) {
            kept.insert(kept.end(), c.spans().begin(), c.spans().end());
        }
    }
    return SpanSet::fromSpans(std::move(kept)).dilateDisk(ctrl.growRadius(), full);
}

}  // namespace

void DetectControl::validate() const {
    if (!std::isfinite(psfSigma) || psfSigma <= 0.0) {
        throw InvalidParameter("DetectControl.psfSigma must be finite and > 0, got " +
                               std::to_string(psfSigma));
    }
    if (!std::isfinite(thresholdValue) || thresholdValue <= 0.0) {
        throw InvalidParameter("DetectControl.thresholdValue must be finite and > 0, got " +
                               std::to_string(thresholdValue));
    }
    if (polarity != Polarity::Positive && polarity != Polarity::Negative && polarity != Polarity::Both) {
        throw InvalidParameter("DetectControl.polarity has an invalid value");
    }
    if (!std::isfinite(nSigmaToGrow) || nSigmaToGrow < 0.0 || nSigmaToGrow * psfSigma > kMaxHalfWidth) {
        throw InvalidParameter(
            "DetectControl.nSigmaToGrow must be finite, >= 0 and give a sane radius, got " +
            std::to_string(nSigmaToGrow));
    }
    if (minPixels < 0) {
        throw InvalidParameter("DetectControl.minPixels must be >= 0, got " + std::to_string(minPixels));
    }
    if (doSmooth) {
        (void)halfWidthFor(psfSigma, nSigmaForKernel);  // throws on a bad nSigmaForKernel
    }
}

int DetectControl::kernelHalfWidth() const {
    return doSmooth ? halfWidthFor(psfSigma, nSigmaForKernel) : 0;
}

int DetectControl::growRadius() const {
    return static_cast<int>(nSigmaToGrow * psfSigma + 0.5);
}

std::vector<double> gaussianKernel1D(double sigma, double nSigmaForKernel) {
    const int r = halfWidthFor(sigma, nSigmaForKernel);
    std::vector<double> g(static_cast<std::size_t>(2 * r + 1));
    double sum = 0.0;
    for (int t = -r; t <= r; ++t) {
        const double v = std::exp(-static_cast<double>(t) * t / (2.0 * sigma * sigma));
        g[static_cast<std::size_t>(t + r)] = v;
        sum += v;
    }
    for (double& v : g) {
        v /= sum;
    }
    return g;
}

Smoothed smoothImage(const ImageF& image, const ImageF& variance, double sigma, double nSigmaForKernel) {
    if (!(image.box() == variance.box())) {
        throw InvalidParameter("smoothImage: image box " + image.box().str() + " != variance box " +
                               variance.box().str());
    }
    const std::vector<double> g = gaussianKernel1D(sigma, nSigmaForKernel);
    const int r = static_cast<int>(g.size() / 2);
    std::vector<double> g2(g.size());
    for (std::size_t t = 0; t < g.size(); ++t) {
        g2[t] = g[t] * g[t];
    }
    const Box& box = image.box();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    Smoothed s;
    s.image = ImageF(box, nan);
    s.variance = ImageF(box, nan);
    const long long vw = static_cast<long long>(box.width) - 2LL * r;
    const long long vh = static_cast<long long>(box.height) - 2LL * r;
    if (box.empty() || vw <= 0 || vh <= 0) {
        s.valid = Box{box.x0 + r, box.y0 + r, 0, 0};
        return s;
    }
    s.valid = Box{box.x0 + r, box.y0 + r, static_cast<int>(vw), static_cast<int>(vh)};
    std::vector<double> acc(static_cast<std::size_t>(box.width));
    std::vector<double> rowOut(static_cast<std::size_t>(vw));
    convolvePlane(image, s.image, g, r, s.valid, acc, rowOut);
    convolvePlane(variance, s.variance, g2, r, s.valid, acc, rowOut);
    return s;
}

SpanSet thresholdSpans(const Smoothed& s, double threshold, Polarity pol) {
    return thresholdPlanes(s.image, s.variance, s.valid, threshold, pol);
}

std::vector<SpanSet> detectFootprints(const ImageF& image, const ImageF& variance,
                                      const DetectControl& ctrl) {
    ctrl.validate();
    if (!(image.box() == variance.box())) {
        throw InvalidParameter("detectFootprints: image box " + image.box().str() + " != variance box " +
                               variance.box().str());
    }
    Smoothed s;
    if (ctrl.doSmooth) {
        s = smoothImage(image, variance, ctrl.psfSigma, ctrl.nSigmaForKernel);
    }
    // Unsmoothed: threshold the input planes themselves over the whole box.
    const ImageF& img = ctrl.doSmooth ? s.image : image;
    const ImageF& var = ctrl.doSmooth ? s.variance : variance;
    const Box valid = ctrl.doSmooth ? s.valid : image.box();
    const Box& full = image.box();
    SpanSet all;
    if (ctrl.polarity == Polarity::Positive || ctrl.polarity == Polarity::Both) {
        all = all.unite(grownPolarity(img, var, valid, ctrl, Polarity::Positive, full));
    }
    if (ctrl.polarity == Polarity::Negative || ctrl.polarity == Polarity::Both) {
        all = all.unite(grownPolarity(img, var, valid, ctrl, Polarity::Negative, full));
    }
    // Per-polarity re-segmentation followed by the union of both polarities gives the same pixel set
    // as uniting first; one 8-connected segmentation of the union is the spec's final result.
    return connectedComponents8(all);
}

TemplateDetection detectTemplate(const ImageF& image, double sigma, double nSigmaForKernel,
                                 double thresholdValue, double nSigmaToGrow, double statsSigma,
                                 int statsIter) {
    if (!(std::isfinite(sigma) && sigma > 0.0) || !(std::isfinite(thresholdValue) && thresholdValue > 0.0) ||
        !(std::isfinite(nSigmaToGrow) && nSigmaToGrow >= 0.0)) {
        throw InvalidParameter("detectTemplate: need sigma > 0, thresholdValue > 0 and nSigmaToGrow >= 0");
    }
    TemplateDetection out;
    const std::vector<double> g = gaussianKernel1D(sigma, nSigmaForKernel);
    const int r = static_cast<int>(g.size() / 2);
    const Box& box = image.box();
    const long long vw = static_cast<long long>(box.width) - 2LL * r;
    const long long vh = static_cast<long long>(box.height) - 2LL * r;
    if (box.empty() || vw <= 0 || vh <= 0) {
        out.stdev = out.threshold = std::numeric_limits<double>::quiet_NaN();
        return out;
    }
    const Box valid{box.x0 + r, box.y0 + r, static_cast<int>(vw), static_cast<int>(vh)};
    ImageF smoothed(box, std::numeric_limits<float>::quiet_NaN());
    {
        std::vector<double> acc(static_cast<std::size_t>(box.width));
        std::vector<double> rowOut(static_cast<std::size_t>(vw));
        convolvePlane(image, smoothed, g, r, valid, acc, rowOut);
    }
    std::vector<float> sample;
    sample.reserve(static_cast<std::size_t>(valid.area()));
    for (int y = valid.y0; y < valid.y1(); ++y) {
        const float* row = smoothed.row(y);  // row[i] is x = box.x0 + i
        for (int i = valid.x0 - box.x0; i < valid.x1() - box.x0; ++i) {
            if (std::isfinite(row[i])) {
                sample.push_back(row[i]);
            }
        }
    }
    out.stdev = stdevClipUnweighted(sample, statsSigma, statsIter);
    out.threshold = thresholdValue * out.stdev;
    sample = {};
    if (!std::isfinite(out.threshold)) {
        return out;
    }
    std::vector<Span> above;
    for (int y = valid.y0; y < valid.y1(); ++y) {
        const float* row = smoothed.row(y);  // row[i] is x = box.x0 + i
        auto passes = [&](int x) {
            return static_cast<double>(row[x - box.x0]) >= out.threshold;
        };  // NaN: no
        int x = valid.x0;
        while (x < valid.x1()) {
            if (!passes(x)) {
                ++x;
                continue;
            }
            const int x0 = x;
            while (x < valid.x1() && passes(x)) {
                ++x;
            }
            above.push_back(Span{y, x0, x - 1});
        }
    }
    const int grow = static_cast<int>(nSigmaToGrow * sigma + 0.5);
    out.footprints = SpanSet::fromSortedSpans(std::move(above)).dilateManhattan(grow, box);
    return out;
}

}  // namespace safeclip::kernel
