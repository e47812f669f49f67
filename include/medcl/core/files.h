#pragma once

/// Removing and listing a directory tree without `std::filesystem::remove_all` and
/// `std::filesystem::recursive_directory_iterator`; the SHA-256 of a file (which data a run read).
///
/// PyTorch's pip wheels since 2.5 export the `std::filesystem` code of the libstdc++ they were
/// built with (pytorch/pytorch#133437). A program built with another GCC that links such a
/// LibTorch and calls `remove_all` or iterates recursively can bind those calls to the wheel's
/// copy, whose layout differs from its own headers: seen as a segmentation fault with torch
/// 2.11 (CUDA 13.0) and GCC 13.3. medcl's own code uses these two functions instead, and so can
/// yours. Symbolic links are never followed: a link is removed or listed as itself.

#include <cstdint>
#include <string>
#include <system_error>
#include <vector>

namespace medcl {

/// Removes `path` and, when it is a directory, everything below it. Returns the number of
/// entries removed; a path that does not exist removes nothing and is no error. On failure
/// `ec` says why and the entries already removed stay removed.
std::uintmax_t remove_tree(const std::string& path, std::error_code& ec);

/// As above, but throws (c10::Error) naming the path and the reason on failure.
std::uintmax_t remove_tree(const std::string& path);

/// Every entry below the directory `dir` (files, directories and links, not `dir` itself) as a
/// path that starts with `dir`, sorted. Throws (c10::Error) naming the directory that could not
/// be read.
std::vector<std::string> list_tree(const std::string& dir);

/// SHA-256 (FIPS 180-4) of `bytes`, as 64 lower-case hexadecimal digits (what `sha256sum`
/// prints).
std::string sha256_hex(const std::string& bytes);

/// SHA-256 of the file at `path`, read in blocks (any size); `size`, when given, receives its
/// length in bytes. Throws (c10::Error) naming the path when it cannot be opened or read.
std::string sha256_file(const std::string& path, std::uintmax_t* size = nullptr);

} // namespace medcl
