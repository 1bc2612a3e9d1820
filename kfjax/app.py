"""What ``main.py`` does: inputs in, one result folder per image out.

For each LR image, ``OUT/<stem>/`` receives ``hr.png``, ``kernel.npy``,
``kernel.mat`` (key ``Kernel``), ``kernel.png``, ``config.json``,
``metrics.json``, ``report.png``, ``kernel_trace.npy``, ``hr_diffusion.png``
(x̂0 before the final back-projection, when ``phase2.final_bp_reg`` > 0; with
``io.kernel_crop`` it covers the centre window that set the kernel),
``kernel_inr.npy`` (the INR's own kernel, when ``phase2.kernel_blend`` > 0) and
``checkpoints/`` (none of the last four where ``phase2.gaussian_test`` or
``kernel_source`` 'edges' or 'lrdip' skipped the phases). ``metrics.json`` is
written last, so its presence marks a finished image; such an image is skipped
unless ``overwrite`` is set. A folder run also writes ``OUT/summary.csv``.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import os
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from kfjax import degradation, io, kernels, metrics, pipeline, phase2, visualize

SUMMARY_FIELDS = ('image', 'status', 'error', 'hr_shape', 'seconds', 'phase1_seconds',
                  'phase2_seconds', 'final_loss', 'psnr_y', 'ssim_y', 'psnr_y_bicubic',
                  'psnr_y_bp_gt', 'kernel_nerr')


class ConfigError(ValueError):
  """An invalid config value (a user error: printed as one line, exit status 2)."""


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises :class:`ConfigError` for values the method cannot run with."""
  def need(ok, msg):
    if not ok:
      raise ConfigError(f'invalid config: {msg}')
  need(isinstance(config.scale, int) and config.scale >= 2,
       f'scale must be an integer ≥ 2, got {config.scale!r}')
  need(config.kernel.size >= config.scale,
       f'kernel.size ({config.kernel.size}) must be ≥ scale ({config.scale})')
  need(config.phase2.mode in phase2.MODES,
       f'phase2.mode {config.phase2.mode!r} is not one of {", ".join(phase2.MODES)}')
  need(config.phase2.renoise in phase2.RENOISE_RULES,
       f'phase2.renoise {config.phase2.renoise!r} is not one of {", ".join(phase2.RENOISE_RULES)}')
  for name in ('pd.driver', 'phase2.driver'):
    sec, field = name.split('.')
    need(config[sec][field] in ('auto', 'scan', 'loop'),
         f'{name} {config[sec][field]!r} is not one of auto, scan, loop')
  need(config.compute_dtype in ('float32', 'bfloat16'),
       f'compute_dtype {config.compute_dtype!r} is not float32 or bfloat16')
  need(1 <= config.phase2.t_start <= config.diffusion.num_steps,
       f'phase2.t_start must be in [1, {config.diffusion.num_steps}]')
  need(config.phase2.final_bp_reg >= 0,
       f'phase2.final_bp_reg must be ≥ 0, got {config.phase2.final_bp_reg}')
  need(config.phase2.final_bp_from in ('x0', 'bicubic'),
       f"phase2.final_bp_from {config.phase2.final_bp_from!r} is not x0 or bicubic")
  need(config.io.size_bucket >= 0, f'io.size_bucket must be ≥ 0, got {config.io.size_bucket}')
  need(0 <= config.phase2.kernel_blend <= 1,
       f'phase2.kernel_blend must be in [0, 1], got {config.phase2.kernel_blend}')
  need(config.phase2.final_tv >= 0, f'phase2.final_tv must be ≥ 0, got {config.phase2.final_tv}')
  need(0 <= config.phase2.final_tv_mix <= 1,
       f'phase2.final_tv_mix must be in [0, 1], got {config.phase2.final_tv_mix}')
  need(config.phase2.final_tv == 0 or config.phase2.final_bp_reg > 0,
       'phase2.final_tv > 0 needs phase2.final_bp_reg > 0 (it mixes into the back-projection)')
  need(config.phase2.gaussian_test <= 0,
       f'phase2.gaussian_test must be ≤ 0 (0 = off), got {config.phase2.gaussian_test}')
  need(config.phase2.gaussian_tv > 0,
       f'phase2.gaussian_tv must be > 0, got {config.phase2.gaussian_tv}')
  need(config.kernel_source in ('inr', 'lrdip', 'edges'),
       f"kernel_source {config.kernel_source!r} is not one of inr, lrdip, edges")
  need(config.kernel_source == 'inr' or (config.phase2.final_bp_reg > 0
                                         and config.phase2.final_bp_from == 'bicubic'),
       f"kernel_source {config.kernel_source!r} needs phase2.final_bp_reg > 0 and "
       "phase2.final_bp_from 'bicubic'")
  need(config.lrdip.window >= 0, f'lrdip.window must be ≥ 0, got {config.lrdip.window}')
  need(config.edges.window >= 0, f'edges.window must be ≥ 0, got {config.edges.window}')
  need(config.edges.n_iter >= 1, f'edges.n_iter must be ≥ 1, got {config.edges.n_iter}')
  need(config.edges.min_pixels >= 0,
       f'edges.min_pixels must be ≥ 0, got {config.edges.min_pixels}')
  need(config.edges.r > 0 and config.edges.gamma >= 0 and config.edges.alpha >= 0,
       'edges.r must be > 0 and edges.gamma, edges.alpha ≥ 0, got '
       f'{config.edges.r}, {config.edges.gamma}, {config.edges.alpha}')
  need(config.lrdip.max_spread > 0,
       f'lrdip.max_spread must be > 0, got {config.lrdip.max_spread}')
  need(config.io.kernel_crop >= 0, f'io.kernel_crop must be ≥ 0, got {config.io.kernel_crop}')
  need(config.io.kernel_crop == 0 or (config.phase2.final_bp_reg > 0
                                      and config.phase2.final_bp_from == 'bicubic'),
       "io.kernel_crop > 0 needs phase2.final_bp_reg > 0 and phase2.final_bp_from 'bicubic'")
  need(config.io.kernel_crop == 0 or config.io.kernel_crop >= min_lr_side(config),
       f'io.kernel_crop must be 0 or ≥ {min_lr_side(config)} LR px for this config, '
       f'got {config.io.kernel_crop}')
  for name in ('pd.steps', 'pd.batch', 'pd.chunk', 'phase2.stride', 'phase2.n_iter',
               'phase2.n_iter_first', 'phase2.chunk', 'lrdip.steps', 'lrdip.width',
               'lrdip.levels'):
    sec, field = name.split('.')
    need(config[sec][field] >= 1, f'{name} must be ≥ 1, got {config[sec][field]}')


