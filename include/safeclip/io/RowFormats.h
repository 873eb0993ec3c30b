#pragma once
/// @file RowFormats.h  Row types (kernel/DecisionTable.h, pipeline/PatchResult.h) as a FITS
/// binary table and as JSON, made from each row type's one field description (`Row::fields`).
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <vector>

#include "safeclip/io/ExposureWriter.h"
#include "safeclip/kernel/DecisionTable.h"

namespace safeclip::io {

/// A BINTABLE with one column per field (FieldName::column, FieldName::unit): integers as int64,
/// floating point as double, strings as strings.
template <class Row>
Table rowsToTable(const std::string& extname, const std::vector<Row>& rows) {
    Table t{extname, {}};
    Row probe;
    Row::fields(probe, [&t](const kernel::FieldName& n, const auto& member) {
        using T = std::decay_t<decltype(member)>;
        if constexpr (std::is_same_v<T, std::string>) {
            t.columns.push_back({n.column, std::vector<std::string>{}, n.unit});
        } else if constexpr (std::is_floating_point_v<T>) {
            t.columns.push_back({n.column, std::vector<double>{}, n.unit});
        } else {
            t.columns.push_back({n.column, std::vector<std::int64_t>{}, n.unit});
        }
    });
    for (const Row& r : rows) {
        std::size_t k = 0;
        Row::fields(r, [&](const kernel::FieldName&, const auto& member) {
            using T = std::decay_t<decltype(member)>;
            if constexpr (std::is_same_v<T, std::string>) {
                std::get<std::vector<std::string>>(t.columns[k++].data).push_back(member);
            } else if constexpr (std::is_floating_point_v<T>) {
                std::get<std::vector<double>>(t.columns[k++].data).push_back(static_cast<double>(member));
            } else {
                std::get<std::vector<std::int64_t>>(t.columns[k++].data)
                    .push_back(static_cast<std::int64_t>(member));
            }
        });
    }
    return t;
}

/// A JSON object with one key per field (FieldName::column; "a.b" is key b of object a).
template <class Row>
nlohmann::json rowToJson(const Row& row) {
    nlohmann::json j = nlohmann::json::object();
    Row::fields(row, [&j](const kernel::FieldName& n, const auto& member) {
        const std::string key = n.column;
        const auto dot = key.find('.');
        if (dot == std::string::npos) {
            j[key] = member;
        } else {
            j[key.substr(0, dot)][key.substr(dot + 1)] = member;
        }
    });
    return j;
}

}  // namespace safeclip::io
