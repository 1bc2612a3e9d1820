#!/usr/bin/env bash
# tools/bp_study.py split over many processes on the lent GPU machine (16 cores), where the
# edge kernel's numpy work, not the GPU, bounds a study (docs/results.md, "An ensemble of
# edge kernels"). Installs the two wheels the GPU image lacks, runs SHARDS shards of the
# study, PARALLEL at a time, each stopped after LIMIT seconds (a stopped shard keeps the cases
# it finished), then joins them (bp_study --merge) into $OUT/$NAME.json, with the shards'
# logs in $OUT/$NAME.logs.tar.gz.
#
# Usage on the device machine (the benchmark built beforehand into the git-ignored .devdata/):
#   NAME=edges SHARDS=16 PARALLEL=16 LIMIT=400 bash tools/device/bp_shards.sh \
#       --bench=.devdata/b144dev --study=edges --regs=0.3 --variants='{...}' ...
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:. || exit 1
# One core per shard; one compilation cache for all of them; no GPU memory reserved up front.
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false OPENBLAS_NUM_THREADS=1 \
  OMP_NUM_THREADS=1 KFJAX_COMPILATION_CACHE=/tmp/jax_cache \
  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
: "${NAME:=study}" "${SHARDS:=16}" "${PARALLEL:=16}" "${LIMIT:=400}"
dir=/tmp/shards_$NAME
mkdir -p "$dir"
echo "== $NAME: $SHARDS shards, $PARALLEL at a time, ${LIMIT}s each, from $(date +%T)"
for i in $(seq 0 $((SHARDS - 1))); do
  while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n; done
  timeout "$LIMIT" python3 tools/bp_study.py "$@" --shard="$i/$SHARDS" \
    --out="$dir/part_$i.json" > "$dir/log_$i.txt" 2>&1 &
done
wait
echo "== $NAME: shards done at $(date +%T); cases per shard:"
grep -c -h "^[^ ]* bicubic" "$dir"/log_*.txt | paste -sd' '
parts=$(ls "$dir"/part_*.json 2>/dev/null | paste -sd,)
[ -n "$parts" ] && python3 tools/bp_study.py --merge="$parts" --out="$OUT/$NAME.json"
tar -czf "$OUT/$NAME.logs.tar.gz" -C "$dir" .
