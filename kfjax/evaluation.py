"""Benchmark evaluation (SPEC §2–§3): runs methods on a benchmark folder and reports.

:func:`evaluate` runs every selected method on every selected case of a
benchmark built by :mod:`kfjax.benchmark` and writes, under ``out_dir``::

  results.json                  every case record, per-method means, provenance
  results.md                    tables: means per method, PSNR-Y per kernel and per image
  kernels.png                   GT kernels (top row of each band), each estimating method's below
  cases/<id>/<method>/hr.png    the 8-bit HR output
  cases/<id>/<method>/kernel.npy          the estimated kernel (kernel methods)
  cases/<id>/<method>/metrics.json        the case record; its presence marks "done"
  cases/<id>/<method>/error.json          the record of a failed run (retried next time)

Methods (:data:`METHODS`):

* ``kernelfusion``: :func:`kfjax.pipeline.super_resolve` with
  ``config.phase2.mode = 'full'``; ``pd_unet``, ``unet_only``, ``dip``: the same
  with that ablation mode (:data:`KERNEL_METHODS`).
* ``kf_gtk`` (oracle, for diagnosis): KernelFusion *given* the GT kernel
  (non-blind Phase 2; no kernel metrics). It shows how much of the gap to the
  targets is the kernel estimate and how much the image prior.
* ``bicubic``: :func:`kfjax.degradation.bicubic_upscale`.
* ``bp_gt``: :func:`kfjax.degradation.back_projection` with the GT kernel.
* ``sparse_bp`` (a classical reference, not the paper's): the kernel of
  :func:`kfjax.sparse_kernel.estimate_kernel` (L0 gradient prior, alternating,
  coarse to fine; seconds, no training), then the same final step as
  ``kernelfusion``'s output (:func:`kfjax.pipeline.final_projection` from the
  bicubic upscale: the back-projection with regulariser
  ``phase2.final_bp_reg``, mixed with the TV SR when ``phase2.final_tv`` > 0).
  It shows what a *generic* image prior gives on the same case.
* ``spectral_bp`` (a classical reference, not the paper's): the anisotropic
  Gaussian kernel that best explains the LR power spectrum
  (:func:`kfjax.spectral_kernel.fit_gaussian`; ~1 s, no training), then the
  same final step. It shows what the spectrum alone says about the kernel.
* ``lrdip_bp`` (ours, not the paper's): the LR-scale kernel of a deep-image-prior
  deblurring of the LR image itself (:func:`kfjax.pipeline.lrdip_kernel`, with
  the config's ``lrdip`` settings and seed; ~35 s for 64×64 LR px on a 2-core
  CPU), lifted to the HR grid, then the same final step, always. With
  ``kernel_source = 'lrdip'`` it is ``kernelfusion``'s output wherever the
  Gaussian-blur test does not fire and the kernel narrowed (``lrdip.max_spread``).
* ``edge_bp`` (a classical reference, not the paper's): the LR-scale kernel of a
  coarse-to-fine blind deblurring of the LR image itself from predicted sharp
  edges (:func:`kfjax.pipeline.edges_kernel`, after Cho & Lee 2009, with the
  config's ``edges`` settings; ~10 s for a DIV2K-size LR on a 2-core CPU, no
  training), lifted to the HR grid, then the same final step. With
  ``kernel_source = 'edges'`` it is ``kernelfusion``'s output wherever the
  Gaussian-blur test does not fire.
* ``bp_est``: back-projection with the kernel that ``kernelfusion`` estimated for
  the same case (read from ``cases/<id>/kernelfusion/kernel.npy``, so
  kernelfusion must have finished for that case, in this run or an earlier one).

Within a case the methods run in the fixed order :data:`METHODS`, which puts
``kernelfusion`` before ``bp_est``.

Metrics of every method (:func:`kfjax.metrics.image_metrics` against the HR):
``psnr_y``, ``ssim_y`` (5% border, the primary figures), ``psnr_y_s``, ``ssim_y_s``
(``s``-pixel border), computed on the *8-bit output as saved in hr.png*, so they can
be recomputed from the files. ``seconds`` is the wall time of the method (including
JIT compilation; the first case of a method pays for it, unless
``tools/evaluate.py`` finds the programs in the persistent compilation cache,
:func:`kfjax.enable_compilation_cache`). Methods after ``kernelfusion`` on a case
reuse its Phase-1 PD when their Phase-1 config is the same (``pd_unet``,
``kf_gtk``), so their ``seconds`` exclude Phase 1. Kernel methods add
:func:`kfjax.metrics.kernel_metrics` against the GT kernel (``kernel_nerr``,
``kernel_psnr``; the two kernels may have different sizes) and ``phase1_seconds``,
``phase2_seconds`` from the pipeline's info. ``bp_est`` additionally gets
``bp_gap_y`` = its ``psnr_y`` minus ``bp_gt``'s on the same case (SPEC §3, kernel
quality item 2; 0 dB means the estimate is as good as the truth for
back-projection), filled in when the reports are assembled, for cases where both
succeeded.

Resuming: a case/method whose ``metrics.json`` exists is not run again (a
warning is logged if it was computed with a different config); a failed one
(``error.json``) is retried. The reports always cover the selected cases ×
methods and are re-assembled from the files on disk after every case. Non-finite
numbers (an infinite PSNR) are written as JSON ``null`` and left out of the
means.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from kfjax import benchmark
from kfjax import degradation
from kfjax import dip_kernel
from kfjax import edge_kernel
from kfjax import io as kio
from kfjax import metrics as metrics_lib
from kfjax import pipeline
from kfjax import sparse_kernel
from kfjax import spectral_kernel

KERNEL_METHODS = {'kernelfusion': 'full', 'pd_unet': 'pd_unet', 'unet_only': 'unet_only',
                  'dip': 'dip', 'kf_gtk': 'full'}
"""Pipeline methods and the ``config.phase2.mode`` each runs with. ``kf_gtk`` is
the oracle: KernelFusion given the ground-truth kernel (non-blind), an upper
bound on what a perfect kernel estimate would give."""

METHODS = ('bicubic', 'bp_gt', 'kernelfusion', 'bp_est', 'pd_unet', 'unet_only', 'dip',
           'kf_gtk', 'sparse_bp', 'spectral_bp', 'lrdip_bp', 'edge_bp')
"""Every method, in the order they run within a case (and are listed in reports)."""

DEFAULT_METHODS = ('kernelfusion', 'bicubic', 'bp_gt', 'bp_est')
ESTIMATING_METHODS = ('kernelfusion', 'pd_unet', 'unet_only', 'dip', 'sparse_bp', 'spectral_bp',
                      'lrdip_bp', 'edge_bp')
"""The methods that estimate (and save) a kernel."""
CLASSICAL_METHODS = {'sparse_bp': sparse_kernel, 'spectral_bp': spectral_kernel,
                     'lrdip_bp': dip_kernel, 'edge_bp': edge_kernel}
"""The blind references outside the pipeline: method → its kernel estimator's module."""

