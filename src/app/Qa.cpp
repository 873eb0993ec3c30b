/// @file Qa.cpp  The QA picture of a coadd, drawn with Cairo (see Qa.h for the layout).
#include "safeclip/app/Qa.h"

#include <cairo.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "safeclip/io/AtomicFile.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/FitsFile.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/MaskDict.h"

namespace safeclip::app {

namespace {

// ---- geometry constants ---------------------------------------------------------------------
constexpr int kTargetImage = 720;  ///< long side of the image panel, PNG pixels (approximately)
constexpr int kMaxZoom = 8;
constexpr int kMargin = 16;
constexpr int kTitleH = 46;
constexpr int kPanelTitleH = 22;
constexpr int kCornerLabelH = 18;
constexpr int kGap = 28;
constexpr int kSideW = 360;
constexpr int kNImageMaxH = 260;
constexpr int kNImageLegendH = 34;
constexpr int kFooterH = 44;  ///< two lines: the mask legend, then the stretch
constexpr int kChartLabelW = 150;
constexpr int kChartValueW = 64;

// ---- colours ----------------------------------------------------------------------------------
struct Rgb {
    std::uint8_t r, g, b;
};
constexpr Rgb kClippedRed{255, 0, 0};
constexpr Rgb kHatchBlue{70, 150, 255};
constexpr Rgb kNoDataBack{38, 38, 46};
constexpr Rgb kBarRed{214, 48, 39};
constexpr double kBackground = 0.97;

/// A perceptually ordered ramp (viridis anchors) for t in [0, 1].
Rgb ramp(double t) {
    static constexpr Rgb kAnchors[] = {{68, 1, 84},    {72, 40, 120},  {62, 74, 137},  {49, 104, 142},
                                       {38, 130, 142}, {31, 158, 137}, {53, 183, 121}, {109, 205, 89},
                                       {180, 222, 44}, {253, 231, 37}};
    constexpr int n = static_cast<int>(std::size(kAnchors));
    t = std::clamp(t, 0.0, 1.0) * (n - 1);
    const int i = std::min(static_cast<int>(t), n - 2);
    const double f = t - i;
    auto mix = [f](std::uint8_t a, std::uint8_t b) {
        return static_cast<std::uint8_t>(std::lround(a + (b - a) * f));
    };
    return {mix(kAnchors[i].r, kAnchors[i + 1].r), mix(kAnchors[i].g, kAnchors[i + 1].g),
            mix(kAnchors[i].b, kAnchors[i + 1].b)};
}

/// NIMAGE colour: 0 (no warp) is black, 1..max along the ramp.
Rgb nImageColour(int n, int maxN) {
    if (n <= 0) {
        return {0, 0, 0};
    }
    return ramp(maxN <= 1 ? 1.0 : static_cast<double>(n - 1) / (maxN - 1));
}

void setRgb(cairo_t* cr, Rgb c) {
    cairo_set_source_rgb(cr, c.r / 255.0, c.g / 255.0, c.b / 255.0);
}

// ---- what we read from the coadd ------------------------------------------------------------

/// Per display cell: mean of the finite image pixels, and the mask flags.
struct Cells {
    int nx = 0, ny = 0;
    std::vector<float> value;           ///< NaN when the cell has no finite pixel
    std::vector<std::uint8_t> clipped;  ///< any CLIPPED pixel
    std::vector<std::uint8_t> noData;   ///< most pixels NO_DATA
};

struct Stretch {
    double median = 0, sigma = 1, hi = 1;
    double tLo = 0, tHi = 1;
    [[nodiscard]] std::uint8_t grey(double v) const {
        if (!std::isfinite(v)) {
            return 0;
        }
        const double t = std::asinh((v - median) / (2.0 * sigma));
        return static_cast<std::uint8_t>(std::lround(std::clamp((t - tLo) / (tHi - tLo), 0.0, 1.0) * 255.0));
    }
};

struct WarpRow {
    std::int64_t visit = -1;
    std::string file;  ///< the warp file's name without directory and .fits (label)
    std::int64_t nClipped = 0;
    bool used = true;
};

struct CoaddInfo {
    std::string patch, mode;
    std::optional<std::int64_t> nWarps, nUsed;
};

/// Read IMAGE and MASK in row chunks into display cells, and a subsample of the pixels for the
/// stretch statistics.
Cells readCells(const io::WarpReader& reader, const QaLayout& L, kernel::MaskPixel clippedBit,
                kernel::MaskPixel noDataBit, std::vector<float>& sample) {
    const kernel::Box& box = L.box;
    Cells c;
    c.nx = L.cellsX;
    c.ny = L.cellsY;
    const std::size_t nCells = static_cast<std::size_t>(c.nx) * static_cast<std::size_t>(c.ny);
    std::vector<double> sum(nCells, 0.0);
    std::vector<std::int32_t> nFinite(nCells, 0), nNoData(nCells, 0), nPix(nCells, 0);
    c.clipped.assign(nCells, 0);
    c.noData.assign(nCells, 0);
    c.value.assign(nCells, std::numeric_limits<float>::quiet_NaN());

    // At most ~1M samples for the statistics.
    const std::int64_t stride = std::max<std::int64_t>(1, box.area() / 1'000'000);
    std::int64_t counter = 0;
    // Chunks of whole cell rows, about 4M pixels each.
    const int cellRowsPerChunk = std::max(1, static_cast<int>(4'000'000 / (std::int64_t{box.width} * L.bin)));
    std::vector<float> image;
    std::vector<kernel::MaskPixel> mask;
    for (int cy0 = 0; cy0 < c.ny; cy0 += cellRowsPerChunk) {
        const int ya = box.y0 + cy0 * L.bin;
        const int yb = std::min(box.y1(), ya + cellRowsPerChunk * L.bin);
        const kernel::Box chunk = box.rows(ya, yb);
        image.resize(static_cast<std::size_t>(chunk.area()));
        mask.resize(static_cast<std::size_t>(chunk.area()));
        reader.readPlanes(chunk, image.data(), mask.data(), nullptr);
        for (int y = ya; y < yb; ++y) {
            const std::size_t rowOff = static_cast<std::size_t>(y - ya) * static_cast<std::size_t>(box.width);
            const std::size_t cellRow = static_cast<std::size_t>((y - box.y0) / L.bin) * c.nx;
            for (int x = 0; x < box.width; ++x) {
                const std::size_t k = rowOff + static_cast<std::size_t>(x);
                const std::size_t cell = cellRow + static_cast<std::size_t>(x / L.bin);
                const float v = image[k];
                const kernel::MaskPixel m = mask[k];
                ++nPix[cell];
                if ((m & clippedBit) != 0) {
                    c.clipped[cell] = 1;
                }
                if ((m & noDataBit) != 0) {
                    ++nNoData[cell];
                    continue;
                }
                if (std::isfinite(v)) {
                    sum[cell] += v;
                    ++nFinite[cell];
                    if (counter++ % stride == 0) {
                        sample.push_back(v);
                    }
                }
            }
        }
    }
    for (std::size_t i = 0; i < nCells; ++i) {
        if (nFinite[i] > 0) {
            c.value[i] = static_cast<float>(sum[i] / nFinite[i]);
        }
        c.noData[i] = nPix[i] > 0 && 2 * nNoData[i] > nPix[i] ? 1 : 0;
    }
    return c;
}

Stretch makeStretch(std::vector<float>& sample) {
    Stretch s;
    if (sample.empty()) {
        return s;
    }
    auto quantile = [&sample](double q) {
        const auto k = static_cast<std::size_t>(q * static_cast<double>(sample.size() - 1));
        std::nth_element(sample.begin(), sample.begin() + static_cast<std::ptrdiff_t>(k), sample.end());
        return static_cast<double>(sample[k]);
    };
    s.median = quantile(0.5);
    const double hi = quantile(0.999);
    std::vector<float> dev(sample.size());
    for (std::size_t i = 0; i < sample.size(); ++i) {
        dev[i] = std::abs(sample[i] - static_cast<float>(s.median));
    }
    const auto k = dev.size() / 2;
    std::nth_element(dev.begin(), dev.begin() + static_cast<std::ptrdiff_t>(k), dev.end());
    s.sigma = 1.4826 * dev[k];
    if (!(s.sigma > 0) || !std::isfinite(s.sigma)) {
        s.sigma = std::max(1e-12, std::abs(hi - s.median) / 50.0);
    }
    s.hi = std::max(hi, s.median + 30.0 * s.sigma);
    s.tLo = std::asinh(-1.0 / 2.0);  // median - 1 sigma is black
    s.tHi = std::asinh((s.hi - s.median) / (2.0 * s.sigma));
    return s;
}

CoaddInfo readInfo(const std::string& path) {
    CoaddInfo info;
    io::FitsFile f(path, io::FitsFile::Mode::Read);
    f.moveToHdu(1);
    info.patch = f.readString("PATCH").value_or("");
    info.mode = f.readString("SCMODE").value_or("");
    info.nWarps = f.readInt("NWARPS");
    info.nUsed = f.readInt("NUSED");
    return info;
}

std::vector<WarpRow> readInputs(const std::string& path, std::string& note) {
    std::vector<WarpRow> rows;
    io::Table t;
    try {
        t = io::readTable(path, "INPUTS");
    } catch (const InputError&) {
        note = "no INPUTS table";
        return rows;
    }
    const std::vector<std::int64_t>* visit = nullptr;
    const std::vector<std::int64_t>* clipped = nullptr;
    const std::vector<std::string>* status = nullptr;
    const std::vector<std::string>* file = nullptr;
    for (const io::Column& c : t.columns) {
        if (c.name == "file") {
            file = std::get_if<std::vector<std::string>>(&c.data);
        }
        if (c.name == "visit") {
            visit = std::get_if<std::vector<std::int64_t>>(&c.data);
        } else if (c.name == "n_clipped_pixels") {
            clipped = std::get_if<std::vector<std::int64_t>>(&c.data);
        } else if (c.name == "status") {
            status = std::get_if<std::vector<std::string>>(&c.data);
        }
    }
    if (visit == nullptr || clipped == nullptr) {
        note = "INPUTS table lacks visit / n_clipped_pixels";
        return rows;
    }
    for (std::size_t i = 0; i < visit->size() && i < clipped->size(); ++i) {
        WarpRow r;
        r.visit = (*visit)[i];
        if (file != nullptr && i < file->size()) {
            std::string stem = std::filesystem::path((*file)[i]).filename().string();
            for (const char* ext : {".fits.fz", ".fits"}) {
                const std::string e(ext);
                if (stem.size() > e.size() && stem.compare(stem.size() - e.size(), e.size(), e) == 0) {
                    stem.resize(stem.size() - e.size());
                    break;
                }
            }
            r.file = stem.size() > 14 ? stem.substr(0, 13) + "~" : stem;
        }
        r.nClipped = (*clipped)[i];
        r.used = status == nullptr || i >= status->size() || (*status)[i].rfind("used", 0) == 0;
        rows.push_back(r);
    }
    return rows;
}

/// 12345 -> "12,345".
std::string fmtInt(std::int64_t v) {
    const std::string digits = std::to_string(v < 0 ? -v : v);
    std::string s = v < 0 ? "-" : "";
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) {
            s += ',';
        }
        s += digits[i];
    }
    return s;
}

