r"""A blind kernel at the LR grid's own scale, from predicted sharp edges, coarse to fine.

Our addition, not the paper's. ``docs/results.md`` ("What the LR grid sees of
the kernel") found that the SR kernel's gain lies almost all in its s×s block
sums, so that finding it is a blind *deblurring* of the LR image itself with a
kernel of a few LR pixels (:func:`kfjax.kernels.lift_lr_kernel` takes such a
kernel back to the HR grid). This module solves that deblurring the classical
way of Cho & Lee (2009, "Fast motion deblurring"), on an image pyramid of the
LR (kernel supports 3, 5, …, n), with at each level ``n_iter`` rounds of:

* **edge prediction**: the current sharp estimate, lightly smoothed and
  shock-filtered (:func:`shock_filter`), so that its strong edges are step
  edges again (or, with ``hr_edges``, steps on a finer grid block-averaged
  back: :func:`predict_edges`);
* **gradient selection**: in each of four orientation bins, only the
  ``r·√(N·n²)`` largest gradients of that prediction (N pixels, n² taps;
  :func:`select_gradients`), a few more each round;
* a **kernel step**: the least-squares kernel that maps the selected
  gradients onto the LR's gradients, ``min_k Σ_d ‖k ⊛ p_d − ∇_d y‖² + γ‖k‖²``
  (normal equations on the n² taps, the forward model's convolution
  convention), clipped to ≥ 0, small taps zeroed and its largest connected
  component (8-connected) kept (:func:`kfjax.sparse_kernel.clean_kernel`);
* an **image step**: the Tikhonov-gradient deconvolution of the LR with that
  kernel, ``min_x ‖k ⊛ x − y‖² + α‖∇x‖²``, by FFT on a mirror-padded image
  (:func:`deconvolve`).

The selection is what the L0 estimator of :mod:`kfjax.sparse_kernel` lacks:
the kernel is fitted only where the prediction has a clean step edge, so
long motion paths are found instead of blobs (docs/results.md, "Edges
predicted at the LR scale"). On LR images of 128² px and more it beats the
diffusion's kernel; on small ones (64×64 crops, Set14's of < 12k px) it is
unreliable, so the ×4 variants use it only on LR images of ``edges.min_pixels`` or more
(``kernel_source = 'edges'``, :func:`kfjax.pipeline.source_shortcut`). Luma
only, on the whole LR image by default; 2–5 s for a DIV2K-size LR (510×339)
on a 2-core CPU at r = 0.5 (about 10 s at r = 1), well under 1 s for a 64×64
crop.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from kfjax import io
from kfjax import kernels
from kfjax import sparse_kernel

DEFAULTS = dict(n_iter=7, r=0.5, share=1.0, gamma=1e-2, alpha=2e-3, threshold=0.05,
                diagonal=True, window=0, pedestal=0.0, soften=0.0, hr_edges=0, hr_steps=1.0,
                hr_levels=0)
"""The estimator's settings (:func:`estimate_lr_kernel`), measured in docs/results.md."""


