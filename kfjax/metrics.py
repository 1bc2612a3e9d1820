"""Evaluation metrics (SPEC §3): SR quality on the Y channel and kernel quality.

Each metric is defined in exactly one place here, as a pure function.

Conventions
-----------
* Images are float arrays in [0, 1], shaped (H, W, 3) RGB or (H, W, 1) / (H, W)
  grey. Nothing here quantises; :func:`image_metrics` clips the prediction to
  [0, 1] (what a saved PNG would hold) unless told not to.
* Y is BT.601 luma on the **[16, 235] scale** (the MATLAB ``rgb2ycbcr``
  convention used throughout the SR literature), computed in float with no
  rounding: ``Y = 16 + 65.481 R + 128.553 G + 24.966 B``. PSNR uses a data
  range (peak) of 255 on that Y; SSIM is computed on ``Y / 255`` with
  ``max_val = 1``, which is the same thing as data range 255 on Y.
* Borders: the primary figures (``psnr_y``, ``ssim_y``) exclude a 5% border on
  every side [paper], :func:`border_5pct`; the ``*_s`` figures exclude ``s``
  pixels per side, the common SR convention, for comparison with other tools.
"""

from __future__ import annotations

import dm_pix
import jax.numpy as jnp
import numpy as np

from kfjax import degradation

# BT.601 luma weights for RGB in [0, 1]; they sum to 219 = 235 - 16.
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966])
Y_PEAK = 255.0   # the data range used for PSNR on Y


# ----------------------------------------------------------------------------
# Image metrics
# ----------------------------------------------------------------------------


def rgb_to_y(img01):
  """BT.601 luma of an image in [0, 1], on the [16, 235] scale (float, unrounded).

  Args:
    img01: (H, W, 3) RGB, or (H, W, 1) / (H, W) grey, values in [0, 1].
      A grey image is treated as R = G = B, i.e. ``Y = 16 + 219 v``.

  Returns:
    (H, W) float64 numpy array ``16 + 65.481 R + 128.553 G + 24.966 B``.
  """
  x = np.asarray(img01, np.float64)
  if x.ndim == 2:
    x = x[..., None]
  if x.ndim != 3 or x.shape[-1] not in (1, 3):
    raise ValueError(f'expected an (H, W, 3) or (H, W, 1) image, got shape {x.shape}')
  if x.shape[-1] == 1:
    return 16.0 + _Y_WEIGHTS.sum() * x[..., 0]
  return 16.0 + x @ _Y_WEIGHTS


def border_5pct(shape) -> tuple[int, int]:
  """The 5% border per side [paper]: ``(round(0.05 H), round(0.05 W))`` pixels."""
  h, w = shape[0], shape[1]
  return int(round(0.05 * h)), int(round(0.05 * w))


def _as_border(border) -> tuple[int, int]:
  if np.ndim(border) == 0:
    return int(border), int(border)
  by, bx = border
  return int(by), int(bx)


def crop_border(image, border):
  """Removes ``border`` pixels from every side of the first two axes.

  Args:
    image: array with at least two (spatial) axes.
    border: an int (same on both axes) or a (rows, cols) pair, per side.
  """
  by, bx = _as_border(border)
  h, w = image.shape[0], image.shape[1]
  if 2 * by >= h or 2 * bx >= w:
    raise ValueError(f'border {(by, bx)} leaves nothing of a {h}x{w} image')
  return image[by: h - by, bx: w - bx]


def _y_pair(pred, gt, border):
  pred, gt = np.asarray(pred), np.asarray(gt)
  if pred.shape != gt.shape:
    raise ValueError(f'shape mismatch: pred {pred.shape} vs gt {gt.shape}')
  return crop_border(rgb_to_y(pred), border), crop_border(rgb_to_y(gt), border)


def psnr_y(pred, gt, *, border) -> float:
  """PSNR (dB) on the Y channel ([16, 235] scale, peak 255) after cropping a border.

  Args:
    pred: predicted image in [0, 1], (H, W, C).
    gt: ground-truth image in [0, 1], same shape.
    border: pixels removed per side, an int or a (rows, cols) pair.

  Returns:
    ``10 log10(255² / MSE)``; ``inf`` for identical images.
  """
  yp, yg = _y_pair(pred, gt, border)
  mse = float(np.mean((yp - yg) ** 2))
  return float('inf') if mse == 0.0 else float(10.0 * np.log10(Y_PEAK ** 2 / mse))