std::string fmtG(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", v);
    return buf;
}

// ---- drawing helpers --------------------------------------------------------------------------

void text(cairo_t* cr, double x, double y, const std::string& s, double size, bool bold = false,
          double alignRight = 0.0) {
    cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
    if (alignRight != 0.0) {
        cairo_text_extents_t ext;
        cairo_text_extents(cr, s.c_str(), &ext);
        x -= ext.x_advance * alignRight;
    }
    cairo_move_to(cr, x, y);
    cairo_show_text(cr, s.c_str());
}

/// Shorten a path for the title: keep the tail.
std::string ellipsize(const std::string& s, std::size_t n) {
    return s.size() <= n ? s : "..." + s.substr(s.size() - (n - 3));
}

/// The image panel, drawn straight into the surface's pixels.
void paintImage(cairo_surface_t* surface, const QaLayout& L, const Cells& c, const Stretch& st) {
    cairo_surface_flush(surface);
    unsigned char* data = cairo_image_surface_get_data(surface);
    const int stride = cairo_image_surface_get_stride(surface);
    auto put = [&](int px, int py, Rgb col) {
        auto* p = reinterpret_cast<std::uint32_t*>(data + static_cast<std::ptrdiff_t>(py) * stride) + px;
        *p = 0xFF000000U | (std::uint32_t{col.r} << 16) | (std::uint32_t{col.g} << 8) | col.b;
    };
    auto at = [&c](int cx, int cy) { return static_cast<std::size_t>(cy) * c.nx + cx; };
    auto isClipped = [&](int cx, int cy) {
        return cx >= 0 && cy >= 0 && cx < c.nx && cy < c.ny && c.clipped[at(cx, cy)] != 0;
    };
    const int z = L.zoom;
    const int band = std::max(1, z / 3);  // outline thickness in PNG pixels
    for (int cy = 0; cy < c.ny; ++cy) {
        const int py0 = L.imageY + (c.ny - 1 - cy) * z;  // +y up
        for (int cx = 0; cx < c.nx; ++cx) {
            const int px0 = L.imageX + cx * z;
            const std::size_t i = at(cx, cy);
            const bool nd = c.noData[i] != 0;
            const std::uint8_t g = st.grey(c.value[i]);
            const bool clip = c.clipped[i] != 0;
            // Edges of this cell that border a non-CLIPPED cell (or the panel edge).
            const bool eL = clip && !isClipped(cx - 1, cy), eR = clip && !isClipped(cx + 1, cy);
            const bool eB = clip && !isClipped(cx, cy - 1), eT = clip && !isClipped(cx, cy + 1);
            for (int dy = 0; dy < z; ++dy) {
                for (int dx = 0; dx < z; ++dx) {
                    const int px = px0 + dx, py = py0 + dy;
                    Rgb col{g, g, g};
                    if (nd) {
                        col = ((px + py) % 8) < 2 ? kHatchBlue : kNoDataBack;
                    }
                    if (clip) {
                        const bool edge = (eL && dx < band) || (eR && dx >= z - band) || (eT && dy < band) ||
                                          (eB && dy >= z - band);
                        if (edge) {
                            col = kClippedRed;
                        }
                    }
                    put(px, py, col);
                }
            }
        }
    }
    cairo_surface_mark_dirty(surface);
}

