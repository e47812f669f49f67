// The Catch2 main for all of medcl's test executables.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
