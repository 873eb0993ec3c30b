/// @file test_Config.cpp  Config: schema defaults, TOML files, --set, validation, dump/hash,
/// describeConfig, the shipped configs/*.toml.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <toml.hpp>

#include "ExpectError.h"
#include "TempDir.h"
#include "safeclip/app/Config.h"
#include "safeclip/app/PatchCoadd.h"
#include "safeclip/io/Hash.h"
#include "safeclip/kernel/Error.h"

namespace fs = std::filesystem;
using safeclip::ConfigError;
using safeclip::app::Config;
using safeclip::app::configSchema;
using safeclip::app::describeConfig;

namespace {

using safeclip::test::TempDir;

/// The message of the ConfigError thrown by f (fails the test when none is thrown).
const auto configErrorOf = safeclip::test::errorMessageOf<ConfigError>;

fs::path configsDir() {
    return fs::path(SAFECLIP_TEST_DATA) / ".." / ".." / "configs";
}

}  // namespace

TEST(Config, DefaultsMatchTheSpecTable) {
    const Config c;
    EXPECT_EQ(c.getString("input.manifest"), "");
    EXPECT_EQ(c.getString("input.on_bad_warp"), "fail");
    EXPECT_EQ(c.getString("output.dir"), "out");
    EXPECT_EQ(c.getString("checkpoint.dir"), "");
    EXPECT_EQ(c.getInt("tile.size"), 0);
    EXPECT_EQ(c.getString("memory.max_per_rank"), "1GiB");
    EXPECT_EQ(c.getString("coadd.mode"), "safeclip");
    EXPECT_EQ(c.getStringList("stack.bad_mask_planes"),
              (std::vector<std::string>{"NO_DATA", "BAD", "SAT", "EDGE"}));
    EXPECT_EQ(c.getDouble("stack.sigma_clip"), 1.5);
    EXPECT_EQ(c.getInt("stack.clip_iter"), 3);
    EXPECT_TRUE(c.getBool("stack.calc_error_from_input_variance"));
    ASSERT_EQ(c.getDoubleTable("stack.mask_propagation_thresholds").size(), 1U);
    EXPECT_EQ(c.getDoubleTable("stack.mask_propagation_thresholds")[0].first, "SAT");
    EXPECT_EQ(c.getDoubleTable("stack.mask_propagation_thresholds")[0].second, 0.1);
    EXPECT_EQ(c.getStringList("stack.remove_mask_planes"), (std::vector<std::string>{"NOT_DEBLENDED"}));
    EXPECT_EQ(c.getDouble("stack.zero_point"), 27.0);
    EXPECT_EQ(c.getDouble("detect.psf_sigma"), 0.0);
    EXPECT_EQ(c.getDouble("detect.threshold"), 2.0);
    EXPECT_EQ(c.getDouble("detect.n_sigma_to_grow"), 2.0);
    EXPECT_EQ(c.getInt("detect.min_pixels"), 4);
    EXPECT_EQ(c.getDouble("detect.n_sigma_for_kernel"), 7.0);
    EXPECT_EQ(c.getDouble("clip.min_foot_overlap"), 0.6);
    EXPECT_EQ(c.getDouble("clip.min_foot_overlap_single"), 0.5);
    EXPECT_EQ(c.getDouble("clip.min_foot_overlap_double"), 0.45);
    EXPECT_EQ(c.getDouble("clip.max_foot_overlap_double"), 0.15);
    EXPECT_EQ(c.getInt("clip.min_big_overlap"), 100);
    EXPECT_FALSE(c.getBool("clip.uint16_counts"));
    EXPECT_TRUE(c.getBool("interp.enabled"));
    EXPECT_TRUE(c.getBool("interp.use_fallback_value_at_edge"));
    EXPECT_FALSE(c.getBool("interp.negative_fallback_allowed"));
    EXPECT_FALSE(c.getBool("interp.transpose"));
    EXPECT_EQ(c.getString("log.level"), "info");
    EXPECT_EQ(c.getString("log.progress"), "auto");
    EXPECT_FALSE(c.getBool("qa.enabled"));
    // meas_algorithms FindCosmicRaysConfig defaults; nCrPixelMax as obs_decam/obs_subaru set it.
    EXPECT_FALSE(c.getBool("cosmic_rays.detect"));
    EXPECT_EQ(c.getDouble("cosmic_rays.psf_sigma"), 0.0);
    EXPECT_EQ(c.getInt("cosmic_rays.cell_size"), 1024);
    EXPECT_EQ(c.getDouble("cosmic_rays.background"), 0.0);
    EXPECT_EQ(c.getDouble("cosmic_rays.min_sigma"), 6.0);
    EXPECT_EQ(c.getDouble("cosmic_rays.min_dn"), 150.0);
    EXPECT_EQ(c.getDouble("cosmic_rays.sky_sigma_dn"), 20.0);
    EXPECT_EQ(c.getDouble("cosmic_rays.cond3_fac"), 2.5);
    EXPECT_EQ(c.getDouble("cosmic_rays.cond3_fac2"), 0.6);
    EXPECT_EQ(c.getInt("cosmic_rays.niteration"), 3);
    EXPECT_EQ(c.getInt("cosmic_rays.n_cr_pixel_max"), 100000);
    EXPECT_EQ(c.getDouble("checkpoint.tile_interval"), 30.0);
    EXPECT_FALSE(c.getBool("input.allow_mixed_filters"));
    // CompareWarpAssembleCoaddConfig defaults (spec §10).
    EXPECT_EQ(c.getDouble("comparewarp.model_psf_sigma"), 0.0);
    EXPECT_EQ(c.getDouble("comparewarp.template_sigma_clip"), 2.5);
    EXPECT_EQ(c.getInt("comparewarp.template_clip_iter"), 3);
    EXPECT_EQ(c.getDouble("comparewarp.threshold"), 5.0);
    EXPECT_EQ(c.getDouble("comparewarp.n_sigma_to_grow"), 0.4);
    EXPECT_EQ(c.getInt("comparewarp.min_pixels"), 4);
    EXPECT_EQ(c.getInt("comparewarp.max_num_epochs"), 2);
    EXPECT_EQ(c.getDouble("comparewarp.max_fraction_epochs_low"), 0.4);
    EXPECT_EQ(c.getDouble("comparewarp.max_fraction_epochs_high"), 0.03);
    EXPECT_EQ(c.getDouble("comparewarp.spatial_threshold"), 0.5);
    EXPECT_TRUE(c.getBool("comparewarp.scale_warp_variance"));
    EXPECT_TRUE(c.getBool("comparewarp.prefilter"));
    EXPECT_EQ(c.getDouble("comparewarp.prefilter_ratio"), 0.05);
    EXPECT_EQ(c.getStringList("comparewarp.prefilter_mask_planes"),
              (std::vector<std::string>{"NO_DATA", "BAD", "SAT", "SUSPECT"}));
    EXPECT_TRUE(c.getBool("comparewarp.preserve_contained_by_source"));
    EXPECT_FALSE(c.getBool("output.weight_map"));
    EXPECT_EQ(configSchema().size(), 62U);
    for (const auto& k : configSchema()) {
        EXPECT_FALSE(c.isSet(k.name)) << k.name;
        EXPECT_FALSE(k.doc.empty()) << k.name;
        EXPECT_EQ(k.doc.find('\n'), std::string::npos) << k.name;
    }
    EXPECT_NO_THROW(c.validate());
    EXPECT_EQ(c.baseDir(), "");
}