def min_lr_side(config) -> int:
  """The smallest LR side the method accepts for this config.

  The HR must hold the kernel support (symmetric padding by K//2) and pass the
  U-Net's 2^levels down-sampling; we also ask for 16 LR pixels so that PD
  has patches to learn from.
  """
  need_hr = max(config.kernel.size, 2 ** len(config.unet.features))
  return max(16, math.ceil(need_hr / config.scale))


def check_lr_size(lr, config, name) -> None:
  """Raises :class:`kfjax.io.InputError` if the LR image is too small or too large."""
  h, w = lr.shape[:2]
  s = config.scale
  lo = min_lr_side(config)
  if min(h, w) < lo:
    raise io.InputError(f'image is {w}×{h} px; at ×{s} with a {config.kernel.size}-px kernel '
                        f'support the LR must be at least {lo}×{lo} px', path=name)
  if h * w * s * s > config.io.max_hr_pixels:
    side = int(math.sqrt(config.io.max_hr_pixels) / s)
    raise io.InputError(
        f'the ×{s} output would be {w * s}×{h * s} = {h * w * s * s / 1e6:.1f} MP, more than '
        f'io.max_hr_pixels = {config.io.max_hr_pixels / 1e6:.1f} MP; use '
        f'--config.io.center_crop={side} to process a centre crop, or raise '
        f'--config.io.max_hr_pixels', path=name)
  # Phase 2 runs on the kernel window (io.kernel_crop) at the padded size (io.size_bucket).
  kc = config.io.kernel_crop
  bh, bw = (pipeline.bucketed(min(n, kc) if kc else n, config.io.size_bucket) for n in (h, w))
  need, have = phase2_memory_bytes(config, bh * s, bw * s), device_memory_bytes()
  if have is not None and need > 0.9 * have:
    side = int(math.sqrt(0.9 * have / need * bh * bw))
    raise io.InputError(
        f'Phase 2 at {bw * s}×{bh * s} needs about {need / 2**30:.1f} GiB but the device has '
        f'{have / 2**30:.1f} GiB; use --config.io.kernel_crop={side} (estimate the kernel on '
        f'a centre window, output the whole image), --config.io.center_crop={side} (LR px) or '
        f'--config.compute_dtype=bfloat16', path=name)