void drawNImage(cairo_t* cr, const QaLayout& L, const kernel::ImageU16* nImage, int maxN) {
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    text(cr, L.sideX, L.nimageY - 7, "NIMAGE: warps used per pixel", 13, true);
    if (nImage == nullptr) {
        cairo_set_source_rgb(cr, 0.4, 0.4, 0.4);
        text(cr, L.sideX, L.nimageY + 20, "(no NIMAGE HDU in this file)", 12);
        return;
    }
    const kernel::Box& nb = nImage->box();
    cairo_surface_t* map = cairo_image_surface_create(CAIRO_FORMAT_RGB24, L.nimageW, L.nimageH);
    cairo_surface_flush(map);
    unsigned char* data = cairo_image_surface_get_data(map);
    const int stride = cairo_image_surface_get_stride(map);
    for (int j = 0; j < L.nimageH; ++j) {
        const int y = nb.y0 + std::min(nb.height - 1,
                                       static_cast<int>((L.nimageH - 1 - j + 0.5) * nb.height / L.nimageH));
        auto* row = reinterpret_cast<std::uint32_t*>(data + static_cast<std::ptrdiff_t>(j) * stride);
        for (int i = 0; i < L.nimageW; ++i) {
            const int x = nb.x0 + std::min(nb.width - 1, static_cast<int>((i + 0.5) * nb.width / L.nimageW));
            const Rgb col = nImageColour((*nImage)(x, y), maxN);
            row[i] = 0xFF000000U | (std::uint32_t{col.r} << 16) | (std::uint32_t{col.g} << 8) | col.b;
        }
    }
    cairo_surface_mark_dirty(map);
    cairo_set_source_surface(cr, map, L.sideX, L.nimageY);
    cairo_paint(cr);
    cairo_surface_destroy(map);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, L.sideX - 0.5, L.nimageY - 0.5, L.nimageW + 1, L.nimageH + 1);
    cairo_stroke(cr);

    // Legend: one swatch per count (0..maxN), or a continuous bar for many warps.
    const double ly = L.nimageY + L.nimageH + 8;
    const double lw = L.sideW;
    const double sh = 12;
    if (maxN <= 24) {
        const int n = maxN + 1;
        const double sw = lw / n;
        const int every = sw >= 16 ? 1 : (sw >= 8 ? 2 : 5);
        for (int v = 0; v < n; ++v) {
            setRgb(cr, nImageColour(v, maxN));
            cairo_rectangle(cr, L.sideX + v * sw, ly, sw, sh);
            cairo_fill(cr);
            if (v % every == 0 || v == maxN) {
                cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
                text(cr, L.sideX + (v + 0.5) * sw, ly + sh + 12, std::to_string(v), 10, false, 0.5);
            }
        }
    } else {
        for (int i = 0; i < static_cast<int>(lw); ++i) {
            setRgb(cr, nImageColour(1 + static_cast<int>(std::lround(i / lw * (maxN - 1))), maxN));
            cairo_rectangle(cr, L.sideX + i, ly, 1, sh);
            cairo_fill(cr);
        }
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
        text(cr, L.sideX, ly + sh + 12, "1", 10);
        text(cr, L.sideX + lw / 2, ly + sh + 12, std::to_string((maxN + 1) / 2), 10, false, 0.5);
        text(cr, L.sideX + lw, ly + sh + 12, std::to_string(maxN) + " (0 = black)", 10, false, 1.0);
    }
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_rectangle(cr, L.sideX - 0.5, ly - 0.5, lw + 1, sh + 1);
    cairo_stroke(cr);
}