TEST(Config, ParsesAFileWithSections) {
    TempDir dir;
    const std::string path = dir.write("run.toml",
                                       "# a comment\n"
                                       "[input]\nmanifest = \"data/manifest.json\"\non_bad_warp = \"skip\"\n"
                                       "[stack]\nsigma_clip = 2\nclip_iter = 5\n"
                                       "bad_mask_planes = [\"NO_DATA\", \"BAD\"]\n"
                                       "mask_propagation_thresholds = { SAT = 0.2, CR = 1 }\n"
                                       "calc_error_from_input_variance = false\n"
                                       "[output]\ndir = \"/abs/out\"\n");
    const Config c = Config::fromFile(path);
    EXPECT_EQ(c.getString("input.on_bad_warp"), "skip");
    EXPECT_EQ(c.getDouble("stack.sigma_clip"), 2.0);  // an integer is fine for a float key
    EXPECT_EQ(c.getInt("stack.clip_iter"), 5);
    EXPECT_EQ(c.getStringList("stack.bad_mask_planes"), (std::vector<std::string>{"NO_DATA", "BAD"}));
    const auto& t = c.getDoubleTable("stack.mask_propagation_thresholds");
    ASSERT_EQ(t.size(), 2U);
    EXPECT_EQ(t[0], (std::pair<std::string, double>{"CR", 1.0}));  // sorted by plane name
    EXPECT_EQ(t[1], (std::pair<std::string, double>{"SAT", 0.2}));
    EXPECT_FALSE(c.getBool("stack.calc_error_from_input_variance"));
    EXPECT_TRUE(c.isSet("stack.clip_iter"));
    EXPECT_FALSE(c.isSet("detect.threshold"));
    EXPECT_EQ(c.getDouble("detect.threshold"), 2.0);
    EXPECT_NO_THROW(c.validate());

    // Paths resolve against the file's directory; absolute and empty ones are unchanged.
    EXPECT_EQ(fs::path(c.baseDir()), fs::absolute(dir.path()).lexically_normal());
    EXPECT_EQ(fs::path(c.path("input.manifest")),
              (fs::absolute(dir.path()) / "data" / "manifest.json").lexically_normal());
    EXPECT_EQ(c.path("output.dir"), "/abs/out");
    EXPECT_EQ(c.path("checkpoint.dir"), "");
    EXPECT_EQ(Config().path("output.dir"), "out");
}

