#include <medcl/core/runtime.h>
#include <medcl/version.h>

#include <catch2/catch.hpp>

#include <string>

TEST_CASE("version() matches the generated header", "[core]") {
  REQUIRE(std::string(medcl::version()) == MEDCL_VERSION_STRING);
  const std::string expected = std::to_string(MEDCL_VERSION_MAJOR) + "." +
      std::to_string(MEDCL_VERSION_MINOR) + "." + std::to_string(MEDCL_VERSION_PATCH);
  REQUIRE(std::string(medcl::version()) == expected);
}

TEST_CASE("runtime_info() names versions and threads", "[core]") {
  const auto info = medcl::runtime_info();
  REQUIRE(info.medcl_version == medcl::version());
  REQUIRE(info.torch_version.find('.') != std::string::npos);
  REQUIRE(info.cpu_threads >= 1);
  REQUIRE(info.cuda_device_count >= 0);
  const auto line = info.summary();
  REQUIRE(line.find("medcl " + info.medcl_version) != std::string::npos);
  REQUIRE(line.find("LibTorch " + info.torch_version) != std::string::npos);
}
