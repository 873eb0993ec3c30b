#include "safeclip/kernel/Box.h"

#include <sstream>

namespace safeclip::kernel {

Box Box::intersect(const Box& b) const {
    const int nx0 = std::max(x0, b.x0);
    const int ny0 = std::max(y0, b.y0);
    const int nx1 = std::min(x1(), b.x1());
    const int ny1 = std::min(y1(), b.y1());
    if (nx1 <= nx0 || ny1 <= ny0) {
        return Box{nx0, ny0, 0, 0};
    }
    return Box{nx0, ny0, nx1 - nx0, ny1 - ny0};
}

Box Box::rows(int ya, int yb) const {
    return intersect(Box{x0, ya, width, yb - ya});
}

std::string Box::str() const {
    std::ostringstream os;
    os << "[" << x0 << ":" << x1() << "," << y0 << ":" << y1() << ")";
    return os.str();
}

}  // namespace safeclip::kernel