TEST(Config, DottedKeysAtTopLevelAreAccepted) {
    TempDir dir;
    const Config c = Config::fromFile(dir.write("a.toml", "stack.sigma_clip = 3.5\n"));
    EXPECT_EQ(c.getDouble("stack.sigma_clip"), 3.5);
}

TEST(Config, UnknownKeyNamesKeyAndFile) {
    TempDir dir;
    const std::string path = dir.write("bad.toml", "[stack]\nsigma_clip = 1.5\nsigmaclip = 2.0\n");
    const std::string msg = configErrorOf([&] { (void)Config::fromFile(path); });
    EXPECT_EQ(msg.rfind(path + ": unknown key 'stack.sigmaclip'", 0), 0U) << msg;
    EXPECT_NE(msg.find("stack.sigma_clip"), std::string::npos) << msg;  // suggestion

    const std::string top = dir.write("top.toml", "verbose = true\n");
    EXPECT_NE(configErrorOf([&] { (void)Config::fromFile(top); }).find("unknown key 'verbose'"),
              std::string::npos);
    const std::string sec = dir.write("sec.toml", "[nonsense]\nx = 1\n");
    EXPECT_NE(configErrorOf([&] { (void)Config::fromFile(sec); }).find("unknown key 'nonsense.x'"),
              std::string::npos);
}

TEST(Config, WrongTypeNamesKeyAndTypes) {
    TempDir dir;
    const std::string path = dir.write("t.toml", "[stack]\nclip_iter = \"three\"\n");
    EXPECT_EQ(configErrorOf([&] { (void)Config::fromFile(path); }),
              path + ": key 'stack.clip_iter': expected an integer, got a string");

    const std::string f = dir.write("f.toml", "[stack]\nclip_iter = 3.0\n");
    EXPECT_EQ(configErrorOf([&] { (void)Config::fromFile(f); }),
              f + ": key 'stack.clip_iter': expected an integer, got a float");
    const std::string l = dir.write("l.toml", "[stack]\nbad_mask_planes = [\"BAD\", 3]\n");
    EXPECT_NE(configErrorOf([&] { (void)Config::fromFile(l); }).find("key 'stack.bad_mask_planes'"),
              std::string::npos);
    const std::string b = dir.write("b.toml", "[interp]\nenabled = 1\n");
    EXPECT_NE(configErrorOf([&] { (void)Config::fromFile(b); }).find("expected a boolean, got an integer"),
              std::string::npos);
}

