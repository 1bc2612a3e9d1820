#!/usr/bin/env bash
# One prepared GPU session (see docs/speed.md, docs/results.md): install the two wheels the
# GPU image lacks, run a list of evaluations, then the speed benchmark. Everything goes
# under $OUT (the evaluations and their logs in one tarball, evals.tar.gz); each step has its
# own timeout, so a slow step cannot eat the others' time.
#
# Usage on the device machine (benchmarks built beforehand into the git-ignored .devdata/):
#   JOBS='mini_cpu|.devdata/mini|200|--config=configs/x4.py:cpu --methods=kernelfusion,bicubic
#   prof|speed|120|--phase1=false --phase2_sizes=2048x1344:bfloat16 --profile
#   other|...' SPEED_ARGS='--phase1=false --batch_cases=12' bash tools/device/gpu_check.sh
# JOBS: one run per line, "name|bench folder|timeout s|arguments[|env]": tools/evaluate.py on
#   that folder, or tools/bench_speed.py where the folder is "speed";
#   env: optional VAR=value words set for that job only (e.g. XLA_FLAGS=--xla_gpu_autotune_level=0);
#   a name starting with "+" runs in the background, beside the jobs after it (for runs whose
#   time is not measured); the script waits for it before it ends.
# SPEED_ARGS: arguments of a last tools/bench_speed.py run ("skip" or unset: none);
# SPEED_TIMEOUT: its limit; SPEED_ENV: VAR=value words for it alone.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:. || exit 1
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $OUT/gpu.txt
python3 -c "import jax; print(jax.__version__, jax.devices())" >> $OUT/gpu.txt
pack() {
  # At most 8 files come back: one tarball of every job so far (reports, per-case metrics,
  # kernels, speed tables and profiler traces; no images but the kernel grid). Written to a
  # temporary name and renamed, since a background job may pack at the same time.
  local tmp=$OUT/evals.tar.gz.$BASHPID
  (cd /tmp && find ev_* \( -name 'results.*' -o -name kernels.png -o -name metrics.json \
    -o -name kernel.npy -o -name error.json -o -name '*.log' -o -name 'speed.*' \
    -o -name '*.trace.json.gz' \) -print0 | tar -czf "$tmp" --null -T -) \
    && mv -f "$tmp" $OUT/evals.tar.gz
}
job() {  # name bench limit args env
  local name=$1 bench=$2 limit=$3 args=$4 env=$5 tool=tools/evaluate.py opt=--bench="$2"
  [ "$bench" = speed ] && tool=tools/bench_speed.py opt=
  echo "== $name ($bench, ${limit}s, started at $(date +%T)): $args $env"
  # shellcheck disable=SC2086
  env $env timeout "$limit" python3 $tool $opt --out=/tmp/ev_$name $args > /tmp/ev_$name.log 2>&1
  echo "== $name: exit $? at $(date +%T)"
  grep -E "psnr_y|rror|compile_s|inner_steps_per_s" /tmp/ev_$name.log | grep -v -i orbax | tail -20
  pack
}
while IFS='|' read -r name bench limit args env; do
  [ -z "$name" ] && continue
  if [ "${name#+}" != "$name" ]; then
    job "${name#+}" "$bench" "$limit" "$args" "${env:-}" &
  else
    job "$name" "$bench" "$limit" "$args" "${env:-}"
  fi
done <<< "${JOBS:-}"
wait
pack
if [ -n "${SPEED_ARGS:-}" ] && [ "${SPEED_ARGS}" != skip ]; then
  echo "== bench_speed ${SPEED_ARGS:-}"
  # shellcheck disable=SC2086
  env ${SPEED_ENV:-} timeout ${SPEED_TIMEOUT:-300} \
    python3 tools/bench_speed.py --out=$OUT/speed ${SPEED_ARGS:-} 2>&1 \
    | grep --line-buffered -v -i orbax | tail -40
fi
ls -la $OUT
