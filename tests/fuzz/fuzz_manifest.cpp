// libFuzzer target: the run manifest parser (io::readManifest) on arbitrary bytes. Every rejection
// must be a safeclip::Error (ConfigError); anything else is a bug.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "safeclip/io/Manifest.h"
#include "safeclip/kernel/Error.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const std::string path = "/tmp/safeclip-fuzz-manifest-" + std::to_string(::getpid()) + ".json";
    if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
        std::fwrite(data, 1, size, f);
        std::fclose(f);
    } else {
        return 0;
    }
    try {
        (void)safeclip::io::readManifest(path);
    } catch (const safeclip::Error&) {
    }
    return 0;
}