TEST(Config, SyntaxErrorIsOneLineWithLineNumber) {
    TempDir dir;
    const std::string path = dir.write("s.toml", "[stack]\nsigma_clip = 1.5\nclip_iter = \n");
    const std::string msg = configErrorOf([&] { (void)Config::fromFile(path); });
    EXPECT_EQ(msg.rfind(path + ": TOML syntax error at line 3: ", 0), 0U) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;

    const std::string dup = dir.write("d.toml", "[stack]\nclip_iter = 1\nclip_iter = 2\n");
    const std::string m2 = configErrorOf([&] { (void)Config::fromFile(dup); });
    EXPECT_NE(m2.find("TOML syntax error at line"), std::string::npos) << m2;
    EXPECT_EQ(m2.find('\n'), std::string::npos) << m2;

    const std::string missing = (dir.path() / "nope.toml").string();
    EXPECT_EQ(configErrorOf([&] { (void)Config::fromFile(missing); }).rfind(missing + ":", 0), 0U);
}

TEST(Config, OutOfRangeIsNamed) {
    const std::vector<std::pair<std::string, std::string>> bad = {
        {"stack.sigma_clip=0", "stack.sigma_clip"},
        {"stack.sigma_clip=-1.5", "stack.sigma_clip"},
        {"stack.clip_iter=0", "stack.clip_iter"},
        {"stack.mask_propagation_thresholds={SAT=1.5}", "stack.mask_propagation_thresholds"},
        {"detect.psf_sigma=-0.1", "detect.psf_sigma"},
        {"detect.threshold=0", "detect.threshold"},
        {"detect.n_sigma_to_grow=-1", "detect.n_sigma_to_grow"},
        {"detect.min_pixels=0", "detect.min_pixels"},
        {"detect.n_sigma_for_kernel=0", "detect.n_sigma_for_kernel"},
        {"clip.min_foot_overlap=1.1", "clip.min_foot_overlap"},
        {"clip.min_foot_overlap_single=-0.1", "clip.min_foot_overlap_single"},
        {"clip.min_foot_overlap_double=2", "clip.min_foot_overlap_double"},
        {"clip.max_foot_overlap_double=nan", "clip.max_foot_overlap_double"},
        {"clip.min_big_overlap=-1", "clip.min_big_overlap"},
        {"tile.size=8", "tile.size"},
        {"checkpoint.tile_interval=-1", "checkpoint.tile_interval"},
        {"input.on_bad_warp=ignore", "input.on_bad_warp"},
        {"coadd.mode=median", "coadd.mode"},
        {"log.level=verbose", "log.level"},
        {"log.progress=sometimes", "log.progress"},
        {"memory.max_per_rank=lots", "memory.max_per_rank"},
    };
    for (const auto& [assignment, key] : bad) {
        Config c;
        c.set(assignment);
        const std::string msg = configErrorOf([&] { c.validate(); });
        EXPECT_NE(msg.find(key), std::string::npos) << assignment << " -> " << msg;
    }
    Config ok;
    ok.set("tile.size=16");
    ok.set("clip.min_foot_overlap=1");
    ok.set("memory.max_per_rank=256MiB");
    EXPECT_NO_THROW(ok.validate());
}

