r"""Small controlled tuning runs: config variants on centre crops of benchmark cases.

Each variant is a set of config overrides applied to a base config; every
variant runs on the same cases with the same seed, and one JSON line per
(case, variant) is appended to --out (psnr_y, kernel_nerr, bp_est psnr_y,
final LR loss, seconds). This is the tool behind the tuning log of
docs/results.md.

  python tools/tune.py --bench=bench/mini --cases=im_2__levin09_k1,im_30__l_shape \
      --lr_crop=32 --out=bench/tune.jsonl \
      --variants='{"base": {}, "t50": {"phase2.t_start": 50, "phase2.stride": 5}}'

Special keys in a variant: "_gt_kernel": true runs Phase 2 with the GT kernel
(non-blind oracle); "_kernel_file": "path/{case}.npy" with a given kernel.

With --trace, each line also holds ``trace``: per visited Phase-2 timestep, the
kernel_nerr of the INR's kernel after it and, when the variant's output is a
function of the kernel alone (``phase2.final_bp_from`` 'bicubic'), the psnr_y
of the output the variant would return had Phase 2 stopped there (the kernel
mixture and final step of :func:`kfjax.pipeline.blind_kernel` and
:func:`kfjax.pipeline.final_projection` applied to that kernel):

  python tools/tune.py --bench=bench/mini --cases=im_2__levin09_k1 --trace \
      --out=bench/trace.jsonl
"""

import json
import os
import sys
import time

from absl import app, flags
import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from configs import x4  # pylint: disable=wrong-import-position
import kfjax  # pylint: disable=wrong-import-position
# pylint: disable-next=wrong-import-position
from kfjax import degradation, evaluation, metrics, pipeline, sparse_kernel

_BENCH = flags.DEFINE_string('bench', None, 'Benchmark folder (tools/make_benchmark.py).')
_CASES = flags.DEFINE_list('cases', [], 'Case ids (default: all).')
_LR_CROP = flags.DEFINE_integer('lr_crop', 0, 'Centre-crop the LR to this size (0: whole).')
_BASE = flags.DEFINE_string('base', 'cpu', 'Variant of configs/x4.py the overrides apply to.')
_VARIANTS = flags.DEFINE_string('variants', '{"base": {}}',
                                'JSON {name: {"section.field": value, ...}}.')
_OUT = flags.DEFINE_string('out', None, 'JSON-lines file the results are appended to.')
_BP_REGS = flags.DEFINE_list('bp_regs', ['0.001'], 'Regularisers of the back-projection with '
                             'the estimated kernel (bp_est, from bicubic) to report.')
_TRACE = flags.DEFINE_bool('trace', False, 'Also record the kernel error and the output psnr_y '
                           'after each Phase-2 timestep (module docstring).')


def centre_crop(lr01, hr01, size: int, scale: int):
  """The centre size×size LR crop and the matching HR crop."""
  if not size:
    return lr01, hr01
  y, x = (lr01.shape[0] - size) // 2, (lr01.shape[1] - size) // 2
  return (lr01[y:y + size, x:x + size],
          hr01[scale * y: scale * (y + size), scale * x: scale * (x + size)])


def kernel_trace(trace, lr01, hr01, gt_kernel, config) -> list[dict]:
  """Per timestep of ``trace`` (Phase 2's kernels): the INR kernel's kernel_nerr, and the
  psnr_y of the output built from it (only when the output depends on the kernel alone:
  ``final_bp_from`` 'bicubic')."""
  c = config.phase2
  by_kernel = c.final_bp_reg > 0 and c.final_bp_from == 'bicubic'
  win01, _ = pipeline.kernel_window(lr01, config)
  l0 = (sparse_kernel.estimate_kernel(win01, config.scale, config.kernel.size)
        if by_kernel and c.kernel_blend > 0 else None)      # the LR's alone: once, not per step
  rows = []
  for k in np.asarray(trace):
    row = {'kernel_nerr': metrics.kernel_metrics(k, gt_kernel)['kernel_nerr']}
    if by_kernel:
      hr = pipeline.final_projection(None, lr01, pipeline.blind_kernel(k, win01, config, l0=l0),
                                     config)
      row['psnr_y'] = metrics.image_metrics(hr, hr01, config.scale)['psnr_y']
    rows.append(row)
  return rows


