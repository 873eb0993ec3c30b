#pragma once
/// @file SpanSet.h  Run-length pixel sets (afw geom::Span/SpanSet) and 8-connected components.
/// Memory: 12 bytes per run.
#include <cstdint>
#include <vector>

#include "safeclip/kernel/Box.h"
#include "safeclip/kernel/Image.h"

namespace safeclip::kernel {

/// One run of pixels in row y, columns x0..x1 inclusive (afw convention).
struct Span {
    int y = 0;
    int x0 = 0;
    int x1 = 0;
    [[nodiscard]] int width() const { return x1 - x0 + 1; }
    bool operator==(const Span&) const = default;
};

/// A set of pixels stored as spans sorted by (y, x0), disjoint and with no two spans of a row
/// touching (normalised). All operations return normalised sets.
class SpanSet {
public:
    SpanSet() = default;
    /// Normalise arbitrary spans (sort, merge overlapping or adjacent runs).
    static SpanSet fromSpans(std::vector<Span> spans);
    /// Spans that are already normalised and sorted (checked in debug builds only).
    static SpanSet fromSortedSpans(std::vector<Span> spans);
    static SpanSet fromBox(const Box& box);

    [[nodiscard]] const std::vector<Span>& spans() const { return m_spans; }
    [[nodiscard]] bool empty() const { return m_spans.empty(); }
    [[nodiscard]] std::int64_t area() const;
    [[nodiscard]] Box bbox() const;  ///< empty Box when empty
    [[nodiscard]] bool contains(int x, int y) const;

    [[nodiscard]] SpanSet intersect(const SpanSet& other) const;
    [[nodiscard]] std::int64_t intersectArea(const SpanSet& other) const;
    [[nodiscard]] SpanSet unite(const SpanSet& other) const;
    [[nodiscard]] SpanSet subtract(const SpanSet& other) const;
    [[nodiscard]] SpanSet clippedTo(const Box& box) const;
    /// The spans of rows [y0, y1) (binary search on the sorted spans; no full scan).
    [[nodiscard]] SpanSet rowsIn(int y0, int y1) const;
    /// Dilation by the disk stencil {(dx,dy): |dy| <= r, |dx| <= floor(sqrt(r*r - dy*dy))},
    /// clipped to `clip` (spec §6.1.7). r <= 0 returns a copy clipped to `clip`.
    [[nodiscard]] SpanSet dilateDisk(int r, const Box& clip) const;
    /// Dilation by the Manhattan (diamond) stencil |dx| + |dy| <= r (afw Stencil MANHATTAN, the
    /// non-isotropic growth of FootprintSet), clipped to `clip`.
    [[nodiscard]] SpanSet dilateManhattan(int r, const Box& clip) const;

    /// OR `bits` into every pixel of `mask` that lies in this set (pixels outside mask.box() ignored).
    void paint(MaskImage& mask, MaskPixel bits) const;
    /// The same on a row-major mask buffer covering `box`.
    void paint(MaskPixel* mask, const Box& box, MaskPixel bits) const;

    bool operator==(const SpanSet&) const = default;

private:
    /// Dilation by a stencil symmetric in y: row dy in [-r, r] spans |dx| <= half[dy + r].
    [[nodiscard]] SpanSet dilateRows(const std::vector<int>& half, const Box& clip) const;
    std::vector<Span> m_spans;
};

/// Union of many sets.
SpanSet uniteAll(const std::vector<SpanSet>& sets);

/// 8-connected components of a set, each normalised, ordered by their first span (y, then x0).
std::vector<SpanSet> connectedComponents8(const SpanSet& set);

/// Append to `out` the runs of row y (PARENT coordinates, first column x0, n pixels) where
/// `(row[k] & bits) != 0`. Rows must be appended in increasing y to keep `out` sorted.
void appendMaskRuns(std::vector<Span>& out, int y, int x0, const MaskPixel* row, int n, MaskPixel bits);

/// Append runs of row y where `(row[k] & anyBits) != 0 && (row[k] & noneBits) == 0`.
void appendMaskRuns(std::vector<Span>& out, int y, int x0, const MaskPixel* row, int n, MaskPixel anyBits,
                    MaskPixel noneBits);

/// The three run lists of one mask row that SafeClip's overlap counts need, in one pass:
/// `bad` where `row & bad`, `detGood` where `row & det` and not `row & bad`, `detAll` where
/// `row & det` (each exactly what appendMaskRuns appends). Stretches with neither bit set are
/// skipped eight pixels at a time.
void appendMaskRuns3(std::vector<Span>& bad, std::vector<Span>& detGood, std::vector<Span>& detAll, int y,
                     int x0, const MaskPixel* row, int n, MaskPixel badBits, MaskPixel detBits);

/// Pixels of `mask` with any of `bits` set.
SpanSet spansFromMask(const MaskImage& mask, MaskPixel bits);

}  // namespace safeclip::kernel
