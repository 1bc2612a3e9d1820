r"""A classical blind kernel estimator: sparse (L0) gradients, alternating, coarse to fine.

Not KernelFusion. A fast, training-free reference point for it: how good a
kernel does a *generic* image prior give on the same LR image? It alternates
(after Xu et al. 2013, "Unnatural L0 sparse representation", and Pan et al.
2014, adapted to the SR forward model of :func:`kfjax.degradation.downscale`):

* an **image step**: ``min_x ‖D(k ⊛ x) − y‖² + λ ‖∇x‖₀`` by half-quadratic
  splitting (hard-thresholded gradients, then a conjugate-gradient solve of
  the quadratic problem; :func:`l0_restore`);
* a **kernel step**: the least-squares kernel in the gradient domain,
  ``min_k Σ_d ‖D(k ⊛ ∇ˢ_d x) − ∇_d y‖² + γ‖k‖² + μ‖∇k‖²``, solved exactly on
  the K² taps, then clipped to ≥ 0, small taps (< ``threshold`` · max) zeroed
  and only the largest connected component kept (:func:`fit_kernel_gradients`);

from a small centred blob at SR factor 1 (deblurring the LR itself with a
≈K/s support), then at ×2, ×4, … up to ``scale``, each level starting from
the previous kernel grown to the new support (:func:`grow_kernel`). ``∇ˢ`` is
the HR difference at stride s, which is exactly what the LR difference ``∇``
sees through the stride-s sampling. The final kernel is centred for the scale
(:func:`kfjax.kernels.align_for_scale`), the convention of the benchmarks' GT
kernels and of the bicubic baseline.

By default one image step and one kernel step per level: more alternations
drive the estimate towards the delta kernel (measured in docs/results.md).
Luma only, on a centre window of at most 128×128 LR pixels; a 64×64 LR x4 case
takes ~1 s on a 2-core CPU. The defaults were chosen on blind144 crop mini by
the mean over its 12 cases, and on div2kfk for the number of alternations.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from kfjax import degradation
from kfjax import io
from kfjax import kernels
from kfjax import metrics

DEFAULTS = dict(lam=1e-2, smooth=0.3, tikhonov=1e-3, threshold=0.05, n_alt=1,
                coarse_to_fine=True, lam_start=1.0, window=128)
"""The estimator's settings (:func:`estimate_kernel`), measured in docs/results.md."""


def luma(img01) -> np.ndarray:
  """BT.601 luma of an image in [0, 1], back on a [0, 1] scale: (H, W) float64."""
  return (metrics.rgb_to_y(img01) - 16.0) / 219.0


def patch_matrix(x, size: int, scale: int, lr_hw: tuple[int, int]) -> np.ndarray:
  """(h, w, size·size): the HR taps behind each LR pixel, so that
  ``downscale(x, k, scale)[i, j] == patch_matrix(x, ...)[i, j] @ k.ravel()``.

  ``x`` is a 2-D HR image; the padding is :func:`kfjax.degradation.downscale`'s
  (symmetric, K//2 leading, K−1−K//2 trailing).
  """
  lead = size // 2
  xp = np.pad(np.asarray(x, np.float64), ((lead, size - 1 - lead),) * 2, mode='symmetric')
  p = sliding_window_view(xp, (size, size))[::scale, ::scale][:lr_hw[0], :lr_hw[1]]
  return p.reshape(lr_hw[0], lr_hw[1], size * size)


def _difference_matrix(size: int) -> np.ndarray:
  """Stacked vertical and horizontal first differences on a size×size grid."""
  eye = np.eye(size)
  d1 = (np.eye(size, k=1) - eye)[:-1]                 # (size−1, size)
  return np.concatenate([np.kron(d1, eye), np.kron(eye, d1)])


def fit_kernel_gradients(hr, lr, scale: int, size: int, *, tikhonov: float = 1e-3,
                         smooth: float = 0.3, threshold: float = 0.05) -> np.ndarray:
  """The kernel step: least squares in the gradient domain, then cleaned.

  Solves ``min_k Σ_d ‖D(k ⊛ ∇ˢ_d hr) − ∇_d lr‖² + γ‖k‖² + μ‖∇k‖²`` exactly
  (normal equations on the size² taps), with γ = ``tikhonov`` and μ =
  ``smooth`` relative to the mean diagonal of the data term. Then clips to
  ≥ 0, zeroes taps below ``threshold`` times the largest, keeps the largest
  connected component and normalises to sum 1.

  Args:
    hr: 2-D HR (luma) image, lr.shape · scale.
    lr: 2-D LR (luma) image.
    scale: SR factor (1 = plain deblurring).
    size: kernel support K.

  Returns:
    (size, size) float64 kernel summing to 1.
  """
  lr = np.asarray(lr, np.float64)
  p = patch_matrix(hr, size, scale, lr.shape)
  ata, atb = 0.0, 0.0
  for ax in (0, 1):                                  # vertical, then horizontal differences
    a = np.diff(p, axis=ax).reshape(-1, size * size)
    ata = ata + a.T @ a
    atb = atb + a.T @ np.diff(lr, axis=ax).ravel()
  unit = np.trace(ata) / (size * size)
  d = _difference_matrix(size)
  reg = unit * (tikhonov * np.eye(size * size) + smooth * d.T @ d)
  return clean_kernel(np.linalg.solve(ata + reg, atb).reshape(size, size), threshold)