def phase2_memory_bytes(config, hr_h: int, hr_w: int) -> float:
  """A rule-of-thumb estimate of Phase 2's peak memory at an HR size.

  Reverse-mode autodiff keeps the activations of the PD (3 + 2·blocks layers
  of ``pd.width`` channels) and of the two U-Net applications (about 4
  full-resolution-equivalent layers of ``unet.features[0]`` channels each), in
  the compute dtype; ×1.2 for XLA's temporaries. Calibrated on a measured
  25 GB peak at 2048×1344 in fp32 with width 128 (this formula: 29 GB).
  """
  per_value = 2 if config.compute_dtype == 'bfloat16' else 4
  pd_layers = 3 + 2 * config.pd.num_blocks
  channels = pd_layers * config.pd.width + 2 * 4 * config.unet.features[0]
  return 1.2 * hr_h * hr_w * channels * per_value


def device_memory_bytes() -> float | None:
  """Memory of the default device: the accelerator's limit, or the host's RAM on CPU."""
  dev = jax.devices()[0]
  try:
    stats = dev.memory_stats()
  except Exception:  # pylint: disable=broad-except  (backends without memory stats)
    stats = None
  if stats and stats.get('bytes_limit'):
    return float(stats['bytes_limit'])
  try:
    return float(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'))
  except (ValueError, OSError, AttributeError):
    return None


def center_crop(img, size: int):
  """Centre-crops the two spatial axes to at most size×size."""
  y, x, ch, cw = io.center_box(*img.shape[:2], size)
  return img[y:y + ch, x:x + cw]


# ----------------------------------------------------------------------------
# The embedded demo input
# ----------------------------------------------------------------------------

DEMO_IMAGE = 'astronaut'        # scikit-image's public-domain NASA photo
DEMO_KERNEL_SEED = 3            # seed of the built-in camera-shake kernel


def demo_case(config) -> dict:
  """The default input: a crop of scikit-image's ``astronaut`` degraded by camera shake.

  The HR is a centre-right crop of ``config.demo.hr_size`` px (face and flag),
  the kernel a procedurally drawn camera-shake path (:func:`kfjax.kernels.camera_shake`)
  on a ``min(19, kernel.size − s)`` support, aligned for the scale, and the LR is
  :func:`kfjax.degradation.downscale` of the two, quantised to 8 bits as a
  saved PNG would be.
  """
  import skimage.data  # imported here: only the demo needs the wheel's photos
  s = config.scale
  img = skimage.data.astronaut().astype(np.float32) / 255.0
  size = config.demo.hr_size - config.demo.hr_size % s
  y0 = max(0, min(img.shape[0] - size, 40))
  x0 = max(0, min(img.shape[1] - size, 130))
  hr = img[y0:y0 + size, x0:x0 + size]
  k = kernels.camera_shake(size=min(19, config.kernel.size - s), seed=DEMO_KERNEL_SEED)
  k = kernels.align_for_scale(k, config.kernel.size, s)
  lr = np.asarray(degradation.downscale(jnp.asarray(hr), jnp.asarray(k), s))
  lr = np.round(np.clip(lr, 0, 1) * 255) / 255
  return {'name': 'demo_astronaut', 'lr': lr.astype(np.float32), 'gt': hr, 'gt_kernel': k}


# ----------------------------------------------------------------------------
# One image
# ----------------------------------------------------------------------------


def _json(obj) -> str:
  return json.dumps(obj, indent=2, sort_keys=True, default=lambda o: (
      o.tolist() if isinstance(o, np.ndarray) else float(o) if isinstance(o, np.generic)
      else str(o))) + '\n'


def evaluate(hr, kernel, lr, config, gt=None, gt_kernel=None, bicubic=None) -> dict:
  """Metrics of a result against optional ground truth, with the baselines for reference.

  ``bicubic`` is the bicubic upscale of ``lr`` if the caller already has it.
  """
  s = config.scale
  out = {}
  if gt is not None:
    gt = gt[: lr.shape[0] * s, : lr.shape[1] * s]
    if gt.shape[:2] != hr.shape[:2]:
      raise io.InputError(f'ground truth is {gt.shape[1]}×{gt.shape[0]} px but the ×{s} output '
                          f'is {hr.shape[1]}×{hr.shape[0]}', path='--gt')
    bic = (np.asarray(degradation.bicubic_upscale(jnp.asarray(lr), s)) if bicubic is None
           else bicubic)
    out.update(metrics.image_metrics(hr, gt, s))
    out.update({f'{k}_bicubic': v for k, v in metrics.image_metrics(bic, gt, s).items()})
    if gt_kernel is not None:
      bp = np.asarray(degradation.back_projection(lr, gt_kernel, s))
      out.update({f'{k}_bp_gt': v for k, v in metrics.image_metrics(bp, gt, s).items()})
      bp_est = np.asarray(degradation.back_projection(lr, kernel, s))
      out.update({f'{k}_bp_est': v for k, v in metrics.image_metrics(bp_est, gt, s).items()})
  if gt_kernel is not None:
    out.update(metrics.kernel_metrics(kernel, gt_kernel))
  return out


def process(lr, name: str, out_root: Path, config, *, info: io.ImageInfo | None = None,
            gt=None, gt_kernel=None, overwrite: bool = False, source: str | None = None,
            log: Callable = logging.info) -> dict:
  """Runs KernelFusion on one LR image and writes its result folder.

  ``source`` is the input's path, named in error messages (default: ``name``).
  Returns a summary row (see ``SUMMARY_FIELDS``); ``status`` is 'ok' or 'skipped'.
  """
  out = out_root / name
  if (out / 'metrics.json').exists() and not overwrite:
    log(f'{name}: outputs exist in {out}; skipping (use --overwrite to recompute)')
    row = json.loads((out / 'metrics.json').read_text())
    return {'image': name, 'status': 'skipped', **_row_metrics(row)}
  if config.io.center_crop:
    lr = center_crop(lr, config.io.center_crop)
    gt = None if gt is None else center_crop(gt, config.io.center_crop * config.scale)
  check_lr_size(lr, config, source or name)   # before anything is written for this image
  out.mkdir(parents=True, exist_ok=True)
  io.atomic_write_text(out / 'config.json', pipeline.config_to_json(config))
  log(f'{name}: {lr.shape[1]}×{lr.shape[0]} LR → {lr.shape[1] * config.scale}×'
      f'{lr.shape[0] * config.scale} HR, variant {config.variant!r}, backend '
      f'{jax.default_backend()}')
  t0 = time.time()
  hr, kernel, run_info = pipeline.super_resolve(lr, config, ckpt_dir=str(out / 'checkpoints'),
                                                log=log)
  seconds = time.time() - t0
  result = {'image': name, 'seconds': seconds,
            'phase1_seconds': run_info['phase1'].get('seconds', 0.0),
            'phase2_seconds': run_info['phase2']['seconds'],
            'hr_shape': list(hr.shape), 'backend': run_info['backend'],
            'device': run_info['device'], 'phase1': _trim(run_info['phase1']),
            'phase2': _trim(run_info['phase2'])}
  if 'kernel_window' in run_info:    # io.kernel_crop: (top, left, h, w) of the LR window
    result['kernel_window'] = run_info['kernel_window']
  losses = run_info['phase2'].get('loss_last') or [float('nan')]
  result['final_loss'] = losses[-1]
  bic = np.asarray(degradation.bicubic_upscale(jnp.asarray(lr), config.scale))
  result.update(evaluate(hr, kernel, lr, config, gt, gt_kernel, bicubic=bic))
  io.write_image(out / 'hr.png', hr, info)
  io.atomic_save_npy(out / 'kernel.npy', kernel)
  io.atomic_save_mat(out / 'kernel.mat', {'Kernel': kernel.astype(np.float64)})
  io.write_image(out / 'kernel.png', visualize.kernel_image(kernel))
  io.write_image(out / 'report.png', visualize.report(lr, bic, hr, kernel, scale=config.scale,
                                                      gt=gt, gt_kernel=gt_kernel))
  if 'kernel_trace' in run_info['phase2']:
    io.atomic_save_npy(out / 'kernel_trace.npy', run_info['phase2']['kernel_trace'])
  if 'kernel_inr' in run_info['phase2']:       # phase2.kernel_blend: the INR's own kernel
    io.atomic_save_npy(out / 'kernel_inr.npy', run_info['phase2']['kernel_inr'])
  if 'hr_diffusion' in run_info['phase2']:     # x̂0 before the final back-projection
    io.write_image(out / 'hr_diffusion.png', run_info['phase2']['hr_diffusion'], info)
  io.atomic_write_text(out / 'metrics.json', _json(result))   # last: marks the image done
  return {'image': name, 'status': 'ok', **_row_metrics(result)}


_ARRAY_INFO = ('kernel_trace', 'hr_diffusion', 'kernel_inr')   # saved as files, not in JSON


def _trim(info: dict) -> dict:
  return {k: v for k, v in info.items() if k not in _ARRAY_INFO}


def _row_metrics(result: dict) -> dict:
  return {k: result[k] for k in SUMMARY_FIELDS if k in result and k not in ('image', 'status')}


def write_summary(path: Path, rows: list[dict]) -> None:
  """Writes ``summary.csv`` (one row per image) atomically."""
  buf = _io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS, extrasaction='ignore')
  writer.writeheader()
  for row in rows:
    writer.writerow({k: (f'{v:.6g}' if isinstance(v, float) else v) for k, v in row.items()})
  io.atomic_write_text(path, buf.getvalue())


