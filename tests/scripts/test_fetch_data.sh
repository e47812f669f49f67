#!/usr/bin/env bash
# Test of scripts/fetch-data on one small set (pbcseq), in a temporary MEDCL_DATA_DIR:
#   1. a first run exports the set, complete and matching scripts/data-checksums.sha256;
#   2. a second run changes nothing (same files, sizes, mtimes) and still prints the provenance;
#   3. --verify passes on it, and names the file when a byte of a copy is flipped; a plain run on
#      the corrupted copy fails too instead of using it;
#   4. a set without its .complete marker (an interrupted run) is not taken as fetched;
#   5. MEDCL_DATA_ACCEPT_NEW=1 accepts files that differ from the recorded sums and records theirs.
#
#   tests/scripts/test_fetch_data.sh      # exit 0: passed, 1: failed, 77: skipped (no R, no apt-get)
#
# It needs Debian's archive (apt-get download) unless the user's data cache already holds the .deb,
# and R (Rscript) or the right to install it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
fetch="$root/scripts/fetch-data"

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }

if ! command -v "${MEDCL_RSCRIPT:-Rscript}" >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ] && ! { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
    skip "no Rscript, and this user may not install r-base-core"
  fi
fi
command -v apt-get >/dev/null 2>&1 || command -v dpkg-deb >/dev/null 2>&1 || skip "not a Debian system"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
data="$tmp/data"
mkdir -p "$data/.cache/debs"
# Reuse the user's downloaded .deb when there is one (no network needed then).
user_debs="${MEDCL_DATA_DIR:-$root/build/data}/.cache/debs"
cp "$user_debs"/r-cran-survival_*.deb "$data/.cache/debs/" 2>/dev/null || true

run() { # run DIR ARGS...: fetch-data into DIR, stdout in $tmp/out, stderr in $tmp/err
  local dir="$1"
  shift
  env -u MEDCL_DATA_ACCEPT_NEW MEDCL_DATA_DIR="$dir" "$fetch" "$@" >"$tmp/out" 2>"$tmp/err"
}
snapshot() { # every path under DIR with its size and mtime (ns), and the sums of the files
  (cd "$1" && find . -printf '%p %s %T@\n' | LC_ALL=C sort && find . -type f -exec sha256sum {} + | LC_ALL=C sort -k2)
}

# 1. First run.
start=$(date +%s)
run "$data" pbcseq || { cat "$tmp/err" >&2; fail "first run failed"; }
[ -f "$data/pbcseq/.complete" ] || fail "no .complete marker after the first run"
for f in pbcseq.csv pbc.csv PROVENANCE.txt; do
  [ -s "$data/pbcseq/$f" ] || fail "pbcseq/$f missing or empty"
done
[ "$(head -n 1 "$data/pbcseq/pbcseq.csv" | cut -d, -f1-2)" = "id,futime" ] || fail "pbcseq.csv header"
[ "$(($(wc -l <"$data/pbcseq/pbcseq.csv") - 1))" -eq 1945 ] || fail "pbcseq.csv should hold 1945 visits"
[ "$(($(wc -l <"$data/pbcseq/pbc.csv") - 1))" -eq 418 ] || fail "pbc.csv should hold 418 patients"
grep -q '^licence: LGPL' "$data/pbcseq/PROVENANCE.txt" || fail "PROVENANCE.txt lacks the licence"
grep -q '^package: r-cran-survival ' "$data/pbcseq/PROVENANCE.txt" || fail "PROVENANCE.txt lacks the package"
[ ! -e "$data/pbcseq.tmp" ] || fail "pbcseq.tmp left behind"
echo "first run: $(($(date +%s) - start)) s"

# 2. Second run: nothing changes.
before="$(snapshot "$data")"
start=$(date +%s)
run "$data" pbcseq || { cat "$tmp/err" >&2; fail "second run failed"; }
after="$(snapshot "$data")"
if [ "$before" != "$after" ]; then
  diff <(echo "$before") <(echo "$after") >&2 || true
  fail "the second run changed the data folder"
fi
grep -q 'fetching' "$tmp/err" && fail "the second run fetched again"
grep -q '^== pbcseq' "$tmp/out" || fail "the second run did not print the provenance"
grep -q 'licence:' "$tmp/out" || fail "the second run did not print the licence"
echo "second run: $(($(date +%s) - start)) s, no change"

# 3. --verify, and a flipped byte in a copy.
run "$data" --verify pbcseq || { cat "$tmp/err" >&2; fail "--verify failed on a fresh set"; }
cp -a "$data" "$tmp/copy"
f="$tmp/copy/pbcseq/pbcseq.csv"
byte="$(dd if="$f" bs=1 skip=100 count=1 2>/dev/null | od -An -tu1 | tr -d ' ')"
printf '%b' "\\0$(printf '%03o' $((byte ^ 1)))" | dd of="$f" bs=1 seek=100 count=1 conv=notrunc 2>/dev/null
cmp -s "$f" "$data/pbcseq/pbcseq.csv" && fail "the byte flip did not change the copy"
if run "$tmp/copy" --verify pbcseq; then fail "--verify passed on a corrupted file"; fi
grep -q 'mismatch for pbcseq/pbcseq.csv' "$tmp/err" || { cat "$tmp/err" >&2; fail "--verify did not name the corrupted file"; }
if run "$tmp/copy" pbcseq; then fail "a plain run used a corrupted cached set"; fi
grep -q 'pbcseq/pbcseq.csv' "$tmp/err" || fail "the plain run did not name the corrupted file"
run "$data" --verify pbcseq || fail "the original stopped verifying"

# 4. No .complete marker: not fetched.
rm -rf "$tmp/copy"
cp -a "$data" "$tmp/copy"
rm "$tmp/copy/pbcseq/.complete"
if run "$tmp/copy" --verify pbcseq; then fail "--verify passed on a set without .complete"; fi
grep -q 'not fetched' "$tmp/err" || fail "--verify did not say the set is not fetched"

# 5. MEDCL_DATA_ACCEPT_NEW: sums that differ from the recorded ones (as after a Debian update).
rm -rf "$tmp/copy"
cp -a "$data" "$tmp/copy"
{
  echo "# pbcseq: r-cran-survival 0-test"
  sed -n 's|^[0-9a-f]*  \(pbcseq/.*\)$|0000000000000000000000000000000000000000000000000000000000000000  \1|p' \
    "$root/scripts/data-checksums.sha256"
} >"$tmp/copy/checksums.sha256"
rm -rf "$tmp/copy/pbcseq" # fetched again from the cached .deb
if run "$tmp/copy" pbcseq; then fail "a re-export passed against wrong recorded sums"; fi
[ -e "$tmp/copy/pbcseq" ] && fail "a re-export that failed its checksums left a complete-looking set"
grep -q 'MEDCL_DATA_ACCEPT_NEW=1' "$tmp/err" || fail "the mismatch message does not mention MEDCL_DATA_ACCEPT_NEW"
MEDCL_DATA_ACCEPT_NEW=1 MEDCL_DATA_DIR="$tmp/copy" "$fetch" pbcseq >/dev/null 2>"$tmp/err" ||
  { cat "$tmp/err" >&2; fail "MEDCL_DATA_ACCEPT_NEW=1 did not accept the new files"; }
grep -q "$(sha256sum "$data/pbcseq/pbcseq.csv" | cut -d' ' -f1)  pbcseq/pbcseq.csv" "$tmp/copy/checksums.sha256" ||
  fail "MEDCL_DATA_ACCEPT_NEW=1 did not record the new sums"
run "$tmp/copy" --verify pbcseq || fail "--verify failed against the accepted sums"

echo "PASS: fetch-data (pbcseq): export, idempotence, --verify, interrupted set, MEDCL_DATA_ACCEPT_NEW"
