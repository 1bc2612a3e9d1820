r"""Evaluates KernelFusion and the baselines on a benchmark folder (SPEC §2–§3).

  python tools/evaluate.py --bench=bench/b144_mini --config=configs/x4.py:cpu \
      --out=results/b144_mini_cpu --methods=kernelfusion,bicubic,bp_gt,bp_est
  python tools/evaluate.py --bench=bench/b144_mini --config=configs/x4.py:tiny \
      --config.phase2.t_start=100 --out=/tmp/ev --cases=0801__levin_k1 --limit=1

Methods: kernelfusion, bicubic, bp_gt (back-projection with the GT kernel),
bp_est (back-projection with kernelfusion's kernel; needs kernelfusion on the
same case), the ablations pd_unet, unet_only, dip (the config's
phase2.mode), the oracle kf_gtk, two classical references, sparse_bp (an L0
sparse-gradient kernel estimate) and spectral_bp (the Gaussian kernel that best
explains the LR power spectrum), seconds per case, and lrdip_bp (the LR-scale kernel
of a deep-image-prior deblurring of the LR, kfjax.dip_kernel; ~35 s per 64×64 LR
case on a CPU), and edge_bp (the LR-scale kernel of a coarse-to-fine deblurring of the
LR from predicted edges, kfjax.edge_kernel; ~10 s per DIV2K-size LR on a CPU), each
then kernelfusion's final step. Within a case they run in the order bicubic, bp_gt,
kernelfusion, bp_est, pd_unet, unet_only, dip, kf_gtk, sparse_bp, spectral_bp,
lrdip_bp, edge_bp.

Writes OUT/results.json, OUT/results.md, OUT/kernels.png and
OUT/cases/<id>/<method>/{hr.png, kernel.npy, metrics.json}; the reports are
rewritten after every case. Re-running with the same --out skips the finished
case/methods and retries failed ones. See kfjax/evaluation.py.

Exit status: 0 when every case/method succeeded, 1 when some failed (they are
listed in results.md), 2 for bad usage (one-line error).
"""

import os
import shlex
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

import kfjax  # pylint: disable=g-import-not-at-top,wrong-import-position
from kfjax import evaluation  # pylint: disable=g-import-not-at-top,wrong-import-position

_BENCH = flags.DEFINE_string('bench', None, 'Benchmark folder (from tools/make_benchmark.py).')
_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(_REPO, 'configs', 'x4.py'),
    'Config file[:variant]; fields can be overridden with --config.<field>=value.')
_OUT = flags.DEFINE_string('out', None, 'Results folder (a re-run resumes in it).')
_METHODS = flags.DEFINE_list('methods', list(evaluation.DEFAULT_METHODS),
                             f'Methods to run: {",".join(evaluation.METHODS)}.')
_CASES = flags.DEFINE_list('cases', [], 'Only these case ids (default: all).')
_LIMIT = flags.DEFINE_integer('limit', 0, 'Only the first N selected cases (0: all).')
_CHECKPOINTS = flags.DEFINE_bool('checkpoints', False,
                                 'Checkpoint the kernel methods under OUT/checkpoints so an '
                                 'interrupted case resumes (removed after each success).')


def _fail(msg):
  print(f'evaluate: error: {msg}', file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  if not _BENCH.value:
    _fail('--bench is required')
  if not _OUT.value:
    _fail('--out is required')
  logging.set_verbosity(logging.INFO)
  logging.set_stderrthreshold(logging.INFO)
  kfjax.enable_compilation_cache()   # a re-run (or the next benchmark) skips XLA compilation
  try:
    results = evaluation.evaluate(
        _BENCH.value, _CONFIG.value, _OUT.value, methods=_METHODS.value,
        case_ids=_CASES.value, limit=_LIMIT.value, checkpoints=_CHECKPOINTS.value,
        command=' '.join(shlex.quote(a) for a in sys.argv))
  except evaluation.EvaluationError as e:
    _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
  failed = sum(s['n_failed'] for s in results['summary'].values())
  for method, s in results['summary'].items():
    psnr = s.get('psnr_y')
    psnr = '–' if psnr is None else f'{psnr:.3f}'
    extra = f', {s["n_failed"]} failed' if s['n_failed'] else ''
    print(f'{method:>12}: psnr_y {psnr} dB over {s["n"]} case(s){extra}', flush=True)
  print(f'wrote {os.path.join(_OUT.value, "results.md")}', flush=True)
  if failed:
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
