#!/usr/bin/env bash
# Two source trees on the same card through the users' own launchers: defaults_bench.sh's runs, each in BEFORE
# and then AFTER (default: git's HEAD~1 exported into ./before, and this tree), the order alternating with each
# repeat. One JSON line per run in $OUT/results.jsonl, named <run>_<family>_before<i> / _after<i>.
#   RUNS (default "sft eval1720_eager"): defaults_bench.sh's runs; REPEATS (1); BATCH_SIZE (32: the same batch in
#   both trees, whatever either would choose); FAMILY, WORK, OUT, STEPS, SMOKE: as for defaults_bench.sh
#   e.g. REPEATS=3 RUNS=eval1720_eager bash benchmarks/before_after.sh
set -uo pipefail
BEFORE=${BEFORE:-$PWD/before}; AFTER=${AFTER:-$PWD}; REPEATS=${REPEATS:-1}
if [ ! -d "$BEFORE" ]; then
  mkdir -p "$BEFORE" && git archive HEAD~1 | tar -x -C "$BEFORE" || { echo "cannot export HEAD~1 into $BEFORE" >&2; exit 1; }
fi
export BATCH_SIZE=${BATCH_SIZE:-$([ "${SMOKE:-0}" = 1 ] && echo 8 || echo 32)}
[ "${SMOKE:-0}" = 1 ] || export MIN_PIXELS=${MIN_PIXELS:-$((256 * 28 * 28))} MAX_PIXELS=${MAX_PIXELS:-$((1280 * 28 * 28))}
rc=0
for ((i = 1; i <= REPEATS; i++)); do
  if (( i % 2 )); then sides=(before after); else sides=(after before); fi
  for r in ${RUNS:-sft eval1720_eager}; do
    for side in "${sides[@]}"; do
      tree=$([ "$side" = before ] && echo "$BEFORE" || echo "$AFTER")
      TREE=$tree TAG=$side$i RUNS=$r bash "$(dirname "$0")/defaults_bench.sh" || rc=1
    done
  done
done
exit $rc