void drawChart(cairo_t* cr, const QaLayout& L, const std::vector<WarpRow>& rows, const std::string& note) {
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    text(cr, L.sideX, L.chartY + 14, "CLIPPED pixels per warp", 13, true);
    if (!note.empty()) {
        cairo_set_source_rgb(cr, 0.4, 0.4, 0.4);
        text(cr, L.sideX, L.chartY + kPanelTitleH + 14, "(" + note + ")", 12);
        return;
    }
    std::int64_t maxCount = 1;
    for (const WarpRow& r : rows) {
        maxCount = std::max(maxCount, r.nClipped);
    }
    const double barX = L.sideX + kChartLabelW;
    const double barW = L.sideW - kChartLabelW - kChartValueW;
    const double fontSize = std::min(12.0, L.chartRowH * 0.8);
    double y = L.chartY + kPanelTitleH;
    // Light vertical grid at quarters.
    cairo_set_source_rgb(cr, 0.85, 0.85, 0.85);
    cairo_set_line_width(cr, 1);
    for (int q = 0; q <= 4; ++q) {
        const double gx = std::round(barX + barW * q / 4) + 0.5;
        cairo_move_to(cr, gx, y);
        cairo_line_to(cr, gx, y + L.chartRowH * static_cast<double>(rows.size()));
    }
    cairo_stroke(cr);
    for (const WarpRow& r : rows) {
        const double cyText = y + L.chartRowH * 0.5 + fontSize * 0.36;
        cairo_set_source_rgb(cr, r.used ? 0.1 : 0.55, r.used ? 0.1 : 0.55, r.used ? 0.1 : 0.55);
        // "visit 100 warp-100": the visit and the file it came from (a long name is cut, ~).
        text(cr, barX - 6, cyText, std::to_string(r.visit) + (r.file.empty() ? "" : " " + r.file), fontSize,
             false, 1.0);
        if (r.used) {
            const double w = barW * static_cast<double>(r.nClipped) / static_cast<double>(maxCount);
            setRgb(cr, kBarRed);
            cairo_rectangle(cr, barX, y + L.chartRowH * 0.15, std::max(w, r.nClipped > 0 ? 1.0 : 0.0),
                            L.chartRowH * 0.7);
            cairo_fill(cr);
            cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
            text(cr, barX + w + 4, cyText, fmtInt(r.nClipped), fontSize);
        } else {
            cairo_set_source_rgb(cr, 0.55, 0.55, 0.55);
            text(cr, barX + 4, cyText, "skipped", fontSize);
        }
        y += L.chartRowH;
    }
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_set_line_width(cr, 1);
    cairo_move_to(cr, std::round(barX) + 0.5, L.chartY + kPanelTitleH);
    cairo_line_to(cr, std::round(barX) + 0.5, y);
    cairo_stroke(cr);
    text(cr, barX, y + 13, "0", 10, false, 0.5);
    text(cr, barX + barW, y + 13, fmtInt(maxCount), 10, false, 0.5);
}