def ssim_y(pred, gt, *, border) -> float:
  """SSIM on the Y channel after cropping a border (dm-pix, reference settings).

  11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03, biased covariances,
  computed on ``Y / 255`` with ``max_val = 1`` (data range 255 on Y). The
  window is applied 'valid' inside the cropped region, which matches
  ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=255)`` on the same crop.

  Args:
    pred: predicted image in [0, 1], (H, W, C).
    gt: ground-truth image in [0, 1], same shape.
    border: pixels removed per side, an int or a (rows, cols) pair.
  """
  yp, yg = _y_pair(pred, gt, border)
  a = jnp.asarray(yp / Y_PEAK, jnp.float32)[..., None]
  b = jnp.asarray(yg / Y_PEAK, jnp.float32)[..., None]
  return float(dm_pix.ssim(a, b, max_val=1.0, filter_size=11, filter_sigma=1.5,
                           k1=0.01, k2=0.03))


def image_metrics(pred01, gt01, scale: int, *, clip: bool = True) -> dict:
  """All SR-quality figures for one image.

  Args:
    pred01: predicted HR image in [0, 1], (H, W, C).
    gt01: ground-truth HR image in [0, 1], same shape.
    scale: the SR factor s (the border of the ``*_s`` figures).
    clip: clip ``pred01`` to [0, 1] first, as saving it to a PNG would.

  Returns:
    dict with ``psnr_y``, ``ssim_y`` (5% border, the primary figures) and
    ``psnr_y_s``, ``ssim_y_s`` (``s``-pixel border).
  """
  pred = np.asarray(pred01, np.float64)
  if clip:
    pred = np.clip(pred, 0.0, 1.0)
  gt = np.asarray(gt01, np.float64)
  b5 = border_5pct(gt.shape)
  return {
      'psnr_y': psnr_y(pred, gt, border=b5),
      'ssim_y': ssim_y(pred, gt, border=b5),
      'psnr_y_s': psnr_y(pred, gt, border=scale),
      'ssim_y_s': ssim_y(pred, gt, border=scale),
  }


# ----------------------------------------------------------------------------
# Kernel metrics
# ----------------------------------------------------------------------------


def align_kernels(k_est, k_gt) -> tuple[np.ndarray, np.ndarray]:
  """Puts both kernels, normalised to sum 1, on one canvas, centred on their centre of mass.

  A kernel is only defined up to a shift (a shifted HR with a shifted kernel
  gives the same LR), so both are moved by whole pixels so that their centres
  of mass sit nearest the centre of a common (2·max(K̂, K) + 1)² canvas, which
  is large enough that no mass is ever cropped.

  Returns:
    (k_est, k_gt) as float64 arrays of the same shape.
  """
  ke = np.asarray(k_est, np.float64)
  kg = np.asarray(k_gt, np.float64)
  size = 2 * max(*ke.shape, *kg.shape) + 1
  ke = degradation.center_kernel(degradation.normalise_kernel(ke), size)
  kg = degradation.center_kernel(degradation.normalise_kernel(kg), size)
  return ke, kg


def kernel_metrics(k_est, k_gt) -> dict:
  """Shift-invariant kernel error (SPEC §3, kernel quality item 1).

  Both kernels are normalised to sum 1 and centred on their centre of mass on
  a common canvas (:func:`align_kernels`). Then

  * ``kernel_nerr = ‖k̂ − k‖₂ / ‖k‖₂`` (0 is perfect);
  * ``kernel_psnr = 10 log10(max(k)² / MSE)`` dB, where the MSE is the sum of
    squared differences over the whole canvas divided by the *ground-truth
    kernel's own support area* ``K_h·K_w``. Dividing by the GT support (not
    the canvas) makes the figure independent of how much zero padding the
    common canvas needed, while still counting any mass that ``k̂`` puts
    outside the GT support. The peak is the GT kernel's maximum, so the
    figure compares kernels of different spread fairly.

  Args:
    k_est: estimated 2-D kernel (any size).
    k_gt: ground-truth 2-D kernel (any size).

  Returns:
    dict with ``kernel_nerr`` and ``kernel_psnr`` (``inf`` for a perfect match).
  """
  ke, kg = align_kernels(k_est, k_gt)
  diff2 = float(((ke - kg) ** 2).sum())
  nerr = float(np.sqrt(diff2) / np.sqrt((kg ** 2).sum()))
  area = float(np.prod(np.shape(k_gt)))
  mse = diff2 / area
  peak = float(kg.max())
  kpsnr = float('inf') if mse == 0.0 else float(10.0 * np.log10(peak ** 2 / mse))
  return {'kernel_nerr': nerr, 'kernel_psnr': kpsnr}