TEST(Config, SetParsesTomlValues) {
    Config c;
    c.set("stack.sigma_clip=2.5");
    EXPECT_EQ(c.getDouble("stack.sigma_clip"), 2.5);
    c.set("stack.sigma_clip = 3");  // integer for a float key, spaces around '='
    EXPECT_EQ(c.getDouble("stack.sigma_clip"), 3.0);
    c.set("stack.clip_iter=7");
    EXPECT_EQ(c.getInt("stack.clip_iter"), 7);
    c.set("interp.enabled=false");
    EXPECT_FALSE(c.getBool("interp.enabled"));
    c.set("stack.bad_mask_planes=[\"NO_DATA\",\"SAT\"]");
    EXPECT_EQ(c.getStringList("stack.bad_mask_planes"), (std::vector<std::string>{"NO_DATA", "SAT"}));
    c.set("stack.mask_propagation_thresholds={SAT=0.25, CR=0.5}");
    EXPECT_EQ(c.getDoubleTable("stack.mask_propagation_thresholds"),
              (std::vector<std::pair<std::string, double>>{{"CR", 0.5}, {"SAT", 0.25}}));
    c.set("coadd.mode=mean");  // a bare word is a string
    EXPECT_EQ(c.getString("coadd.mode"), "mean");
    c.set("output.dir=\"my out\"");
    EXPECT_EQ(c.getString("output.dir"), "my out");
    c.set("output.dir=2024");  // a string key takes the text as written
    EXPECT_EQ(c.getString("output.dir"), "2024");
    c.set("memory.max_per_rank=512MiB");
    EXPECT_EQ(c.getString("memory.max_per_rank"), "512MiB");
    c.set("checkpoint.dir=");
    EXPECT_EQ(c.getString("checkpoint.dir"), "");
    EXPECT_TRUE(c.isSet("checkpoint.dir"));
    EXPECT_NO_THROW(c.validate());

    EXPECT_EQ(configErrorOf([&] { c.set("stack.clip_iter=abc"); }),
              "--set: key 'stack.clip_iter': expected an integer, got a string");
    EXPECT_EQ(
        configErrorOf([&] { c.set("stack.sigmaclip=1"); }).rfind("--set: unknown key 'stack.sigmaclip'", 0),
        0U);
    EXPECT_NE(configErrorOf([&] { c.set("stack.sigma_clip"); }).find("key=value"), std::string::npos);
    EXPECT_NE(configErrorOf([&] { c.set("interp.enabled=yes"); }).find("expected a boolean, got a string"),
              std::string::npos);
}

TEST(Config, DumpAndHashAreStable) {
    const Config a;
    const Config b;
    EXPECT_EQ(a.dump(), b.dump());
    EXPECT_EQ(a.hash(), b.hash());
    EXPECT_EQ(a.hash().size(), 16U);
    EXPECT_EQ(a.hash().find_first_not_of("0123456789abcdef"), std::string::npos);
    EXPECT_EQ(a.hash(), safeclip::io::fnv1a64Hex(a.dump()));  // the SCCFGHSH card: FNV-1a 64 of the dump
    // sorted sections and keys, shortest round-trip doubles
    const std::string d = a.dump();
    EXPECT_NE(d.find("[stack]\nbad_mask_planes = [\"NO_DATA\", \"BAD\", \"SAT\", \"EDGE\"]\n"),
              std::string::npos)
        << d;
    EXPECT_NE(d.find("sigma_clip = 1.5\n"), std::string::npos);
    EXPECT_NE(d.find("zero_point = 27.0\n"), std::string::npos);
    EXPECT_NE(d.find("mask_propagation_thresholds = { SAT = 0.1 }\n"), std::string::npos);
    EXPECT_LT(d.find("[checkpoint]"), d.find("[clip]"));
    EXPECT_LT(d.find("[clip]"), d.find("[coadd]"));

    Config c;
    c.set("stack.sigma_clip=1.5000000000000002");
    EXPECT_NE(c.dump(), a.dump());
    EXPECT_NE(c.hash(), a.hash());
    c.set("stack.sigma_clip=1.5");
    EXPECT_EQ(c.hash(), a.hash());  // same effective values, same hash

    // The dump is valid TOML and reads back to the same configuration.
    TempDir dir;
    c.set("output.dir=\"a \\\"quoted\\\" dir\"");
    c.set("stack.mask_propagation_thresholds={SAT=0.1, \"ODD NAME\"=0.3}");
    const Config back = Config::fromFile(dir.write("dump.toml", c.dump()));
    EXPECT_EQ(back.dump(), c.dump());
    EXPECT_EQ(back.getString("output.dir"), "a \"quoted\" dir");
}

TEST(Config, DescribeConfigIsTomlOfTheDefaults) {
    const std::string text = describeConfig();
    for (const auto& k : configSchema()) {
        const std::string leaf = k.name.substr(k.name.find('.') + 1);
        EXPECT_NE(text.find("\n" + leaf + " = "), std::string::npos) << k.name;
    }
    EXPECT_NE(text.find("sigma_clip = 1.5  # float; "), std::string::npos) << text;
    EXPECT_NE(text.find("sigmaClip"), std::string::npos);
    std::istringstream in(text);
    EXPECT_NO_THROW((void)toml::parse(in, "describe"));
    TempDir dir;
    const Config c = Config::fromFile(dir.write("described.toml", text));
    EXPECT_EQ(c.dump(), Config().dump());
    EXPECT_EQ(c.hash(), Config().hash());
    EXPECT_NO_THROW(c.validate());
}