void drawFooter(cairo_t* cr, const QaLayout& L, const Stretch& st) {
    double x = L.imageX;
    const double y = L.footerY + 4;
    // CLIPPED sample: a red outlined square.
    setRgb(cr, kClippedRed);
    cairo_set_line_width(cr, 2);
    cairo_rectangle(cr, x + 1, y + 1, 14, 14);
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    text(cr, x + 22, y + 12, "CLIPPED (outline)", 12);
    x += 150;
    // NO_DATA sample: hatched square.
    setRgb(cr, kNoDataBack);
    cairo_rectangle(cr, x, y, 16, 16);
    cairo_fill(cr);
    setRgb(cr, kHatchBlue);
    cairo_set_line_width(cr, 2);
    cairo_save(cr);
    cairo_rectangle(cr, x, y, 16, 16);
    cairo_clip(cr);
    for (int k = -16; k < 32; k += 6) {
        cairo_move_to(cr, x + k, y + 16);
        cairo_line_to(cr, x + k + 16, y);
    }
    cairo_stroke(cr);
    cairo_restore(cr);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    text(cr, x + 22, y + 12, "NO_DATA (hatched)", 12);
    text(cr, L.imageX, y + 34,
         "grey: IMAGE, asinh stretch, black = median - 1\xCF\x83 (median " + fmtG(st.median) + ", \xCF\x83 " +
             fmtG(st.sigma) + ", white = " + fmtG(st.hi) + ")",
         12);
}

