#pragma once
/// @file Serialization.h  Boost.Serialization for the kernel's geometry types (Box, Span), so that
/// they travel in Boost.MPI messages.
#include <boost/serialization/string.hpp>
#include <boost/serialization/utility.hpp>
#include <boost/serialization/vector.hpp>

#include "safeclip/kernel/Box.h"
#include "safeclip/kernel/SpanSet.h"

namespace boost::serialization {

template <class Archive>
void serialize(Archive& ar, safeclip::kernel::Box& b, const unsigned int /*version*/) {
    ar& b.x0& b.y0& b.width& b.height;
}

template <class Archive>
void serialize(Archive& ar, safeclip::kernel::Span& s, const unsigned int /*version*/) {
    ar& s.y& s.x0& s.x1;
}

}  // namespace boost::serialization