IMAGE_METRICS = ('psnr_y', 'ssim_y', 'psnr_y_s', 'ssim_y_s')
TABLE_METRICS = IMAGE_METRICS + ('kernel_nerr', 'kernel_psnr', 'bp_gap_y', 'seconds')
_FORMATS = {'psnr_y': '.3f', 'psnr_y_s': '.3f', 'ssim_y': '.4f', 'ssim_y_s': '.4f',
            'kernel_nerr': '.4f', 'kernel_psnr': '.2f', 'bp_gap_y': '+.3f', 'seconds': '.1f'}
_RECORD_KEYS = ('id', 'image', 'kernel', 'method', 'status', 'error', 'info')

GRID_COLUMNS = 12   # kernels.png: cases per band before wrapping


class EvaluationError(ValueError):
  """Bad usage of the evaluation (reported in one line; the CLI exits with 2)."""


# ----------------------------------------------------------------------------
# Selection and validation
# ----------------------------------------------------------------------------


def parse_methods(methods: Sequence[str]) -> list[str]:
  """Validates method names; returns them de-duplicated in the run order :data:`METHODS`."""
  names = [m.strip() for m in methods if m.strip()]
  if not names:
    raise EvaluationError('no methods given')
  unknown = [m for m in names if m not in METHODS]
  if unknown:
    raise EvaluationError(f'unknown method(s) {",".join(unknown)} (choose from {",".join(METHODS)})')
  return [m for m in METHODS if m in names]


