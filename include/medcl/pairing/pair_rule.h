#pragma once

/// \file
/// Deprecated location: the pair-rule interface is part of the similarity engine and lives in
/// <medcl/core/pair_rule.h>. This header stays for one release so that existing includes work.

#include <medcl/core/pair_rule.h>
