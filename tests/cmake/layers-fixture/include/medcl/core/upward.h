#pragma once
// An upward include that the layer check must refuse.
#include <medcl/eval/metrics.h>
