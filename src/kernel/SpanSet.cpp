/// @file SpanSet.cpp  Run-length pixel sets: normalisation, row-wise set algebra, disk dilation,
/// mask rasterisation and 8-connected components (union-find over spans).
#include "safeclip/kernel/SpanSet.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdlib>
#include <iterator>
#include <limits>
#include <numeric>
#include <utility>

namespace safeclip::kernel {

namespace {

/// Strict (y, x0) ordering of spans.
bool spanLess(const Span& a, const Span& b) {
    return a.y < b.y || (a.y == b.y && a.x0 < b.x0);
}

/// True when `spans` is sorted by (y, x0), every span is non-empty and no two spans of a row overlap
/// or touch.
[[maybe_unused]] bool isNormalised(const std::vector<Span>& spans) {
    for (std::size_t i = 0; i < spans.size(); ++i) {
        if (spans[i].x1 < spans[i].x0) {
            return false;
        }
        if (i > 0) {
            const Span& p = spans[i - 1];
            const Span& s = spans[i];
            if (s.y < p.y) {
                return false;
            }
            // long long: p.x1 + 1 must not overflow for x1 == INT_MAX
            if (s.y == p.y && static_cast<long long>(s.x0) <= static_cast<long long>(p.x1) + 1) {
                return false;
            }
        }
    }
    return true;
}

/// Merge spans sorted by (y, x0) (empty spans allowed and dropped) into a normalised list, in place.
void mergeSorted(std::vector<Span>& spans) {
    std::size_t out = 0;
    bool have = false;
    for (std::size_t i = 0; i < spans.size(); ++i) {
        const Span s = spans[i];
        if (s.x1 < s.x0) {
            continue;
        }
        if (have) {
            Span& cur = spans[out - 1];
            if (cur.y == s.y && static_cast<long long>(s.x0) <= static_cast<long long>(cur.x1) + 1) {
                cur.x1 = std::max(cur.x1, s.x1);
                continue;
            }
        }
        spans[out++] = s;
        have = true;
    }
    spans.resize(out);
}

/// Integer floor(sqrt(v)) for v >= 0, exact.
int isqrt(long long v) {
    if (v <= 0) {
        return 0;
    }
    auto w = static_cast<long long>(std::sqrt(static_cast<double>(v)));
    while (w * w > v) {
        --w;
    }
    while ((w + 1) * (w + 1) <= v) {
        ++w;
    }
    return static_cast<int>(w);
}

/// Union-find with path halving and union by index (smaller index becomes root).
class UnionFind {
public:
    explicit UnionFind(std::size_t n) : m_parent(n) { std::iota(m_parent.begin(), m_parent.end(), 0U); }
    std::size_t find(std::size_t i) {
        while (m_parent[i] != i) {
            m_parent[i] = m_parent[m_parent[i]];
            i = m_parent[i];
        }
        return i;
    }
    void unite(std::size_t a, std::size_t b) {
        a = find(a);
        b = find(b);
        if (a == b) {
            return;
        }
        if (a < b) {
            m_parent[b] = a;
        } else {
            m_parent[a] = b;
        }
    }

private:
    std::vector<std::size_t> m_parent;
};

}  // namespace

SpanSet SpanSet::fromSpans(std::vector<Span> spans) {
    std::sort(spans.begin(), spans.end(), spanLess);
    mergeSorted(spans);
    SpanSet result;
    result.m_spans = std::move(spans);
    return result;
}

SpanSet SpanSet::fromSortedSpans(std::vector<Span> spans) {
    assert(isNormalised(spans) && "SpanSet::fromSortedSpans: spans not normalised");
    SpanSet result;
    result.m_spans = std::move(spans);
    return result;
}

SpanSet SpanSet::fromBox(const Box& box) {
    SpanSet result;
    if (box.empty()) {
        return result;
    }
    result.m_spans.reserve(static_cast<std::size_t>(box.height));
    for (int y = box.y0; y < box.y1(); ++y) {
        result.m_spans.push_back(Span{y, box.x0, box.x1() - 1});
    }
    return result;
}

std::int64_t SpanSet::area() const {
    std::int64_t n = 0;
    for (const Span& s : m_spans) {
        n += static_cast<std::int64_t>(s.x1) - s.x0 + 1;
    }
    return n;
}

Box SpanSet::bbox() const {
    if (m_spans.empty()) {
        return Box{};
    }
    int xmin = std::numeric_limits<int>::max();
    int xmax = std::numeric_limits<int>::min();
    for (const Span& s : m_spans) {
        xmin = std::min(xmin, s.x0);
        xmax = std::max(xmax, s.x1);
    }
    const int ymin = m_spans.front().y;
    const int ymax = m_spans.back().y;
    return Box{xmin, ymin, xmax - xmin + 1, ymax - ymin + 1};
}

bool SpanSet::contains(int x, int y) const {
    // First span that starts strictly after (y, x); the candidate is the one before it.
    const Span key{y, x, x};
    auto it = std::upper_bound(m_spans.begin(), m_spans.end(), key, spanLess);
    if (it == m_spans.begin()) {
        return false;
    }
    --it;
    return it->y == y && it->x0 <= x && x <= it->x1;
}

namespace {

/// Calls fn(y, lo, hi) for every overlap of two normalised span lists, in (y, x) order. Only the
/// rows both lists cover are walked (binary search to them), so a small set against a large one
/// (a footprint against a warp's whole CLIPPED union) costs its own size, not the large one's.
template <class Fn>
void forEachOverlap(const std::vector<Span>& a, const std::vector<Span>& b, Fn&& fn) {
    if (a.empty() || b.empty()) {
        return;
    }
    const int y0 = std::max(a.front().y, b.front().y);
    const int y1 = std::min(a.back().y, b.back().y);
    if (y0 > y1) {
        return;
    }
    auto rows = [y0, y1](const std::vector<Span>& v) {
        const auto first =
            std::lower_bound(v.begin(), v.end(), y0, [](const Span& sp, int y) { return sp.y < y; });
        const auto last =
            std::upper_bound(first, v.end(), y1, [](int y, const Span& sp) { return y < sp.y; });
        return std::pair{static_cast<std::size_t>(first - v.begin()),
                         static_cast<std::size_t>(last - v.begin())};
    };
    auto [i, iEnd] = rows(a);
    auto [j, jEnd] = rows(b);
    while (i < iEnd && j < jEnd) {
        if (a[i].y < b[j].y) {
            ++i;
        } else if (b[j].y < a[i].y) {
            ++j;
        } else {
            const int lo = std::max(a[i].x0, b[j].x0);
            const int hi = std::min(a[i].x1, b[j].x1);
            if (lo <= hi) {
                fn(a[i].y, lo, hi);
            }
            if (a[i].x1 < b[j].x1) {
                ++i;
            } else {
                ++j;
            }
        }
    }
}

}  // namespace

SpanSet SpanSet::intersect(const SpanSet& other) const {
    std::vector<Span> out;
    forEachOverlap(m_spans, other.m_spans, [&](int y, int lo, int hi) { out.push_back(Span{y, lo, hi}); });
    // Pieces of one row are separated by a gap of a or of b, so the result is already normalised.
    return fromSortedSpans(std::move(out));
}

std::int64_t SpanSet::intersectArea(const SpanSet& other) const {
    std::int64_t n = 0;
    forEachOverlap(m_spans, other.m_spans,
                   [&](int /*y*/, int lo, int hi) { n += static_cast<std::int64_t>(hi) - lo + 1; });
    return n;
}

SpanSet SpanSet::unite(const SpanSet& other) const {
    if (other.m_spans.empty()) {
        return *this;
    }
    if (m_spans.empty()) {
        return other;
    }
    std::vector<Span> out;
    out.reserve(m_spans.size() + other.m_spans.size());
    std::merge(m_spans.begin(), m_spans.end(), other.m_spans.begin(), other.m_spans.end(),
               std::back_inserter(out), spanLess);
    mergeSorted(out);
    return fromSortedSpans(std::move(out));
}

SpanSet SpanSet::subtract(const SpanSet& other) const {
    const std::vector<Span>& a = m_spans;
    const std::vector<Span>& b = other.m_spans;
    if (b.empty()) {
        return *this;
    }
    std::vector<Span> out;
    std::size_t j = 0;
    for (const Span& s : a) {
        // b spans entirely before s can be skipped for every later span of a as well.
        while (j < b.size() && (b[j].y < s.y || (b[j].y == s.y && b[j].x1 < s.x0))) {
            ++j;
        }
        int cur = s.x0;
        bool done = false;
        for (std::size_t k = j; k < b.size() && b[k].y == s.y && b[k].x0 <= s.x1; ++k) {
            if (b[k].x0 > cur) {
                out.push_back(Span{s.y, cur, b[k].x0 - 1});
            }
            if (b[k].x1 >= s.x1) {
                done = true;
                break;
            }
            cur = std::max(cur, b[k].x1 + 1);
        }
        if (!done && cur <= s.x1) {
            out.push_back(Span{s.y, cur, s.x1});
        }
    }
    // Pieces are separated by spans of b or gaps of a: normalised.
    return fromSortedSpans(std::move(out));
}

SpanSet SpanSet::clippedTo(const Box& box) const {
    SpanSet result;
    if (box.empty()) {
        return result;
    }
    const int bx1 = box.x1() - 1;
    for (const Span& s : m_spans) {
        if (s.y < box.y0) {
            continue;
        }
        if (s.y >= box.y1()) {
            break;
        }
        const int lo = std::max(s.x0, box.x0);
        const int hi = std::min(s.x1, bx1);
        if (lo <= hi) {
            result.m_spans.push_back(Span{s.y, lo, hi});
        }
    }
    return result;
}

SpanSet SpanSet::dilateDisk(int r, const Box& clip) const {
    if (r <= 0 || clip.empty() || m_spans.empty()) {
        return clippedTo(clip);
    }
    // half[dy + r] = floor(sqrt(r^2 - dy^2)), exact integer square root.
    std::vector<int> half(static_cast<std::size_t>(2 * r + 1));
    const long long r2 = static_cast<long long>(r) * r;
    for (int dy = -r; dy <= r; ++dy) {
        half[static_cast<std::size_t>(dy + r)] = isqrt(r2 - static_cast<long long>(dy) * dy);
    }
    return dilateRows(half, clip);
}

SpanSet SpanSet::dilateManhattan(int r, const Box& clip) const {
    if (r <= 0 || clip.empty() || m_spans.empty()) {
        return clippedTo(clip);
    }
    std::vector<int> half(static_cast<std::size_t>(2 * r + 1));
    for (int dy = -r; dy <= r; ++dy) {
        half[static_cast<std::size_t>(dy + r)] = r - std::abs(dy);
    }
    return dilateRows(half, clip);
}

SpanSet SpanSet::dilateRows(const std::vector<int>& half, const Box& clip) const {
    const int r = static_cast<int>(half.size() / 2);
    const long long cx0 = clip.x0;
    const long long cx1 = static_cast<long long>(clip.x1()) - 1;
    const long long cy0 = clip.y0;
    const long long cy1 = static_cast<long long>(clip.y1()) - 1;
    std::vector<Span> out;
    out.reserve(m_spans.size() * static_cast<std::size_t>(2 * r + 1));
    for (const Span& s : m_spans) {
        for (int dy = -r; dy <= r; ++dy) {
            const long long y = static_cast<long long>(s.y) + dy;
            if (y < cy0 || y > cy1) {
                continue;
            }
            const int w = half[static_cast<std::size_t>(dy + r)];
            const long long lo = std::max(static_cast<long long>(s.x0) - w, cx0);
            const long long hi = std::min(static_cast<long long>(s.x1) + w, cx1);
            if (lo <= hi) {
                out.push_back(Span{static_cast<int>(y), static_cast<int>(lo), static_cast<int>(hi)});
            }
        }
    }
    return fromSpans(std::move(out));
}

void SpanSet::paint(MaskImage& mask, MaskPixel bits) const {
    paint(mask.data().data(), mask.box(), bits);
}

void SpanSet::paint(MaskPixel* mask, const Box& box, MaskPixel bits) const {
    const SpanSet inside = clippedTo(box);
    for (const Span& s : inside.spans()) {
        MaskPixel* row = mask + static_cast<std::ptrdiff_t>(s.y - box.y0) * box.width - box.x0;
        for (int x = s.x0; x <= s.x1; ++x) {
            row[x] |= bits;
        }
    }
}

SpanSet uniteAll(const std::vector<SpanSet>& sets) {
    std::size_t n = 0;
    for (const SpanSet& s : sets) {
        n += s.spans().size();
    }
    std::vector<Span> all;
    all.reserve(n);
    for (const SpanSet& s : sets) {
        all.insert(all.end(), s.spans().begin(), s.spans().end());
    }
    return SpanSet::fromSpans(std::move(all));
}

std::vector<SpanSet> connectedComponents8(const SpanSet& set) {
    const std::vector<Span>& spans = set.spans();
    const std::size_t n = spans.size();
    std::vector<SpanSet> result;
    if (n == 0) {
        return result;
    }
    UnionFind uf(n);
    // Walk the rows; [prevBegin, prevEnd) are the spans of row y-1 when it exists.
    std::size_t prevBegin = 0;
    std::size_t prevEnd = 0;
    bool havePrev = false;
    std::size_t i = 0;
    while (i < n) {
        const int y = spans[i].y;
        std::size_t rowEnd = i;
        while (rowEnd < n && spans[rowEnd].y == y) {
            ++rowEnd;
        }
        if (havePrev && static_cast<long long>(spans[prevBegin].y) == static_cast<long long>(y) - 1) {
            std::size_t j = prevBegin;
            for (std::size_t k = i; k < rowEnd; ++k) {
                const long long ax0 = spans[k].x0;
                const long long ax1 = spans[k].x1;
                // Skip spans of the previous row ending before column ax0 - 1 (monotone in k).
                while (j < prevEnd && static_cast<long long>(spans[j].x1) + 1 < ax0) {
                    ++j;
                }
                for (std::size_t m = j; m < prevEnd && static_cast<long long>(spans[m].x0) <= ax1 + 1; ++m) {
                    uf.unite(k, m);
                }
            }
        }
        prevBegin = i;
        prevEnd = rowEnd;
        havePrev = true;
        i = rowEnd;
    }
    // Number components by first span; spans are visited in (y, x0) order so each component's span
    // list stays sorted and normalised.
    std::vector<std::size_t> compOf(n, std::numeric_limits<std::size_t>::max());
    std::vector<std::vector<Span>> comps;
    for (std::size_t k = 0; k < n; ++k) {
        const std::size_t root = uf.find(k);
        if (compOf[root] == std::numeric_limits<std::size_t>::max()) {
            compOf[root] = comps.size();
            comps.emplace_back();
        }
        comps[compOf[root]].push_back(spans[k]);
    }
    result.reserve(comps.size());
    for (std::vector<Span>& c : comps) {
        result.push_back(SpanSet::fromSortedSpans(std::move(c)));
    }
    return result;
}

void appendMaskRuns(std::vector<Span>& out, int y, int x0, const MaskPixel* row, int n, MaskPixel bits) {
    int k = 0;
    while (k < n) {
        while (k < n && (row[k] & bits) == 0) {
            ++k;
        }
        if (k >= n) {
            break;
        }
        const int start = k;
        while (k < n && (row[k] & bits) != 0) {
            ++k;
        }
        out.push_back(Span{y, x0 + start, x0 + k - 1});
    }
}

void appendMaskRuns(std::vector<Span>& out, int y, int x0, const MaskPixel* row, int n, MaskPixel anyBits,
                    MaskPixel noneBits) {
    int k = 0;
    auto in = [&](int idx) { return (row[idx] & anyBits) != 0 && (row[idx] & noneBits) == 0; };
    while (k < n) {
        while (k < n && !in(k)) {
            ++k;
        }
        if (k >= n) {
            break;
        }
        const int start = k;
        while (k < n && in(k)) {
            ++k;
        }
        out.push_back(Span{y, x0 + start, x0 + k - 1});
    }
}

void appendMaskRuns3(std::vector<Span>& bad, std::vector<Span>& detGood, std::vector<Span>& detAll, int y,
                     int x0, const MaskPixel* row, int n, MaskPixel badBits, MaskPixel detBits) {
    const MaskPixel anyBits = badBits | detBits;
    int startBad = -1;  // start of the open run of each list, -1 = none open
    int startGood = -1;
    int startAll = -1;
    auto update = [&](bool in, int& start, std::vector<Span>& out, int k) {
        if (in && start < 0) {
            start = k;
        } else if (!in && start >= 0) {
            out.push_back(Span{y, x0 + start, x0 + k - 1});
            start = -1;
        }
    };
    int k = 0;
    while (k < n) {
        if (startBad < 0 && startGood < 0 && startAll < 0) {
            // nothing open: skip clean pixels, eight at a time while the OR of eight is clean
            while (k + 8 <= n) {
                MaskPixel o = 0;
                for (int j = 0; j < 8; ++j) {
                    o |= row[k + j];
                }
                if ((o & anyBits) != 0) {
                    break;
                }
                k += 8;
            }
            while (k < n && (row[k] & anyBits) == 0) {
                ++k;
            }
            if (k >= n) {
                break;
            }
        }
        const MaskPixel m = row[k];
        const bool isBad = (m & badBits) != 0;
        const bool isDet = (m & detBits) != 0;
        update(isBad, startBad, bad, k);
        update(isDet && !isBad, startGood, detGood, k);
        update(isDet, startAll, detAll, k);
        ++k;
    }
    update(false, startBad, bad, n);
    update(false, startGood, detGood, n);
    update(false, startAll, detAll, n);
}

SpanSet spansFromMask(const MaskImage& mask, MaskPixel bits) {
    const Box& box = mask.box();
    std::vector<Span> out;
    if (box.empty()) {
        return SpanSet{};
    }
    for (int y = box.y0; y < box.y1(); ++y) {
        appendMaskRuns(out, y, box.x0, mask.row(y), box.width, bits);
    }
    return SpanSet::fromSortedSpans(std::move(out));
}

SpanSet SpanSet::rowsIn(int y0, int y1) const {
    auto lo =
        std::lower_bound(m_spans.begin(), m_spans.end(), y0, [](const Span& a, int y) { return a.y < y; });
    auto hi = std::lower_bound(lo, m_spans.end(), y1, [](const Span& a, int y) { return a.y < y; });
    return SpanSet::fromSortedSpans(std::vector<Span>(lo, hi));
}

}  // namespace safeclip::kernel
