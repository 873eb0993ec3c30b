#include "safeclip/io/Hash.h"

#include <cstdint>
#include <cstdio>

namespace safeclip::io {

namespace {

constexpr std::uint64_t kFnvOffset = 14695981039346656037ULL;
constexpr std::uint64_t kFnvPrime = 1099511628211ULL;

std::uint64_t fnv1a64(std::uint64_t h, std::string_view bytes) {
    for (const char c : bytes) {
        h ^= static_cast<unsigned char>(c);
        h *= kFnvPrime;
    }
    return h;
}

std::string hex16(std::uint64_t h) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
    return buf;
}

}  // namespace

std::string fnv1a64Hex(std::string_view bytes) {
    return hex16(fnv1a64(kFnvOffset, bytes));
}

std::string hashStrings(const std::vector<std::string>& lines) {
    std::uint64_t h = kFnvOffset;
    for (const auto& line : lines) {
        h = fnv1a64(h, line);
        h = fnv1a64(h, "\n");
    }
    return hex16(h);
}

}  // namespace safeclip::io