// ---- atomic PNG write -------------------------------------------------------------------------

struct PngSink {
    int fd = -1;
    int err = 0;
};

cairo_status_t pngWrite(void* closure, const unsigned char* data, unsigned int length) {
    auto* sink = static_cast<PngSink*>(closure);
    while (length > 0) {
        const ssize_t n = ::write(sink->fd, data, length);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            sink->err = errno;
            return CAIRO_STATUS_WRITE_ERROR;
        }
        data += n;
        length -= static_cast<unsigned int>(n);
    }
    return CAIRO_STATUS_SUCCESS;
}

void writePngAtomically(cairo_surface_t* surface, const std::string& pngPath) {
    io::writeAtomically(
        pngPath,
        [&](const std::string& tmp) {
            PngSink sink;
            sink.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            if (sink.fd < 0) {
                throw OutputError(pngPath + ": cannot create the temporary file: " + std::strerror(errno));
            }
            const cairo_status_t st = cairo_surface_write_to_png_stream(surface, pngWrite, &sink);
            if (st != CAIRO_STATUS_SUCCESS) {
                ::close(sink.fd);
                throw OutputError(pngPath + ": write failed: " +
                                  (sink.err != 0 ? std::strerror(sink.err) : cairo_status_to_string(st)));
            }
            if (::close(sink.fd) != 0) {
                throw OutputError(pngPath + ": close failed: " + std::strerror(errno));
            }
        },
        "the QA picture");
}

}  // namespace

