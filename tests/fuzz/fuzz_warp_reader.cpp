// libFuzzer target: FITS header, HDU layout and mask-plane (MP_*) parsing of io::WarpReader.
// The input is written to a temporary file and opened as a warp; small images are read in full.
// Every rejection must be a safeclip::Error (InputError): anything else, a crash, a leak or an
// allocation beyond the RSS limit is a bug.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/MaskDict.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const std::string path = "/tmp/safeclip-fuzz-warp-" + std::to_string(::getpid()) + ".fits";
    if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
        std::fwrite(data, 1, size, f);
        std::fclose(f);
    } else {
        return 0;
    }
    // Tile-compressed inputs are left out: Debian 12's cfitsio 4.2.0 aborts or reads out of bounds
    // on corrupt compressed-image headers and tiles (tests/fuzz/known-crashes/README.md), which
    // would stop every run here before it reaches safeclip's own code.
    if (std::string_view(reinterpret_cast<const char*>(data), size).find("ZIMAGE") !=
        std::string_view::npos) {
        return 0;
    }
    try {
        safeclip::io::WarpReader r(path);
        safeclip::kernel::MaskDict dict = safeclip::kernel::MaskDict::canonical();
        r.conformTo(dict);
        if (r.header().box.area() <= 1 << 16) {
            (void)r.readAll();
        }
    } catch (const safeclip::Error&) {
    }
    return 0;
}