def run(config, *, input_path: str | None, output_dir: str, gt: str | None = None,
        gt_kernel: str | None = None, overwrite: bool = False,
        log: Callable = logging.info) -> tuple[list[dict], int]:
  """Processes the demo, one image or a folder. Returns (rows, exit status).

  Raises :class:`kfjax.io.InputError` / :class:`ConfigError` for user errors
  that stop the whole run (a bad single input, a bad output folder).
  In a folder run a bad image is reported in its summary row and the others
  still run; the exit status is 1 if any image failed.
  """
  validate_config(config)
  out_root = Path(output_dir)
  if input_path is None:
    out_root = io.check_output_dir(out_root, None)
    case = demo_case(config)
    log(f'No --input: running the embedded demo ({DEMO_IMAGE} from scikit-image, '
        f'{case["gt"].shape[1]}×{case["gt"].shape[0]} HR blurred by a built-in camera-shake '
        f'kernel, ×{config.scale} → {case["lr"].shape[1]}×{case["lr"].shape[0]} LR)')
    row = process(case['lr'], case['name'], out_root, config, gt=case['gt'],
                  gt_kernel=case['gt_kernel'], overwrite=overwrite, log=log)
    return [row], 0
  paths = io.list_images(input_path)
  out_root = io.check_output_dir(out_root, input_path)
  gt_img = io.read_image(gt)[0] if gt else None
  gt_k = _read_gt_kernel(gt_kernel) if gt_kernel else None
  if (gt_img is not None or gt_k is not None) and len(paths) > 1:
    raise io.InputError('--gt/--gt_kernel describe one image but the input is a folder of '
                        f'{len(paths)}', path=input_path)
  folder = len(paths) > 1 or Path(input_path).is_dir()
  rows, status = [], 0
  for i, path in enumerate(paths):
    name = _unique_stem(path, paths)
    log(f'[{i + 1}/{len(paths)}] {path}')
    try:
      lr, info = io.read_image(path)
      rows.append(process(lr, name, out_root, config, info=info, gt=gt_img, gt_kernel=gt_k,
                          overwrite=overwrite, source=str(path), log=log))
    except (io.InputError, pipeline.DivergenceError) as e:
      if not folder:
        raise
      logging.error('%s', e)
      rows.append({'image': name, 'status': 'failed', 'error': str(e)})
      status = 1
    if folder:
      write_summary(out_root / 'summary.csv', rows)
  return rows, status