def lr_support(size: int, scale: int) -> int:
  """The LR-scale support for an HR support ``size``: ⌈size/s⌉, odd."""
  return -(-size // scale) | 1


def pyramid_sizes(n: int) -> list[int]:
  """Odd kernel supports from 3 up to ``n``, each about √2 times the one before."""
  out = [n]
  while out[-1] > 3:
    out.append(max(3, min(out[-1] - 2, int(round(out[-1] / np.sqrt(2))) | 1)))
  return out[::-1]


def shock_filter(x, *, sigma: float = 0.5, dt: float = 0.5, n_iter: int = 1) -> np.ndarray:
  """Gaussian smoothing (σ ``sigma``) then ``n_iter`` shock-filter steps
  ``x ← x − dt·sign(Δx)·|∇x|`` (Osher & Rudin): blurred edges become steps."""
  x = ndimage.gaussian_filter(np.asarray(x, np.float64), sigma)
  for _ in range(n_iter):
    gy, gx = np.gradient(x)
    x = x - dt * np.sign(ndimage.laplace(x)) * np.hypot(gx, gy)
  return x


def predict_edges(x, *, hr_edges: int = DEFAULTS['hr_edges'],
                  hr_steps: float = DEFAULTS['hr_steps']) -> np.ndarray:
  """The sharp image the kernel step fits against: :func:`shock_filter` of ``x``.

  With ``hr_edges`` = f > 1 the steps are predicted on a grid f times finer and
  averaged back over f×f blocks, as the LR grid sees an HR step edge: a ramp whose
  middle pixel holds the step's sub-pixel position, not a step between two pixels.
  ``x`` is upsampled by cubic splines (pixel areas aligned), smoothed and
  shock-filtered at that scale (σ 0.5·f fine px, ``round(hr_steps·f)`` steps of
  dt 0.5, so that ``hr_steps`` 1 moves an edge about as far as the LR filter's one
  step), and block-averaged.
  """
  if hr_edges <= 1:
    return shock_filter(x)
  f, x = int(hr_edges), np.asarray(x, np.float64)
  h, w = x.shape
  up = ndimage.zoom(x, f, order=3, mode='reflect', grid_mode=True)
  up = shock_filter(up, sigma=0.5 * f, n_iter=max(1, int(round(hr_steps * f))))
  return up.reshape(h, f, w, f).mean((1, 3))        # zoom gives exactly (h·f, w·f)


def gradients(x) -> tuple[np.ndarray, np.ndarray]:
  """Forward differences along columns and rows, zero at the last column / row."""
  x = np.asarray(x, np.float64)
  return (np.diff(x, axis=1, append=x[:, -1:]), np.diff(x, axis=0, append=x[-1:, :]))


def select_gradients(x, n: int, r: float, share: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """``gradients(x)`` with all but the largest ones zeroed.

  In each of four gradient-orientation bins the ``r·√(N·n²)`` largest
  magnitudes are kept (N = x.size; Cho & Lee's rule), so that every edge
  direction constrains the n×n kernel; but at most ``share``·N/4 per bin
  (on small images the rule alone keeps most pixels).
  """
  gx, gy = gradients(x)
  mag = np.hypot(gx, gy).ravel()
  bins = np.minimum((np.mod(np.arctan2(gy, gx), np.pi) / (np.pi / 4)).astype(int), 3).ravel()
  keep = max(1, int(min(r * np.sqrt(x.size * n * n), share * x.size / 4)))
  mask = np.zeros(mag.shape, bool)
  for b in range(4):
    idx = np.flatnonzero((bins == b) & (mag > 0))
    mask[idx[np.argsort(mag[idx])[::-1][:keep]]] = True
  mask = mask.reshape(x.shape)
  return gx * mask, gy * mask


def fit_kernel(px, py, y, n: int, *, gamma: float = DEFAULTS['gamma'],
               threshold: float = DEFAULTS['threshold'],
               diagonal: bool = DEFAULTS['diagonal'],
               soften: float = DEFAULTS['soften']) -> np.ndarray:
  """The kernel step: ``min_k ‖k ⊛ px − ∂_x y‖² + ‖k ⊛ py − ∂_y y‖² + γ‖k‖²``, cleaned.

  ``k ⊛`` is :func:`kfjax.degradation.downscale` at scale 1 (through
  :func:`kfjax.sparse_kernel.patch_matrix`); γ is relative to the mean diagonal
  of the data term. Returns an (n, n) float64 kernel summing to 1.

  ``soften`` > 0 blurs the predicted gradients by a Gaussian of that σ (pixels)
  first. The sharp image the LR grid sees is the HR image's s×s block means, whose
  edges are about one LR pixel soft where the shock filter predicts steps; fitted
  to steps, the kernel absorbs that softness and comes out wider than the truth's
  block sums (by ~0.2 px² in variance on blind144 full mini; docs/results.md,
  "Soft edges").
  """
  ata, atb = 0.0, 0.0
  if soften > 0:
    px, py = ndimage.gaussian_filter(px, soften), ndimage.gaussian_filter(py, soften)
  for p, d in zip((px, py), gradients(y)):
    a = sparse_kernel.patch_matrix(p, n, 1, d.shape).reshape(-1, n * n)
    ata = ata + a.T @ a
    atb = atb + a.T @ d.ravel()
  unit = np.trace(ata) / (n * n) or 1.0
  k = np.linalg.solve(ata + gamma * unit * np.eye(n * n), atb).reshape(n, n)
  return sparse_kernel.clean_kernel(k, threshold, diagonal=diagonal)


def remove_pedestal(kernel, pedestal: float) -> np.ndarray:
  """``max(k − pedestal·max k, 0)``, normalised: a soft threshold of the kernel.

  The least-squares kernel step leaves a low pedestal of taps around the
  kernel. Subtracting it sharpens a compact kernel (up to +2 dB on Levin k1),
  but it also fades the faint segments of a long path (−1.7 dB on Levin k7 at
  0.05), so the estimator leaves it off by default (docs/results.md,
  "Cleaning the edge kernel").
  """
  k = np.maximum(np.asarray(kernel, np.float64) - pedestal * np.max(kernel), 0.0)
  return k / k.sum()


def _otf(kernel, shape) -> np.ndarray:
  """The transfer function of ``k ⊛`` (scale-1 downscale, periodic) on ``shape``."""
  n = kernel.shape[0]
  p = np.zeros(shape)
  p[:n, :n] = kernel
  return np.conj(np.fft.fft2(np.roll(p, (-(n // 2), -(n // 2)), (0, 1))))


def deconvolve(y, kernel, alpha: float = DEFAULTS['alpha']) -> np.ndarray:
  """The image step: ``argmin_x ‖k ⊛ x − y‖² + α‖∇x‖²``, by FFT.

  ``y`` is mirror-padded by twice the kernel support first, so the periodic
  solution's wrap-around falls in the padding, which is cropped off.
  """
  pad = 2 * kernel.shape[0]
  yp = np.pad(np.asarray(y, np.float64), pad, mode='symmetric')
  k_f = _otf(kernel, yp.shape)
  d = np.zeros(yp.shape)
  d[0, 0], d[0, 1], d[1, 0] = 2.0, -1.0, -1.0      # |D_x|² + |D_y|² = 2·(2 − cos − cos)
  reg = np.real(np.fft.fft2(d)) * 2.0
  x = np.conj(k_f) * np.fft.fft2(yp) / (np.abs(k_f) ** 2 + alpha * reg)
  return np.real(np.fft.ifft2(x))[pad:-pad, pad:-pad]


def estimate_lr_kernel(lr01, n: int, *, n_iter: int = DEFAULTS['n_iter'],
                       r: float = DEFAULTS['r'], share: float = DEFAULTS['share'],
                       gamma: float = DEFAULTS['gamma'],
                       alpha: float = DEFAULTS['alpha'],
                       threshold: float = DEFAULTS['threshold'],
                       diagonal: bool = DEFAULTS['diagonal'],
                       window: int = DEFAULTS['window'],
                       pedestal: float = DEFAULTS['pedestal'],
                       soften: float = DEFAULTS['soften'],
                       hr_edges: int = DEFAULTS['hr_edges'],
                       hr_steps: float = DEFAULTS['hr_steps'],
                       hr_levels: int = DEFAULTS['hr_levels']) -> np.ndarray:
  """The (n, n) LR-scale blur of an LR image, blind (module docstring).

  Args:
    lr01: (h, w, C) LR image in [0, 1] (C = 1 or 3), or a 2-D luma image.
    n: the kernel's support in LR pixels (odd).
    n_iter: rounds per pyramid level; the selection keeps 1/0.9^i times as
      many gradients in round i.
    r, share, gamma, alpha, threshold, diagonal, soften: :func:`select_gradients`,
      :func:`fit_kernel`, :func:`deconvolve`.
    window: estimate on the centre window×window LR pixels at most; 0 = the
      whole image.
    pedestal: :func:`remove_pedestal` on the final kernel (0 = off).
    hr_edges, hr_steps: :func:`predict_edges`.
    hr_levels: with ``hr_edges``, predict at the finer scale only on the last
      ``hr_levels`` pyramid levels, the plain steps before (0 = every level).

  Returns:
    (n, n) float64 kernel summing to 1, in the forward model's convention.
  """
  y = np.asarray(lr01, np.float64)
  y = sparse_kernel.luma(y) if y.ndim == 3 else y
  if window > 0:
    top, left, h, w = io.center_box(*y.shape, window)
    y = y[top:top + h, left:left + w]
  kernel, x = None, None
  sizes = pyramid_sizes(n)
  for level, size in enumerate(sizes):
    hr = hr_edges if hr_levels <= 0 or level >= len(sizes) - hr_levels else 0
    f = size / n
    ys = y if f == 1 else ndimage.zoom(ndimage.gaussian_filter(y, 0.5 * (1 / f - 1)), f,
                                       order=3)
    if kernel is None:
      kernel = np.zeros((size, size))
      kernel[size // 2, size // 2] = 1.0
      kernel = ndimage.gaussian_filter(kernel, 0.7)
      kernel /= kernel.sum()
      x = ys
    else:
      kernel = sparse_kernel.grow_kernel(kernel, size)
      x = ndimage.zoom(x, np.array(ys.shape) / np.array(x.shape), order=3)
    for i in range(n_iter):
      edges = predict_edges(x, hr_edges=hr, hr_steps=hr_steps)
      px, py = select_gradients(edges, size, r / 0.9 ** i, share / 0.9 ** i)
      kernel = fit_kernel(px, py, ys, size, gamma=gamma, threshold=threshold,
                          diagonal=diagonal, soften=soften)
      x = deconvolve(ys, kernel, alpha)
  return remove_pedestal(kernel, pedestal) if pedestal > 0 else kernel


def estimate_kernel(lr01, scale: int, size: int, *, lift_power: float = 0.0,
                    **settings) -> np.ndarray:
  """The (size, size) HR kernel: :func:`estimate_lr_kernel` (support :func:`lr_support`),
  lifted with the same s×s block sums (:func:`kfjax.kernels.lift_lr_kernel`: spread evenly
  for ``lift_power`` 0, along its interpolant for > 0) and centred for ``scale``
  (:func:`kfjax.kernels.place_lr_kernel`). Returns a float32 kernel summing to 1."""
  k_lr = estimate_lr_kernel(lr01, lr_support(size, scale), **settings)
  return kernels.place_lr_kernel(k_lr, scale, size, power=lift_power)
