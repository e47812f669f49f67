# Shared set-up of ./scripts/test and ./scripts/demo (sourced, not run).
#
# Installs the system packages medcl needs with apt-get when they are missing and this user may
# install (root, or sudo without a password). With a LibTorch of your own (CMAKE_PREFIX_PATH or
# Torch_DIR set), libtorch-dev is neither needed nor installed.

medcl_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
medcl_build_dir="${MEDCL_BUILD_DIR:-$medcl_root/build/release}"

medcl_log() { printf '[medcl] %s\n' "$*" >&2; }

# The package tools (overridable so that the test suite can check the no-apt path).
medcl_apt_get="${MEDCL_APT_GET:-apt-get}"
medcl_dpkg_query="${MEDCL_DPKG_QUERY:-dpkg-query}"

medcl_user_torch() {
  [ -n "${Torch_DIR:-}" ] || [ -n "${CMAKE_PREFIX_PATH:-}" ]
}

# Debian/Ubuntu packages, by what needs them.
medcl_packages() {
  local pkgs="cmake ninja-build g++ ccache clang-format clang libclang-rt-dev libeigen3-dev libfmt-dev catch2 libbenchmark-dev gnuplot-nox zlib1g-dev libnifti2-dev libdcmtk-dev"
  if ! medcl_user_torch; then
    # MEDCL_TORCH_PACKAGES: another LibTorch from the archive (scripts/cuda-compile-check asks
    # for Debian 13's CUDA one this way).
    local torch_pkgs="${MEDCL_TORCH_PACKAGES:-libtorch-dev libopenblas0-openmp}"
    pkgs="$pkgs $torch_pkgs"
    # medcl::dist: the archive's LibTorch has c10d with Gloo, whose headers include Gloo's own. The
    # CUDA LibTorch is built on Gloo's CUDA variant (contrib), whose package conflicts with
    # libgloo-dev: installing that one would remove the CUDA LibTorch.
    case " $torch_pkgs " in
      *" libtorch-cuda-dev "*) pkgs="$pkgs libgloo-cuda-dev libnccl-dev" ;;
      # python3-torch: torchrun, through which tests/dist launch a distributed loss too.
      *) pkgs="$pkgs libgloo-dev python3-torch" ;;
    esac
  fi
  # The reference software the clinical statistics are checked against (ctest r.statistics,
  # skipped where they are missing; nothing is built with them).
  pkgs="$pkgs r-base-core r-cran-proc r-cran-survival r-cran-riskregression"
  # tests/report/test_html.cpp renders report.html in Chromium (skipped without). Debian's package
  # is "chromium"; Ubuntu's is a snap wrapper with another name, so only Debian asks for it.
  if grep -qs '^ID=debian' /etc/os-release; then
    pkgs="$pkgs chromium"
  fi
  echo "$pkgs"
}

# For ./scripts/fetch-data, to export the data sets stored in R's format (pbcseq, all,
# bladderbatch). Building never needs R; the tests use it where it is installed (medcl_packages
# installs it with the reference packages). The R packages holding the data, and Biobase, are
# unpacked from their .debs, not installed.
medcl_data_packages() {
  echo "r-base-core"
}

medcl_missing_packages() {
  local missing=""
  for p in $(medcl_packages); do
    if ! "$medcl_dpkg_query" -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing="$missing $p"
    fi
  done
  echo "$missing"
}

medcl_no_apt_message() {
  cat >&2 <<MSG
[medcl] This machine has no apt-get, and these are missing: $1
[medcl] medcl needs LibTorch >= 1.13, CMake >= 3.18, a C++17 compiler, Eigen 3, fmt and Catch2 (2.13 or 3.x).
[medcl] Provide LibTorch in one of two ways:
[medcl]   1. a Debian/Ubuntu machine: apt-get install libtorch-dev libopenblas0-openmp
[medcl]   2. your own LibTorch (pytorch.org's zip, or pip's torch): export CMAKE_PREFIX_PATH=/path/to/libtorch
[medcl]      (or Torch_DIR=/path/to/libtorch/share/cmake/Torch; for pip's torch the path is printed by
[medcl]       python3 -c 'import torch; print(torch.utils.cmake_prefix_path)'), then run this again.
MSG
}

medcl_install_deps() {
  if ! command -v "$medcl_dpkg_query" >/dev/null 2>&1 || ! command -v "$medcl_apt_get" >/dev/null 2>&1; then
    if medcl_user_torch && command -v cmake >/dev/null 2>&1; then
      return 0
    fi
    medcl_no_apt_message "LibTorch and the build tools (no package manager to query)"
    return 1
  fi
  local missing
  missing="$(medcl_missing_packages)"
  [ -z "$missing" ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo="sudo -n"
    else
      medcl_log "missing packages:$missing"
      medcl_log "install them with: sudo apt-get install$missing"
      medcl_log "(or, for LibTorch, set CMAKE_PREFIX_PATH / Torch_DIR to a LibTorch of your own)"
      return 1
    fi
  fi
  medcl_log "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  $sudo "$medcl_apt_get" update -q >/dev/null || medcl_log "apt-get update failed; trying the install anyway"
  # shellcheck disable=SC2086
  $sudo "$medcl_apt_get" install -y -q --no-install-recommends $missing >/dev/null
}

medcl_configure() {
  local args=()
  [ -n "${Torch_DIR:-}" ] && args+=("-DTorch_DIR=$Torch_DIR")
  if [ ! -f "$medcl_build_dir/CMakeCache.txt" ]; then
    cmake -S "$medcl_root" -B "$medcl_build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${args[@]}" "$@"
  elif [ "$#" -gt 0 ] || [ "${#args[@]}" -gt 0 ]; then
    cmake "$medcl_build_dir" "${args[@]}" "$@" >/dev/null
  fi
}

medcl_jobs() {
  nproc 2>/dev/null || echo 2
}
