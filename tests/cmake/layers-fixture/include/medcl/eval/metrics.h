#pragma once
#include <medcl/core/upward.h>