def select_cases(manifest: dict, case_ids: Sequence[str] | None = None,
                 limit: int = 0) -> list[dict]:
  """The manifest's cases, restricted to ``case_ids`` (in manifest order), then the first ``limit``."""
  cases = list(manifest['cases'])
  if case_ids:
    known = {c['id'] for c in cases}
    missing = [c for c in case_ids if c not in known]
    if missing:
      raise EvaluationError(f'case(s) not in the benchmark: {",".join(missing)}')
    wanted = set(case_ids)
    cases = [c for c in cases if c['id'] in wanted]
  if limit < 0:
    raise EvaluationError(f'--limit must be >= 0, got {limit}')
  if limit:
    cases = cases[:limit]
  if not cases:
    raise EvaluationError('no cases selected')
  return cases


def load_benchmark(bench_dir) -> dict:
  """Reads a benchmark's manifest (paths joined to ``bench_dir``) or raises EvaluationError."""
  bench_dir = os.fspath(bench_dir)
  if not os.path.isdir(bench_dir):
    raise EvaluationError(f'{bench_dir}: benchmark folder not found')
  try:
    return benchmark.read_manifest(bench_dir)
  except (benchmark.BenchmarkError, OSError, ValueError, KeyError) as e:
    raise EvaluationError(_one_line(e)) from None


def check_config(config: ml_collections.ConfigDict, manifest: dict) -> None:
  """Raises EvaluationError when the config cannot evaluate this benchmark."""
  if int(config.scale) != int(manifest['scale']):
    raise EvaluationError(f'the config is x{config.scale} but the benchmark is '
                          f'x{manifest["scale"]}; use a config with scale={manifest["scale"]}')
  if config.io.center_crop:
    raise EvaluationError('config.io.center_crop must be 0 for evaluation (the HR would not '
                          'match); build a --size=crop benchmark instead')


# ----------------------------------------------------------------------------
# Running one method
# ----------------------------------------------------------------------------


