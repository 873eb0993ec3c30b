#pragma once
/// @file Qa.h  `safeclip qa`: a QA picture (PNG, drawn with Cairo) of one coadd.
///
/// Layout (all sizes in PNG pixels, see QaLayout):
///   title line (file, patch, box, warps used, mode)
///   left:  the coadd IMAGE, asinh stretch in grey, north (+y) up; CLIPPED pixels outlined in
///          red (the boundary of the CLIPPED region, not filled); NO_DATA hatched with blue
///          diagonal stripes. Large coadds are shown binned (a cell is CLIPPED when any of its
///          pixels is, NO_DATA when most are); small ones are zoomed by an integer factor.
///   right: the NIMAGE map (colour ramp with a legend), and a bar chart of each warp's CLIPPED
///          pixel count from the INPUTS table, labelled by visit.
///   footer: the legend of the colours and the stretch.
#include <cstddef>
#include <string>

#include "safeclip/kernel/Box.h"

namespace safeclip::app {

/// Where everything goes in the picture. Pure geometry: computeQaLayout() depends only on the
/// coadd's box and its number of warps, so tests can predict the PNG size and map PARENT pixels
/// to PNG pixels.
struct QaLayout {
    kernel::Box box;  ///< the coadd's PARENT box
    int bin = 1;      ///< coadd pixels per display cell along each axis (>= 1)
    int zoom = 1;     ///< PNG pixels per display cell along each axis (>= 1)
    int cellsX = 0;   ///< display cells across = ceil(box.width / bin)
    int cellsY = 0;   ///< display cells up = ceil(box.height / bin)
    int imageX = 0;   ///< PNG column of the image panel's left edge
    int imageY = 0;   ///< PNG row of the image panel's top edge
    int imageW = 0;   ///< cellsX * zoom
    int imageH = 0;   ///< cellsY * zoom
    int sideX = 0;    ///< left edge of the side column
    int sideW = 0;    ///< width of the side column
    int nimageY = 0;  ///< top of the NIMAGE map
    int nimageW = 0;  ///< NIMAGE map size in PNG pixels
    int nimageH = 0;
    int chartY = 0;     ///< top of the bar chart panel (title included)
    int chartRowH = 0;  ///< height of one bar row
    int footerY = 0;    ///< top of the footer legend
    int width = 0;      ///< PNG size
    int height = 0;

    /// PNG pixel (column, row) of the centre of coadd pixel (x, y) in the image panel (+y is up).
    [[nodiscard]] double pngX(double x) const;
    [[nodiscard]] double pngY(double y) const;
};

/// The layout for a coadd on `box` with `nWarps` rows in its INPUTS table.
QaLayout computeQaLayout(const kernel::Box& box, std::size_t nWarps);

/// Write the QA picture of the coadd at `coaddPath` to `pngPath` (atomically: a temporary file in
/// the same directory, fsynced and renamed into place).
/// @throws InputError when the coadd cannot be read (its IMAGE/MASK/NIMAGE/INPUTS), OutputError
///         when the PNG cannot be written (nothing is left behind).
void writeQaPng(const std::string& coaddPath, const std::string& pngPath);

}  // namespace safeclip::app