TEST(Config, ShippedConfigsLoad) {
    const Config def = Config::fromFile((configsDir() / "default.toml").string());
    EXPECT_EQ(def.dump(), Config().dump());
    for (const auto& k : configSchema()) {
        EXPECT_TRUE(def.isSet(k.name)) << "configs/default.toml lacks " << k.name;
    }
    const Config ci = Config::fromFile((configsDir() / "ci.toml").string());
    EXPECT_NO_THROW(ci.validate());
    EXPECT_EQ(ci.getString("memory.max_per_rank"), "256MiB");
    EXPECT_EQ(ci.getDouble("detect.psf_sigma"), 0.0);
}

// TOML is UTF-8 text; anything else is refused before the TOML parser sees it (toml11 3.7.1 reads
// past its buffer on some invalid sequences: tests/fuzz/corpus/config/crash-toml11-invalid-utf8).
TEST(Config, NonUtf8FilesAreRefusedNamingFileAndLine) {
    TempDir dir;
    const std::string bad = dir.write("bad.toml", "[stack]\nsigma_clip = 1.5 # \xd1\n");
    try {
        (void)Config::fromFile(bad);
        FAIL() << "accepted";
    } catch (const safeclip::ConfigError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(bad), std::string::npos) << what;
        EXPECT_NE(what.find("line 2"), std::string::npos) << what;
        EXPECT_NE(what.find("UTF-8"), std::string::npos) << what;
    }
    const std::string nul = dir.write("nul.toml", std::string("[stack]\nclip_iter = 3\0\n", 23));
    EXPECT_THROW((void)Config::fromFile(nul), safeclip::ConfigError);
    const std::string good = dir.write("good.toml", "# σ-clipping, 1.5σ\n[stack]\nsigma_clip = 1.5\n");
    EXPECT_EQ(Config::fromFile(good).getDouble("stack.sigma_clip"), 1.5);
}

TEST(Config, CompareWarpKeysAndBaseChanges) {
    // Outside coadd.mode = comparewarp the [comparewarp] keys change no pixel: not in the science
    // config, so safeclip-mode outputs keep their CONFIG table and SCCFGHSH.
    Config c;
    for (const auto& line : scienceConfig(c)) {
        EXPECT_EQ(line.rfind("comparewarp.", 0), std::string::npos) << line;
    }
    const std::string safeclipHash = scienceConfigHash(c);
    c.set("comparewarp.threshold = 7.5");
    EXPECT_EQ(scienceConfigHash(c), safeclipHash);
    // In comparewarp mode they are, and §10's base changes apply to the stack keys not set.
    c.set("coadd.mode = \"comparewarp\"");
    EXPECT_NO_THROW(c.validate());
    const auto lines = scienceConfig(c);
    EXPECT_NE(std::find(lines.begin(), lines.end(), "comparewarp.threshold = 7.5"), lines.end());
    EXPECT_NE(
        std::find(lines.begin(), lines.end(), "stack.bad_mask_planes = [\"NO_DATA\", \"BAD\", \"SAT\"]"),
        lines.end());
    const safeclip::pipeline::PatchSettings s = makePatchSettings(c);
    EXPECT_EQ(s.mode, "comparewarp");
    EXPECT_EQ(s.compareWarp.threshold, 7.5);
    EXPECT_EQ(s.badMaskPlanes, (std::vector<std::string>{"NO_DATA", "BAD", "SAT"}));
    EXPECT_EQ(s.removeMaskPlanes, (std::vector<std::string>{"NOT_DEBLENDED", "EDGE"}));
    EXPECT_EQ(s.sigmaClip, 3.0);
    EXPECT_EQ(s.clipIter, 2);
    // A key the user set wins.
    c.set("stack.clip_iter = 3");
    EXPECT_EQ(makePatchSettings(c).clipIter, 3);
    c.set("coadd.mode = \"nope\"");
    EXPECT_THROW(c.validate(), ConfigError);
}
