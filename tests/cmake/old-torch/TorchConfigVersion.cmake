# A stand-in for an old LibTorch: medcl must refuse it at configure time, naming its version.
set(PACKAGE_VERSION "1.12.0")
set(PACKAGE_VERSION_COMPATIBLE TRUE)
