#!/usr/bin/env bash
# The quickstart on 1 and on 2 local processes (RANK, WORLD_SIZE, MASTER_ADDR/PORT set here, as
# torchrun or ./scripts/demo --nproc 2 would): the data-parallel run must report the final loss
# and the sum of the parameters' magnitudes of the one-process run, up to float32 rounding
# (relative 1e-3 after 60 AdamW steps), and pass its own check.
#
#   test_quickstart_nproc.sh QUICKSTART_EXECUTABLE
set -euo pipefail
exe="$1"
export OMP_NUM_THREADS=1
one="$("$exe" --steps 60 --smoke)"
port="$(( 20000 + RANDOM % 20000 ))"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
for rank in 0 1; do
  RANK=$rank LOCAL_RANK=$rank WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    timeout 120 "$exe" --steps 60 --smoke > "$dir/rank$rank.txt" 2>&1 &
  eval "pid$rank=\$!"
done
status=0
wait "$pid0" || status=$?
wait "$pid1" || status=$?
two="$(cat "$dir/rank0.txt")"
if [ "$status" -ne 0 ]; then
  echo "the 2-process run failed (exit $status):"; cat "$dir/rank0.txt" "$dir/rank1.txt"; exit 1
fi
echo "---- one process"; echo "$one" | tail -n 9
echo "---- two processes"; echo "$two" | tail -n 9
# c10d's own warnings (lines starting "[W", e.g. Gloo falling back to the loopback address) aside.
if grep -v -e '^\[W' -e '^[[:space:]]*$' "$dir/rank1.txt" | grep -q .; then
  echo "rank 1 printed something (the examples print from rank 0 only):"; cat "$dir/rank1.txt"; exit 1
fi
echo "$two" | grep -q "data-parallel: gloo rank 0 of 2" || { echo "not data-parallel"; exit 1; }
echo "$two" | grep -q "quickstart ok" || { echo "the 2-process run did not pass"; exit 1; }
final() { echo "$1" | sed -n 's/^final NT-Xent \([0-9.]*\), sum of |parameters| \([0-9.]*\)$/\1 \2/p'; }
read -r l1 p1 <<< "$(final "$one")"
read -r l2 p2 <<< "$(final "$two")"
[ -n "${l1:-}" ] && [ -n "${l2:-}" ] || { echo "no 'final NT-Xent' line"; exit 1; }
awk -v a="$l1" -v b="$l2" -v c="$p1" -v d="$p2" 'BEGIN {
  el = (a - b) / a; if (el < 0) el = -el
  ep = (c - d) / c; if (ep < 0) ep = -ep
  printf "relative difference: final loss %.2e, parameters %.2e\n", el, ep
  exit (el < 1e-3 && ep < 1e-3) ? 0 : 1
}'