def clean_kernel(kernel, threshold: float, *, diagonal: bool = False) -> np.ndarray:
  """A least-squares kernel made a blur: clipped to ≥ 0, taps below ``threshold``
  times the largest zeroed, only the largest connected component (by mass) kept,
  normalised to sum 1. All taps ≤ 0 give the centred delta.

  ``diagonal``: taps touching at a corner are connected too (8-connectivity), so
  a one-tap-wide diagonal path stays whole; False: edge neighbours only.
  """
  k = np.maximum(np.asarray(kernel, np.float64), 0.0)
  if k.max() <= 0:
    k = np.zeros(k.shape)
    k[k.shape[0] // 2, k.shape[1] // 2] = 1.0
    return k
  k[k < threshold * k.max()] = 0.0
  labels, n = ndimage.label(k > 0, np.ones((3, 3)) if diagonal else None)
  if n > 1:
    mass = ndimage.sum(k, labels, range(1, n + 1))
    k[labels != 1 + int(np.argmax(mass))] = 0.0
  return k / k.sum()


def l0_restore(lr, kernel, scale: int, init, *, lam: float = 1e-2, n_outer: int = 6,
               cg_iter: int = 25) -> np.ndarray:
  """The image step: ``min_x ‖D(k ⊛ x) − lr‖² + lam·‖∇x‖₀`` (2-D luma images).

  Half-quadratic splitting from ``init`` with β = 2·lam doubling over
  ``n_outer`` rounds (each: hard-threshold the gradients at lam/β, then
  ``cg_iter`` plain conjugate-gradient iterations; periodic gradients):
  :func:`kfjax.degradation.sparse_gradient_restore` with the L0 prior, without its
  preconditioner (the estimator was tuned with this solver).
  """
  x = degradation.sparse_gradient_restore(
      np.asarray(lr)[..., None], kernel, scale, np.asarray(init)[..., None], lam=lam,
      prior='l0', n_outer=n_outer, beta_start=2.0, cg_iter=cg_iter, cg_tol=1e-5,
      precondition=False)
  return np.asarray(x[..., 0], np.float64)


def grow_kernel(kernel, size: int) -> np.ndarray:
  """Scales a kernel's shape by size/K about its support's centre onto (size, size).

  Bilinear, zero outside the old support (so the support's edge stays zero),
  clipped to ≥ 0 and normalised to sum 1. Used between the coarse-to-fine
  levels, where it measured better than :func:`kfjax.kernels.resize_kernel`
  (24.290 vs 24.143 dB on blind144 crop mini; docs/results.md).
  """
  k = np.asarray(kernel, np.float64)
  c_in, c_out = (k.shape[0] - 1) / 2, (size - 1) / 2
  f = size / k.shape[0]
  grid = np.mgrid[:size, :size].astype(np.float64)
  out = ndimage.map_coordinates(k, c_in + (grid - c_out) / f, order=1, mode='constant')
  out = np.maximum(out, 0.0)
  return out / out.sum()


def levels(scale: int) -> list[int]:
  """The coarse-to-fine SR factors: 1, then powers of 2 below ``scale``, then ``scale``."""
  out = [1]
  while out[-1] * 2 < scale:
    out.append(out[-1] * 2)
  return out + [scale] if scale > 1 else out


def estimate_kernel(lr01, scale: int, size: int, *, lam: float = DEFAULTS['lam'],
                    smooth: float = DEFAULTS['smooth'], tikhonov: float = DEFAULTS['tikhonov'],
                    threshold: float = DEFAULTS['threshold'],
                    n_alt: int = DEFAULTS['n_alt'],
                    coarse_to_fine: bool = DEFAULTS['coarse_to_fine'],
                    lam_start: float = DEFAULTS['lam_start'],
                    window: int = DEFAULTS['window']) -> np.ndarray:
  """Estimates the (size, size) SR kernel of an LR image, blind (module docstring).

  Args:
    lr01: (h, w, C) LR image in [0, 1] (C = 1 or 3).
    scale: SR factor s.
    size: kernel support K (odd or even) at the HR scale.
    lam, smooth, tikhonov, threshold: the L0 weight and the kernel step's
      settings (:func:`l0_restore`, :func:`fit_kernel_gradients`).
    n_alt: image/kernel alternations per level.
    coarse_to_fine: False runs the ×``scale`` level alone, from the small blob.
    lam_start: within each level the L0 weight falls geometrically from
      ``lam_start · lam`` to ``lam`` over the alternations (1 = constant).
    window: estimate on the centre window×window LR pixels at most (memory
      and time stay bounded on full-size images; the kernel is the same
      everywhere). 0 = the whole image.

  Returns:
    (size, size) float32 kernel summing to 1, centred for ``scale``.
  """
  y = luma(lr01)
  if window > 0:
    top, left, h, w = io.center_box(*y.shape, window)
    y = y[top:top + h, left:left + w]
  kernel = None
  for level in levels(scale) if coarse_to_fine else [scale]:
    k_size = size if level == scale else max(3, int(np.ceil(size * level / scale)) | 1)
    if kernel is None:
      kernel = np.zeros((k_size, k_size))
      kernel[k_size // 2, k_size // 2] = 1.0
      kernel = ndimage.gaussian_filter(kernel, 0.7)
      kernel /= kernel.sum()
    else:
      kernel = grow_kernel(kernel, k_size)
    x = y if level == 1 else np.asarray(
        degradation.bicubic_upscale(y[..., None].astype(np.float32), level))[..., 0]
    for i in range(n_alt):
      frac = 1.0 - i / (n_alt - 1) if n_alt > 1 else 0.0    # lam_start·lam → lam
      x = l0_restore(y, kernel, level, x, lam=lam * lam_start ** frac)
      kernel = fit_kernel_gradients(x, y, level, k_size, tikhonov=tikhonov, smooth=smooth,
                                    threshold=threshold)
  return kernels.align_for_scale(kernel, size, scale, max_loss=1.0)
