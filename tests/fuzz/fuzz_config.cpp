// libFuzzer target: the TOML configuration (app::Config::fromFile, validate, dump/hash) and the
// --set parser on arbitrary bytes. Every rejection must be a safeclip::Error (ConfigError).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "safeclip/app/Config.h"
#include "safeclip/kernel/Error.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const std::string path = "/tmp/safeclip-fuzz-config-" + std::to_string(::getpid()) + ".toml";
    if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
        std::fwrite(data, 1, size, f);
        std::fclose(f);
    } else {
        return 0;
    }
    try {
        const safeclip::app::Config cfg = safeclip::app::Config::fromFile(path);
        cfg.validate();
        (void)cfg.hash();
    } catch (const safeclip::Error&) {
    }
    // The same bytes as one --set assignment (up to the first newline).
    const std::string text(reinterpret_cast<const char*>(data), size);
    try {
        safeclip::app::Config cfg;
        cfg.set(text.substr(0, text.find('\n')));
        cfg.validate();
    } catch (const safeclip::Error&) {
    }
    return 0;
}
