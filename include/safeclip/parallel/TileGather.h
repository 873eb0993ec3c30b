#pragma once
/// @file TileGather.h  Gather finished tiles of a patch to the rank that writes it.
#include <vector>

#include "safeclip/kernel/Image.h"
#include "safeclip/parallel/Comm.h"

namespace safeclip::parallel {

/// A finished piece of a patch: masked image plus exposure count on the same box.
struct Tile {
    kernel::MaskedImage pixels;
    kernel::ImageU16 nImage;
};

/// Collective over `comm`: every rank sends its tiles to `root`, which copies them into `patch`
/// and `nImage` (both preallocated by root over the patch box; ignored elsewhere).
/// Tiles must lie inside the patch box; each patch pixel should be covered exactly once.
void gatherTiles(const Comm& comm, int root, const std::vector<Tile>& local, kernel::MaskedImage& patch,
                 kernel::ImageU16& nImage);
/// Same, with `comm == nullptr` meaning a serial run (the tiles are copied locally).
void gatherTiles(const Comm* comm, int root, const std::vector<Tile>& local, kernel::MaskedImage& patch,
                 kernel::ImageU16& nImage);

}  // namespace safeclip::parallel
