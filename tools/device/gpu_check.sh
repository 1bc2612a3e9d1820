#!/usr/bin/env bash
# One prepared GPU session (see docs/speed.md, docs/results.md): install the two wheels the
# GPU image lacks, evaluate blind144 crop mini, then run the speed benchmark.
# Usage on the device machine:  bash tools/device/gpu_check.sh  (writes under $OUT)
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:. || exit 1
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $OUT/gpu.txt
python3 -c "import jax; print(jax.__version__, jax.devices())" >> $OUT/gpu.txt
EVAL_ARGS=${EVAL_ARGS:-"--config.pd.steps=5000"}; CONFIG=${CONFIG:-configs/x4.py}; METHODS=${METHODS:-kernelfusion,bicubic,bp_gt,bp_est}
timeout ${EVAL_TIMEOUT:-260} python3 tools/evaluate.py --bench=.devdata/mini \
  --config=$CONFIG --out=$OUT/eval_mini $EVAL_ARGS \
  --methods=$METHODS 2>&1 | grep -v -i orbax | tail -40
cp $OUT/eval_mini/results.md $OUT/eval_results.md 2>/dev/null
cp $OUT/eval_mini/results.json $OUT/eval_results.json 2>/dev/null
cp $OUT/eval_mini/kernels.png $OUT/eval_kernels.png 2>/dev/null
rm -rf $OUT/eval_mini
[ "${SPEED:-1}" = 1 ] && timeout ${SPEED_TIMEOUT:-240} python3 tools/bench_speed.py --out=$OUT/speed 2>&1 | grep -v -i orbax | tail -60
mv $OUT/speed/* $OUT/ 2>/dev/null; rmdir $OUT/speed 2>/dev/null
ls -la $OUT
