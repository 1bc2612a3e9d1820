#!/usr/bin/env bash
# One prepared GPU session (see docs/speed.md, docs/results.md): install the two wheels the
# GPU image lacks, run a list of evaluations, then the speed benchmark. Everything goes
# under $OUT (the evaluations and their logs in one tarball, evals.tar.gz); each step has its
# own timeout, so a slow step cannot eat the others' time.
#
# Usage on the device machine (benchmarks built beforehand into the git-ignored .devdata/):
#   JOBS='mini_cpu|.devdata/mini|200|--config=configs/x4.py:cpu --methods=kernelfusion,bicubic
#   other|...' SPEED_ARGS='--phase1=false --batch_cases=12' bash tools/device/gpu_check.sh
# JOBS: one evaluation per line, "name|bench folder|timeout s|evaluate.py arguments[|env]",
#   env: optional VAR=value words set for that job only (e.g. XLA_FLAGS=--xla_gpu_autotune_level=0).
# SPEED_ARGS: arguments of tools/bench_speed.py ("skip" to skip it); SPEED_TIMEOUT: its limit;
# SPEED_ENV: VAR=value words for it alone.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:. || exit 1
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $OUT/gpu.txt
python3 -c "import jax; print(jax.__version__, jax.devices())" >> $OUT/gpu.txt
while IFS='|' read -r name bench limit args env; do
  [ -z "$name" ] && continue
  echo "== $name ($bench, ${limit}s): $args ${env:-}"
  # shellcheck disable=SC2086
  env ${env:-} timeout "$limit" \
    python3 tools/evaluate.py --bench="$bench" --out=/tmp/ev_$name $args 2>&1 \
    | tee /tmp/ev_$name.log | grep --line-buffered -E "psnr_y|rror" | tail -30
  # At most 8 files come back: one tarball of every job so far (reports, per-case metrics and
  # kernels; no images but the kernel grid), rewritten after each job.
  (cd /tmp && find ev_* \( -name 'results.*' -o -name kernels.png -o -name metrics.json \
    -o -name kernel.npy -o -name error.json -o -name '*.log' \) -print0 | tar -czf $OUT/evals.tar.gz --null -T -)
done <<< "${JOBS:-}"
if [ "${SPEED_ARGS:-}" != skip ]; then
  echo "== bench_speed ${SPEED_ARGS:-}"
  # shellcheck disable=SC2086
  env ${SPEED_ENV:-} timeout ${SPEED_TIMEOUT:-300} \
    python3 tools/bench_speed.py --out=$OUT/speed ${SPEED_ARGS:-} 2>&1 \
    | grep --line-buffered -v -i orbax | tail -40
fi
ls -la $OUT
