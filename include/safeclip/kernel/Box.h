#pragma once
/// @file Box.h  Integer pixel boxes in patch-global ("PARENT") coordinates.
#include <algorithm>
#include <cstdint>
#include <string>

namespace safeclip::kernel {

/// A rectangle of pixels: columns [x0, x0+width), rows [y0, y0+height), in PARENT coordinates.
struct Box {
    int x0 = 0;
    int y0 = 0;
    int width = 0;
    int height = 0;

    [[nodiscard]] int x1() const { return x0 + width; }   ///< one past the last column
    [[nodiscard]] int y1() const { return y0 + height; }  ///< one past the last row
    [[nodiscard]] bool empty() const { return width <= 0 || height <= 0; }
    [[nodiscard]] std::int64_t area() const {
        return empty() ? 0 : static_cast<std::int64_t>(width) * height;
    }
    [[nodiscard]] bool contains(int x, int y) const { return x >= x0 && x < x1() && y >= y0 && y < y1(); }
    [[nodiscard]] bool contains(const Box& b) const {
        return b.empty() || (b.x0 >= x0 && b.y0 >= y0 && b.x1() <= x1() && b.y1() <= y1());
    }
    /// Intersection (empty box with width/height 0 when disjoint).
    [[nodiscard]] Box intersect(const Box& b) const;
    /// Box grown by n pixels on every side (n may be negative).
    [[nodiscard]] Box grown(int n) const { return Box{x0 - n, y0 - n, width + 2 * n, height + 2 * n}; }
    /// Rows [ya, yb) of this box, clipped.
    [[nodiscard]] Box rows(int ya, int yb) const;
    [[nodiscard]] std::string str() const;  ///< "[x0:x1,y0:y1)" for messages
    bool operator==(const Box&) const = default;
};

}  // namespace safeclip::kernel
