#!/usr/bin/env bash
# A short GPU quality sweep: blind144 crop mini, first $LIMIT cases, one evaluate run per
# config given as "name|overrides" lines in $SWEEP. Writes $OUT/<name>.md and .json.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:. || exit 1
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
while IFS='|' read -r name args; do
  [ -z "$name" ] && continue
  timeout ${EACH_TIMEOUT:-120} python3 tools/evaluate.py --bench=.devdata/mini --config=configs/x4.py \
    --out=/tmp/ev_$name --limit=${LIMIT:-4} $args \
    --methods=kernelfusion,bicubic,bp_gt,bp_est 2>&1 | grep -E "psnr_y|rror" | tail -20
  cp /tmp/ev_$name/results.md $OUT/$name.md; cp /tmp/ev_$name/results.json $OUT/$name.json
done <<< "$SWEEP"
