# A stand-in for an old LibTorch (see TorchConfigVersion.cmake); defines nothing usable.
set(TORCH_LIBRARIES "")
