#pragma once
/// @file Config.h  The configuration: a schema of dotted keys with types, defaults and docs;
/// TOML files (`[stack] sigma_clip = 1.5` is key `stack.sigma_clip`) and `--set key=value`
/// overrides. Unknown keys, wrong types and out-of-range values are ConfigErrors naming the key.
/// toml11 parses the files (a well-kept TOML library from Debian: typed values and line numbers
/// in its errors, so we write no parser of our own).
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace safeclip::app {

enum class KeyType { Bool, Int, Double, String, StringList, DoubleTable };

using ConfigValue = std::variant<bool, std::int64_t, double, std::string, std::vector<std::string>,
                                 std::vector<std::pair<std::string, double>>>;

/// One configuration key.
struct KeyDef {
    std::string name;  ///< dotted, e.g. "stack.sigma_clip"
    KeyType type;
    ConfigValue defaultValue;
    std::string doc;  ///< one line: meaning, unit, upstream name
};

/// Every key, in documentation order.
const std::vector<KeyDef>& configSchema();

class Config {
public:
    /// All defaults.
    Config();
    /// Defaults overlaid by a TOML file. @throws ConfigError "PATH: key: problem"
    static Config fromFile(const std::string& path);
    /// Apply "key=value"; value is parsed as TOML (1.5, true, "s", [..], {SAT=0.1}); a bare word is
    /// taken as a string. @throws ConfigError
    void set(const std::string& assignment);
    /// Range checks across keys. @throws ConfigError naming the key
    void validate() const;

    [[nodiscard]] bool getBool(const std::string& key) const;
    [[nodiscard]] std::int64_t getInt(const std::string& key) const;
    [[nodiscard]] double getDouble(const std::string& key) const;
    [[nodiscard]] const std::string& getString(const std::string& key) const;
    [[nodiscard]] const std::vector<std::string>& getStringList(const std::string& key) const;
    [[nodiscard]] const std::vector<std::pair<std::string, double>>& getDoubleTable(
        const std::string& key) const;
    /// True when the key was given in a file or with --set (not defaulted).
    [[nodiscard]] bool isSet(const std::string& key) const;

    /// The effective configuration as TOML text, keys sorted (for provenance and hashing).
    [[nodiscard]] std::string dump() const;
    /// 16 hex digits of FNV-1a-64 of dump().
    [[nodiscard]] std::string hash() const;
    /// Directory of the config file ("" when none): relative paths in the config resolve against it.
    [[nodiscard]] const std::string& baseDir() const { return m_baseDir; }
    /// Resolve a path-valued key against baseDir().
    [[nodiscard]] std::string path(const std::string& key) const;

private:
    void assign(const std::string& key, const ConfigValue& value, const std::string& origin);
    std::map<std::string, ConfigValue> m_values;
    std::map<std::string, bool> m_set;
    std::string m_baseDir;
};

/// `safeclip config` text: every key with its type, default and meaning.
std::string describeConfig();

}  // namespace safeclip::app
