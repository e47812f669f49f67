// The Catch2 main for all of medcl's test executables (Catch2 v2 or v3, see catch.h).
#if defined(MEDCL_CATCH2_MAJOR) && MEDCL_CATCH2_MAJOR >= 3
#include <catch2/catch_session.hpp>

int main(int argc, char* argv[]) {
  return Catch::Session().run(argc, argv);
}
#else
#define CATCH_CONFIG_MAIN
#include "catch.h"
#endif