def run_variant(lr01, hr01, gt_kernel, case_id, base, overrides):
  """One tuning run; returns its metrics."""
  overrides = dict(overrides)
  config = x4.get_config(base)
  gt = overrides.pop('_gt_kernel', False)
  kfile = overrides.pop('_kernel_file', None)
  config.update_from_flattened_dict(overrides)     # "section.field" or top-level ("seed")
  known = (np.load(kfile.format(case=case_id)) if kfile else gt_kernel if gt else None)
  t0 = time.time()
  hr, kernel, info = pipeline.super_resolve(lr01, config, kernel=known, log=lambda m: None)
  seconds = time.time() - t0
  bp_est = {reg: metrics.image_metrics(np.asarray(degradation.back_projection(
      lr01, kernel, config.scale, reg=float(reg))), hr01, config.scale)['psnr_y']
            for reg in _BP_REGS.value}
  out = {'psnr_y': metrics.image_metrics(hr, hr01, config.scale)['psnr_y'],
         'kernel_nerr': metrics.kernel_metrics(kernel, gt_kernel)['kernel_nerr'],
         'bp_est_psnr_y': bp_est,
         'loss_last': info['phase2'].get('loss_last', [float('nan')])[-1],   # nan: skipped
         'seconds': seconds}
  if _TRACE.value and 'kernel_trace' in info['phase2'] and known is None:
    out['trace'] = kernel_trace(info['phase2']['kernel_trace'], lr01, hr01, gt_kernel, config)
  return out


def main(argv):
  del argv
  if not _BENCH.value or not _OUT.value:
    sys.exit('tune: error: --bench and --out are required')
  kfjax.enable_compilation_cache()
  variants = json.loads(_VARIANTS.value)
  manifest = evaluation.load_benchmark(_BENCH.value)
  cases = evaluation.select_cases(manifest, _CASES.value)
  for case in cases:
    lr01, hr01, gt_kernel = evaluation.read_case_inputs(case, manifest['scale'])
    lr01, hr01 = centre_crop(lr01, hr01, _LR_CROP.value, manifest['scale'])
    base = {'bicubic': metrics.image_metrics(
                np.asarray(degradation.bicubic_upscale(lr01, manifest['scale'])), hr01,
                manifest['scale'])['psnr_y'],
            'bp_gt': metrics.image_metrics(
                np.asarray(degradation.back_projection(lr01, gt_kernel, manifest['scale'])),
                hr01, manifest['scale'])['psnr_y']}
    print(f'{case["id"]}: bicubic {base["bicubic"]:.2f}, bp_gt {base["bp_gt"]:.2f}', flush=True)
    for name, overrides in variants.items():
      r = run_variant(lr01, hr01, gt_kernel, case['id'], _BASE.value, overrides)
      bp = ', '.join(f'bp_est(λ {k}) {v:.2f}' for k, v in r['bp_est_psnr_y'].items())
      print(f'  {name}: psnr_y {r["psnr_y"]:.2f}, kernel_nerr {r["kernel_nerr"]:.3f}, {bp}, '
            f'{r["seconds"]:.0f} s', flush=True)
      if 'trace' in r:
        print('    per timestep (kernel_nerr/psnr_y): ' + ' '.join(
            '/'.join(f'{v:.3f}' for v in row.values()) for row in r['trace']), flush=True)
      line = {'case': case['id'], 'variant': name, 'overrides': overrides,
              'base': _BASE.value, 'lr_crop': _LR_CROP.value, **base, **r}
      with open(_OUT.value, 'a', encoding='utf-8') as f:
        f.write(json.dumps(line) + '\n')


if __name__ == '__main__':
  app.run(main)