def method_config(config: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
  """A copy of ``config`` with ``phase2.mode`` set for a kernel method (and, but for
  ``kernelfusion``, ``kernel_source = 'inr'``: the ablations are of the diffusion)."""
  cfg = config.copy_and_resolve_references()
  cfg.phase2.mode = KERNEL_METHODS[method]
  if method != 'kernelfusion':       # the ablations and the oracle are of the diffusion
    cfg.kernel_source = 'inr'
  return cfg


def config_digest(config: ml_collections.ConfigDict, method: str) -> str:
  """SHA-256 of what a method's result depends on: the whole config (with the
  method's ``phase2.mode``) for kernel methods, kernelfusion's for ``bp_est``
  (it uses kernelfusion's kernel), the estimator's settings for the classical references,
  only the scale for the others."""
  if method in KERNEL_METHODS or method == 'bp_est':
    text = pipeline.config_to_json(
        method_config(config, 'kernelfusion' if method == 'bp_est' else method))
  elif method in CLASSICAL_METHODS:
    p2 = config.phase2
    text = json.dumps({'scale': int(config.scale), 'kernel_size': int(config.kernel.size),
                       'final_bp_reg': float(p2.final_bp_reg), 'final_tv': float(p2.final_tv),
                       'final_tv_mix': float(p2.final_tv_mix),
                       'estimator': CLASSICAL_METHODS[method].DEFAULTS}, sort_keys=True)
    if method == 'lrdip_bp':           # its settings come from the config
      text += json.dumps({'lrdip': config.lrdip.to_dict(), 'seed': int(config.seed)},
                         sort_keys=True)
    if method == 'edge_bp':
      text += json.dumps({'edges': config.edges.to_dict()}, sort_keys=True)
  else:
    text = json.dumps({'scale': int(config.scale)})
  return hashlib.sha256(text.encode()).hexdigest()


def run_method(method: str, lr01: np.ndarray, config: ml_collections.ConfigDict, *,
               gt_kernel: np.ndarray | None = None, est_kernel: np.ndarray | None = None,
               ckpt_dir: str | None = None, log: Callable = logging.info):
  """Runs one method on one LR image.

  Returns:
    ``(hr01, kernel, extra)``: the HR image (float, unclipped), the estimated
    kernel (kernel methods, else None) and a dict of extra numeric metrics.
  """
  scale = int(config.scale)
  if method in KERNEL_METHODS:
    cfg = method_config(config, method)
    h, w = lr01.shape[:2]
    if h * w * scale * scale > cfg.io.max_hr_pixels:
      raise ValueError(f'HR output {h * scale}x{w * scale} exceeds config.io.max_hr_pixels '
                       f'({cfg.io.max_hr_pixels})')
    known = gt_kernel if method == 'kf_gtk' else None
    if method == 'kf_gtk' and known is None:
      raise ValueError('kf_gtk needs the ground-truth kernel')
    hr, kernel, info = pipeline.super_resolve(lr01, cfg, kernel=known, ckpt_dir=ckpt_dir,
                                              reuse_phase1=True, log=log)
    extra = {'phase1_seconds': float(info.get('phase1', {}).get('seconds', 0.0)),
             'phase2_seconds': float(info.get('phase2', {}).get('seconds', 0.0))}
    kernel = None if known is not None else np.asarray(kernel, np.float32)
    return np.asarray(hr, np.float32), kernel, extra
  lr = jnp.asarray(lr01, jnp.float32)
  if method == 'bicubic':
    hr = degradation.bicubic_upscale(lr, scale)
  elif method == 'bp_gt':
    hr = degradation.back_projection(lr, gt_kernel, scale)
  elif method == 'bp_est':
    if est_kernel is None:
      raise ValueError('no kernelfusion kernel for this case (run kernelfusion on it first)')
    hr = degradation.back_projection(lr, est_kernel, scale)
  elif method in CLASSICAL_METHODS:
    if method == 'edge_bp' and config.phase2.final_bp_reg > 0:    # as kernel_source 'edges':
      hr, kernel = pipeline.edges_output(lr01, config)   # its own TV mix, its ensemble
      return hr, kernel, {}
    from_config = {'lrdip_bp': pipeline.lrdip_kernel,
                   'edge_bp': lambda *a: np.mean(pipeline.edges_kernels(*a), axis=0)}
    if method in from_config:                   # their settings come from the config
      kernel = from_config[method](lr01, config)
    else:
      kernel = CLASSICAL_METHODS[method].estimate_kernel(lr01, scale, int(config.kernel.size))
    if config.phase2.final_bp_reg > 0:
      return pipeline.final_projection(None, lr01, kernel, config), kernel, {}
    hr = degradation.back_projection(lr, kernel, scale, reg=0.0)
    return np.asarray(hr, np.float32), kernel, {}
  else:
    raise EvaluationError(f'unknown method {method!r}')
  return np.asarray(hr, np.float32), None, {}


# ----------------------------------------------------------------------------
# Files of one case/method
# ----------------------------------------------------------------------------


def method_dir(out_dir, case_id: str, method: str) -> str:
  return os.path.join(os.fspath(out_dir), 'cases', case_id, method)


def _read_json(path):
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _write_json(path, obj):
  kio.atomic_write_text(path, json.dumps(_clean(obj), indent=1, allow_nan=False) + '\n')


def _clean(obj):
  """Non-finite floats → None, numpy scalars → Python, recursively (strict JSON)."""
  if isinstance(obj, dict):
    return {k: _clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean(v) for v in obj]
  if isinstance(obj, (np.floating, float)):
    return float(obj) if math.isfinite(obj) else None
  if isinstance(obj, np.integer):
    return int(obj)
  if isinstance(obj, np.bool_):
    return bool(obj)
  return obj


def load_record(out_dir, case_id: str, method: str) -> dict | None:
  """The finished (metrics.json) or failed (error.json) record, or None if not run."""
  d = method_dir(out_dir, case_id, method)
  for name in ('metrics.json', 'error.json'):
    path = os.path.join(d, name)
    if os.path.isfile(path):
      try:
        return _read_json(path)
      except (OSError, ValueError):
        return None                                  # unreadable: run it again
  return None


def _one_line(e) -> str:
  """The first line of an exception's message, prefixed by its type unless it is a usage error."""
  text = str(e).strip()
  first = text.splitlines()[0] if text else ''
  if isinstance(e, (EvaluationError, benchmark.BenchmarkError, kio.InputError)):
    return first or type(e).__name__
  return f'{type(e).__name__}: {first}' if first else type(e).__name__


def read_case_inputs(case: dict, scale: int):
  """A case's (LR, HR) images in [0, 1] and its GT kernel; checks HR = scale × LR."""
  lr01, _ = kio.read_image(case['lr'])
  hr01, _ = kio.read_image(case['hr'])
  gt_kernel = np.load(case['kernel_path'], allow_pickle=False).astype(np.float32)
  if hr01.shape[:2] != (lr01.shape[0] * scale, lr01.shape[1] * scale):
    raise ValueError(f'HR {hr01.shape[:2]} is not x{scale} the LR {lr01.shape[:2]}')
  return lr01, hr01, gt_kernel


def run_case_method(out_dir, case: dict, method: str, config, inputs, *,
                    checkpoints: bool = False, log: Callable = logging.info) -> dict:
  """Runs one method on one case, writes its files, and returns its record.

  The record is written to ``metrics.json`` (last, after ``hr.png`` and
  ``kernel.npy``) on success, or to ``error.json`` with the one-line error on
  failure; an exception never escapes (except KeyboardInterrupt and the like).
  """
  d = method_dir(out_dir, case['id'], method)
  os.makedirs(d, exist_ok=True)
  record = {'id': case['id'], 'image': case['image'], 'kernel': case['kernel'],
            'method': method}
  info = {'config_sha256': config_digest(config, method)}
  if method in KERNEL_METHODS:
    info['mode'] = KERNEL_METHODS[method]
  ckpt_dir = None
  if checkpoints and method in KERNEL_METHODS:
    ckpt_dir = os.path.join(os.fspath(out_dir), 'checkpoints', case['id'], method)
  t0 = time.time()
  try:
    if isinstance(inputs, Exception):
      raise inputs
    lr01, hr01, gt_kernel = inputs
    est_kernel = saved_kernel(out_dir, case['id'], 'kernelfusion') if method == 'bp_est' else None
    prefix = f'{case["id"]} {method}'
    hr, kernel, extra = run_method(method, lr01, config, gt_kernel=gt_kernel,
                                   est_kernel=est_kernel, ckpt_dir=ckpt_dir,
                                   log=lambda s: log(f'  [{prefix}] {s}'))
    seconds = time.time() - t0
    if not np.all(np.isfinite(hr)):
      raise FloatingPointError('the HR output has NaN/Inf values')
    hr_u8 = benchmark.quantise_u8(np.clip(hr, 0.0, 1.0))
    kio.write_image(os.path.join(d, 'hr.png'), hr_u8)
    values = metrics_lib.image_metrics(hr_u8.astype(np.float64) / 255.0, hr01, config.scale)
    if kernel is not None:
      kio.atomic_save_npy(os.path.join(d, 'kernel.npy'), kernel)
      values.update(metrics_lib.kernel_metrics(kernel, gt_kernel))
      info['kernel_size'] = int(kernel.shape[0])
    values['seconds'] = seconds
    values.update(extra)
    record.update(status='ok', **values, info=info)
    _write_json(os.path.join(d, 'metrics.json'), record)
    if os.path.exists(os.path.join(d, 'error.json')):
      os.remove(os.path.join(d, 'error.json'))
    if ckpt_dir is not None:
      shutil.rmtree(ckpt_dir, ignore_errors=True)
  except Exception as e:  # pylint: disable=broad-except
    record.update(status='failed', error=_one_line(e), seconds=time.time() - t0, info=info)
    _write_json(os.path.join(d, 'error.json'), record)
  return _clean(record)


# ----------------------------------------------------------------------------
# Assembling the reports
# ----------------------------------------------------------------------------


def _metric_keys(records) -> list[str]:
  keys = []
  for r in records:
    for k, v in r.items():
      if k not in _RECORD_KEYS and k not in keys and isinstance(v, (int, float)) \
          and not isinstance(v, bool):
        keys.append(k)
  return keys


def add_bp_gap(records: list[dict]) -> None:
  """Sets ``bp_gap_y`` = psnr_y(bp_est) − psnr_y(bp_gt) on bp_est records, in place."""
  gt = {r['id']: r.get('psnr_y') for r in records
        if r['method'] == 'bp_gt' and r['status'] == 'ok'}
  for r in records:
    if r['method'] == 'bp_est':
      r.pop('bp_gap_y', None)
      if r['status'] == 'ok' and gt.get(r['id']) is not None and r.get('psnr_y') is not None:
        r['bp_gap_y'] = r['psnr_y'] - gt[r['id']]


def summarise(records: list[dict], methods: Sequence[str]) -> dict:
  """Per method: the mean of every numeric metric over its ok records, ``n`` and ``n_failed``."""
  summary = {}
  for m in methods:
    rs = [r for r in records if r['method'] == m]
    ok = [r for r in rs if r['status'] == 'ok']
    s = {}
    for k in _metric_keys(ok):
      vals = [r[k] for r in ok if isinstance(r.get(k), (int, float))]
      if vals:
        s[k] = float(np.mean(vals))
    s['n'] = len(ok)
    s['n_failed'] = len(rs) - len(ok)
    summary[m] = s
  return summary


def hardware() -> dict:
  devices = jax.devices()
  return {'backend': jax.default_backend(), 'device_kind': devices[0].device_kind,
          'device_count': len(devices), 'cpu_count': os.cpu_count()}


def git_commit() -> dict:
  """``{'git_commit': sha or None, 'git_dirty': bool or None}`` of the kfjax checkout."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  def git(*args):
    return subprocess.run(['git', '-C', repo, *args], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()
  try:
    sha = git('rev-parse', 'HEAD')
    dirty = bool(git('status', '--porcelain', '--untracked-files=no'))
  except (OSError, subprocess.SubprocessError):
    return {'git_commit': None, 'git_dirty': None}
  return {'git_commit': sha, 'git_dirty': dirty}


def _fmt(v, key) -> str:
  if v is None:
    return '–'
  return format(v, _FORMATS.get(key, '.3f'))


def _mean_table(rows, cols, value) -> list[str]:
  """Markdown table of ``value(row, col)`` (None → '–')."""
  lines = ['| | ' + ' | '.join(cols) + ' |', '|---|' + '---:|' * len(cols)]
  for r in rows:
    lines.append(f'| {r} | ' + ' | '.join(value(r, c) for c in cols) + ' |')
  return lines


def _psnr_by(records, field, key, method):
  vals = [r['psnr_y'] for r in records if r[field] == key and r['method'] == method
          and r['status'] == 'ok' and r.get('psnr_y') is not None]
  return _fmt(float(np.mean(vals)), 'psnr_y') if vals else '–'


def render_markdown(results: dict) -> str:
  """results.md: provenance, the means table, PSNR-Y per kernel and per image, failures."""
  records, summary = results['cases'], results['summary']
  methods = list(summary)
  bench = results['benchmark']
  lines = [f'# Evaluation of {bench.get("name") or bench["dir"]} '
           f'(x{bench["scale"]}, {bench.get("size")})', '']
  hw = results['hardware']
  commit = results['git_commit'] or 'unknown'
  if results.get('git_dirty'):
    commit += ' (with uncommitted changes)'
  lines += [f'- command: `{results["command"]}`',
            f'- git commit: `{commit}`',
            f'- hardware: {hw["backend"]} / {hw["device_kind"]} × {hw["device_count"]}, '
            f'{hw["cpu_count"]} CPUs',
            f'- config: variant `{results["config"].get("variant")}`, seed '
            f'{results["config"].get("seed")} (full config in results.json)',
            f'- benchmark: `{bench["dir"]}`, {len({r["id"] for r in records})} cases',
            '',
            '## Means per method',
            '',
            'PSNR/SSIM on Y (BT.601) of the 8-bit output; `psnr_y`, `ssim_y` exclude a 5% '
            'border, `*_s` exclude s pixels. `bp_gap_y` = bp_est − bp_gt PSNR-Y. `seconds` '
            'is wall time per case, including JIT compilation (or loading the programs '
            'from the persistent compilation cache).',
            '']
  cols = ['n', 'failed'] + [m for m in TABLE_METRICS]
  lines.append('| method | ' + ' | '.join(cols) + ' |')
  lines.append('|---|' + '---:|' * len(cols))
  for m in methods:
    s = summary[m]
    cells = [str(s['n']), str(s['n_failed'])] + [_fmt(s.get(k), k) for k in TABLE_METRICS]
    lines.append(f'| {m} | ' + ' | '.join(cells) + ' |')
  kernels = list(dict.fromkeys(r['kernel'] for r in records))
  images = list(dict.fromkeys(r['image'] for r in records))
  lines += ['', '## PSNR-Y per kernel (mean over images)', '']
  lines += _mean_table(kernels, methods, lambda k, m: _psnr_by(records, 'kernel', k, m))
  lines += ['', '## PSNR-Y per image (mean over kernels)', '']
  lines += _mean_table(images, methods, lambda i, m: _psnr_by(records, 'image', i, m))
  order = list(dict.fromkeys(r['id'] for r in records))
  lines += ['', '## kernels.png', '',
            f'Column j (bands of {GRID_COLUMNS}, left to right, top to bottom) is case j below: '
            'the GT kernel on top, then one row per method, '
            f'{", ".join(grid_methods(methods))} (an empty cell: no estimate); each '
            'kernel is centred on its centre of mass and scaled to its own maximum.', '']
  lines += [f'{j}. {cid}' for j, cid in enumerate(order, 1)]
  failed = [r for r in records if r['status'] != 'ok']
  if failed:
    lines += ['', '## Failed', '']
    lines += [f'- {r["id"]} / {r["method"]}: {r.get("error", "")}' for r in failed]
  return '\n'.join(lines) + '\n'


def kernel_grid(gt_kernels: Sequence[np.ndarray], *est_rows: Sequence[np.ndarray | None],
                columns: int = GRID_COLUMNS, cell: int = 96, gap: int = 4) -> np.ndarray:
  """A uint8 (H, W) image: GT kernels on top, each row of estimates (or empty cells) below.

  Cases go left to right in bands of ``columns``; each band is
  1 + len(est_rows) rows (GT, then one per estimating method). Every kernel is
  centred on its centre of mass on a common canvas
  (the largest kernel size), divided by its own maximum and enlarged with
  nearest-neighbour by ``max(1, cell // size)``. Cells are black on a grey
  background.
  """
  n = len(gt_kernels)
  rows = [list(gt_kernels)] + [list(r) for r in est_rows]
  all_k = [k for r in rows for k in r if k is not None]
  size = max(max(np.shape(k)) for k in all_k)
  zoom = max(1, cell // size)
  px = size * zoom
  cols = min(columns, n)
  bands = -(-n // cols)
  height = bands * len(rows) * (px + gap) + gap
  width = cols * (px + gap) + gap
  out = np.full((height, width), 128, np.uint8)
  def tile(k):
    if k is None:
      return np.zeros((px, px), np.uint8)
    k = degradation.center_kernel(np.clip(np.asarray(k, np.float64), 0, None), size)
    k = k / k.max() if k.max() > 0 else k
    return np.round(255 * np.kron(k, np.ones((zoom, zoom)))).astype(np.uint8)
  for j in range(n):
    b, c = divmod(j, cols)
    x = gap + c * (px + gap)
    for row, r in enumerate(rows):
      y = gap + (len(rows) * b + row) * (px + gap)
      out[y: y + px, x: x + px] = tile(r[j])
  return out


def write_reports(out_dir, cases: Sequence[dict], methods: Sequence[str], meta: dict) -> dict:
  """Re-assembles results.json, results.md and kernels.png from the files on disk."""
  out_dir = os.fspath(out_dir)
  records = []
  for c in cases:
    for m in methods:
      r = load_record(out_dir, c['id'], m)
      if r is not None:
        records.append(r)
  add_bp_gap(records)
  results = {'cases': records, 'summary': summarise(records, methods), **meta}
  _write_json(os.path.join(out_dir, 'results.json'), results)
  kio.atomic_write_text(os.path.join(out_dir, 'results.md'), render_markdown(_clean(results)))
  gts = [np.load(c['kernel_path'], allow_pickle=False) for c in cases]
  rows = [[saved_kernel(out_dir, c['id'], m) for c in cases] for m in grid_methods(methods)]
  kio.write_image(os.path.join(out_dir, 'kernels.png'), kernel_grid(gts, *rows))
  return results


def grid_methods(methods: Sequence[str]) -> list[str]:
  """The selected methods that estimate a kernel, in :data:`METHODS` order: one
  kernels.png row each (``kernelfusion``'s, possibly empty, if there are none)."""
  estimating = [m for m in METHODS if m in methods and m in ESTIMATING_METHODS]
  return estimating or ['kernelfusion']


def saved_kernel(out_dir, case_id: str, method: str) -> np.ndarray | None:
  """The kernel a finished, successful run of ``method`` saved for the case, else None."""
  rec = load_record(out_dir, case_id, method)
  kpath = os.path.join(method_dir(out_dir, case_id, method), 'kernel.npy')
  if rec is None or rec.get('status') != 'ok' or not os.path.isfile(kpath):
    return None
  return np.load(kpath, allow_pickle=False)


# ----------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------


def evaluate(bench_dir, config: ml_collections.ConfigDict, out_dir, *,
             methods: Sequence[str] = DEFAULT_METHODS, case_ids: Sequence[str] | None = None,
             limit: int = 0, checkpoints: bool = False, command: str | None = None,
             log: Callable = logging.info) -> dict:
  """Evaluates ``methods`` on a benchmark folder; returns the results dict (= results.json).

  Args:
    bench_dir: a folder written by :func:`kfjax.benchmark.build`.
    config: the KernelFusion config (its ``phase2.mode`` is set per method).
    out_dir: results folder (created; a re-run resumes in it).
    methods: names from :data:`METHODS` (run in that order within a case).
    case_ids: only these case ids (default all), kept in manifest order.
    limit: if > 0, only the first ``limit`` selected cases.
    checkpoints: checkpoint kernel methods under ``out_dir/checkpoints`` (removed
      after each success) so an interrupted case resumes mid-way.
    command: the command line, recorded in the reports.
    log: progress logger.

  Raises:
    EvaluationError: bad usage (no benchmark, unknown method or case, scale
      mismatch). Failures of single cases are recorded, not raised.
  """
  methods = parse_methods(methods)
  manifest = load_benchmark(bench_dir)
  check_config(config, manifest)
  cases = select_cases(manifest, case_ids, limit)
  out_dir = os.fspath(out_dir)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise EvaluationError(f'{out_dir}: exists and is not a folder')
  os.makedirs(out_dir, exist_ok=True)
  meta = {'command': command, **git_commit(), 'hardware': hardware(),
          'config': json.loads(pipeline.config_to_json(config)),
          'benchmark': {'dir': os.path.abspath(os.fspath(bench_dir)),
                        'name': manifest.get('name'), 'scale': manifest['scale'],
                        'size': manifest.get('size')},
          'methods': methods}
  digests = {m: config_digest(config, m) for m in methods}
  n = len(cases)
  results = None
  for i, case in enumerate(cases, 1):
    inputs = None
    for m in methods:
      done = load_record(out_dir, case['id'], m)
      if done is not None and done.get('status') == 'ok':
        if done.get('info', {}).get('config_sha256') != digests[m]:
          logging.warning('[%d/%d] %s %s: the result on disk was computed with a different '
                          'config; delete %s to recompute it', i, n, case['id'], m,
                          method_dir(out_dir, case['id'], m))
        log(f'[{i}/{n}] {case["id"]} {m}: done before (psnr_y {_fmt(done.get("psnr_y"), "psnr_y")})')
        continue
      if inputs is None:
        try:
          inputs = read_case_inputs(case, int(config.scale))
        except Exception as e:  # pylint: disable=broad-except
          inputs = e
      r = run_case_method(out_dir, case, m, config, inputs, checkpoints=checkpoints, log=log)
      if r['status'] == 'ok':
        log(f'[{i}/{n}] {case["id"]} {m}: psnr_y {_fmt(r.get("psnr_y"), "psnr_y")} dB, '
            f'ssim_y {_fmt(r.get("ssim_y"), "ssim_y")}, {r["seconds"]:.1f} s')
      else:
        logging.warning('[%d/%d] %s %s: FAILED: %s', i, n, case['id'], m, r['error'])
    results = write_reports(out_dir, cases, methods, meta)
  return results