// ---- layout -----------------------------------------------------------------------------------

double QaLayout::pngX(double x) const {
    return imageX + ((x - box.x0 + 0.5) / bin) * zoom;
}

double QaLayout::pngY(double y) const {
    return imageY + imageH - ((y - box.y0 + 0.5) / bin) * zoom;
}

QaLayout computeQaLayout(const kernel::Box& box, std::size_t nWarps) {
    if (box.empty()) {
        throw InvalidParameter("computeQaLayout: empty box");
    }
    QaLayout L;
    L.box = box;
    const int maxDim = std::max(box.width, box.height);
    if (maxDim <= kTargetImage) {
        L.bin = 1;
        L.zoom = std::clamp(kTargetImage / maxDim, 1, kMaxZoom);
    } else {
        L.bin = (maxDim + kTargetImage - 1) / kTargetImage;
        L.zoom = 1;
    }
    L.cellsX = (box.width + L.bin - 1) / L.bin;
    L.cellsY = (box.height + L.bin - 1) / L.bin;
    L.imageW = L.cellsX * L.zoom;
    L.imageH = L.cellsY * L.zoom;
    L.imageX = kMargin;
    L.imageY = kMargin + kTitleH + kPanelTitleH;
    L.sideX = L.imageX + L.imageW + kGap;
    L.sideW = kSideW;
    const double s =
        std::min(static_cast<double>(kSideW) / box.width, static_cast<double>(kNImageMaxH) / box.height);
    L.nimageW = std::max(1, static_cast<int>(std::lround(box.width * s)));
    L.nimageH = std::max(1, static_cast<int>(std::lround(box.height * s)));
    L.nimageY = L.imageY;
    L.chartY = L.nimageY + L.nimageH + kNImageLegendH + 18;
    const int n = static_cast<int>(std::max<std::size_t>(nWarps, 1));
    L.chartRowH = std::clamp(360 / n, 10, 20);
    const int chartBottom = L.chartY + kPanelTitleH + L.chartRowH * n + 16;
    const int imageBottom = L.imageY + L.imageH + kCornerLabelH;
    L.footerY = std::max(chartBottom, imageBottom) + 10;
    L.width = L.sideX + L.sideW + kMargin;
    L.height = L.footerY + kFooterH + kMargin / 2;
    return L;
}

// ---- the picture ------------------------------------------------------------------------------