def _unique_stem(path: Path, paths: list[Path]) -> str:
  """The image's stem, or its full name when two inputs share a stem."""
  same = sum(p.stem == path.stem for p in paths)
  return path.stem if same == 1 else path.name.replace('.', '_')


def _read_gt_kernel(path) -> np.ndarray:
  try:
    loaded = kernels.load_kernels(path)
  except (ValueError, OSError) as e:
    raise io.InputError(str(e).split(': ', 1)[-1], path=path) from None
  if len(loaded) != 1:
    raise io.InputError(f'holds {len(loaded)} kernels; give exactly one', path=path)
  return loaded[0][1]


def demo_summary(row: dict, out_dir: str) -> str:
  """The 3-line summary the demo prints."""
  def f(key):
    v = row.get(key)
    return 'n/a' if v is None else f'{v:.2f} dB'
  return (f'PSNR (Y, 5% border): kfjax {f("psnr_y")} | bicubic {f("psnr_y_bicubic")} | '
          f'back-projection with the true kernel {f("psnr_y_bp_gt")}\n'
          f'Kernel error (normalised, after centring): {row.get("kernel_nerr", float("nan")):.3f}'
          f'   (time {row.get("seconds", float("nan")):.0f} s)\n'
          f'Outputs: {os.path.abspath(os.path.join(out_dir, row["image"]))}/')
