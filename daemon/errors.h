// daemon/errors.h: the one place where filesystem errors become errno values.
#pragma once

#include "mm/result.h"

namespace pmemfuse::daemon {

int to_errno(Errc c);

}  // namespace pmemfuse::daemon