void writeQaPng(const std::string& coaddPath, const std::string& pngPath) {
    io::WarpReader reader(coaddPath);
    kernel::MaskDict dict = kernel::MaskDict::canonical();
    reader.conformTo(dict);
    const kernel::Box box = reader.header().box;
    if (box.empty()) {
        throw InputError(coaddPath + ": empty IMAGE");
    }
    const CoaddInfo info = readInfo(coaddPath);
    std::string chartNote;
    const std::vector<WarpRow> warps = readInputs(coaddPath, chartNote);
    std::optional<kernel::ImageU16> nImage;
    try {
        nImage = io::readNImage(coaddPath);
        if (nImage->box().empty()) {
            nImage.reset();
        }
    } catch (const InputError&) {
        nImage.reset();
    }

    const QaLayout L = computeQaLayout(box, warps.size());
    std::vector<float> sample;
    const Cells cells = readCells(reader, L, dict.bitMask("CLIPPED"), dict.bitMask("NO_DATA"), sample);
    const Stretch st = makeStretch(sample);
    int maxN = 0;
    if (nImage) {
        for (const auto v : nImage->data()) {
            maxN = std::max(maxN, static_cast<int>(v));
        }
    }
    if (info.nWarps) {
        maxN = std::max(maxN, static_cast<int>(std::clamp<std::int64_t>(*info.nWarps, 0, 65535)));
    }
    std::int64_t nClippedCells = 0;
    for (const auto c : cells.clipped) {
        nClippedCells += c;
    }

    std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)> surface(
        cairo_image_surface_create(CAIRO_FORMAT_RGB24, L.width, L.height), &cairo_surface_destroy);
    if (cairo_surface_status(surface.get()) != CAIRO_STATUS_SUCCESS) {
        throw OutputError(pngPath + ": cannot create a " + std::to_string(L.width) + "x" +
                          std::to_string(L.height) +
                          " picture: " + cairo_status_to_string(cairo_surface_status(surface.get())));
    }
    std::unique_ptr<cairo_t, decltype(&cairo_destroy)> crHolder(cairo_create(surface.get()), &cairo_destroy);
    cairo_t* cr = crHolder.get();
    cairo_set_source_rgb(cr, kBackground, kBackground, kBackground);
    cairo_paint(cr);
    cairo_surface_flush(surface.get());
    paintImage(surface.get(), L, cells, st);

    // Title.
    cairo_set_source_rgb(cr, 0.05, 0.05, 0.05);
    std::string title = "safeclip QA";
    if (!info.patch.empty()) {
        title += "  \xE2\x80\x94  patch " + info.patch;
    }
    text(cr, kMargin, kMargin + 16, title, 18, true);
    cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
    std::string sub = ellipsize(coaddPath, 70) + "   box " + box.str() + " (" + std::to_string(box.width) +
                      "\xC3\x97" + std::to_string(box.height) + ")";
    if (info.nWarps) {
        sub += "   warps " + std::to_string(info.nUsed.value_or(*info.nWarps)) + "/" +
               std::to_string(*info.nWarps) + " used";
    }
    if (!info.mode.empty()) {
        sub += "   mode " + info.mode;
    }
    text(cr, kMargin, kMargin + 36, sub, 12);

    // Image panel title, frame and corner coordinates.
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    std::string scale = L.bin > 1 ? "binned " + std::to_string(L.bin) + "\xC3\x97" + std::to_string(L.bin)
                                  : "zoom " + std::to_string(L.zoom) + "\xC3\x97";
    text(cr, L.imageX, L.imageY - 7, "IMAGE (" + scale + ", +y up)", 13, true);
    cairo_set_source_rgb(cr, 0.35, 0.35, 0.35);
    text(cr, L.imageX + L.imageW, L.imageY - 7,
         fmtInt(nClippedCells) + (L.bin > 1 ? " cells" : " pixels") + " CLIPPED", 11, false, 1.0);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, L.imageX - 0.5, L.imageY - 0.5, L.imageW + 1, L.imageH + 1);
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.35, 0.35, 0.35);
    text(cr, L.imageX, L.imageY + L.imageH + 13,
         "(" + std::to_string(box.x0) + ", " + std::to_string(box.y0) + ")", 10);
    text(cr, L.imageX + L.imageW, L.imageY + L.imageH + 13,
         "(" + std::to_string(box.x1() - 1) + ", " + std::to_string(box.y0) + ")", 10, false, 1.0);

    drawNImage(cr, L, nImage ? &*nImage : nullptr, std::max(1, maxN));
    drawChart(cr, L, warps, chartNote);
    drawFooter(cr, L, st);

    crHolder.reset();
    cairo_surface_flush(surface.get());
    writePngAtomically(surface.get(), pngPath);
}

}  // namespace safeclip::app
