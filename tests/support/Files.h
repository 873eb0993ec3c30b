#pragma once
// Reading whole files and comparing pixel vectors bit for bit (shared by the unit tests).
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace safeclip::test {

/// The bytes of a file ("" when it cannot be read).
inline std::string readFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// Same size and the same bits (so NaN == NaN and -0 != +0).
template <class T>
bool sameBits(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

}  // namespace safeclip::test
