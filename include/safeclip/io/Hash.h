#pragma once
/// @file Hash.h  The one content hash of safeclip: FNV-1a 64, as 16 lowercase hex digits. It keys the
/// checkpoints (config and input hashes) and the SCCFGHSH card, so its values must never change.
#include <string>
#include <string_view>
#include <vector>

namespace safeclip::io {

/// @brief FNV-1a 64 of `bytes`, as 16 lowercase hex digits ("cbf29ce484222325" for no bytes).
[[nodiscard]] std::string fnv1a64Hex(std::string_view bytes);

/// @brief FNV-1a 64 of the lines, each followed by "\n" (so {"a", "b"} and {"ab"} differ), as 16
/// lowercase hex digits: `fnv1a64Hex` of the joined text, computed without building it.
[[nodiscard]] std::string hashStrings(const std::vector<std::string>& lines);

}  // namespace safeclip::io
