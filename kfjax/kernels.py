"""Kernel library: blind144's synthetic kernels, camera shake, loading and placement.

All functions return float32 numpy arrays that are ≥ 0 (unless loaded from a
file that has negative taps) and sum to 1.

Index conventions: a (K, K) kernel is indexed ``k[row, col]``, rows going
down, and is applied by :func:`kfjax.degradation.downscale` as a correlation.
The synthetic kernels are built with their centre of mass on the centre pixel
``(K//2, K//2)``; :func:`align_for_scale` then moves them to where the bicubic
baseline expects them.

Synthetic kernels of blind144 (all on a 24×24 support; fixed, do not change
without renaming the benchmark):

=================  ==========================================================
``l_shape``        two arms 11 px long and 2 px thick meeting at a corner
                   (an "L": vertical arm on the left, horizontal arm at the
                   bottom), uniform weight, 40 px in total.
``filled_square``  a 9×9 uniform square with sharp edges.
``hollow_square``  a 13×13 square outline with 2-px walls (9×9 hole),
                   uniform weight, 88 px.
``aniso_gaussian`` σ_major = 4.0 px, σ_minor = 1.5 px, major axis at
                   θ = 30° counter-clockwise from the horizontal (image
                   rows point down, so "up" is −row), sampled at pixel
                   centres.
=================  ==========================================================

In the benchmark these 24×24 shapes (and the 8 Levin kernels resized to
24×24) are moved by :func:`align_for_scale` onto one common canvas that loses
no mass: 33×33 at x4 (Levin k6 is far off-centre in its own support).
"""

from __future__ import annotations

import os
import re

import jax
import numpy as np
import scipy.io
import scipy.ndimage

from kfjax import degradation

SUPPORT = 24   # blind144's kernel support [paper: Levin kernels resized to 24×24]


def _finish(k, size):
  """Clips ≥ 0, recentres on the centre pixel and normalises; float32."""
  k = np.clip(np.asarray(k, np.float64), 0.0, None)
  k = degradation.center_kernel(k / k.sum(), size)
  return (k / k.sum()).astype(np.float32)


# ----------------------------------------------------------------------------
# blind144's four synthetic kernels
# ----------------------------------------------------------------------------


def l_shape(size: int = SUPPORT, *, arm: int = 11, thickness: int = 2) -> np.ndarray:
  """An L shape: two uniform arms of ``arm`` × ``thickness`` px sharing a corner.

  The vertical arm is on the left, the horizontal arm at the bottom. blind144
  uses the defaults: 11-px arms, 2 px thick (40 px in all), on 24×24.
  """
  k = np.zeros((size, size))
  r0 = c0 = (size - arm) // 2
  k[r0: r0 + arm, c0: c0 + thickness] = 1.0                       # vertical arm
  k[r0 + arm - thickness: r0 + arm, c0: c0 + arm] = 1.0           # horizontal arm
  return _finish(k, size)


def filled_square(size: int = SUPPORT, *, side: int = 9) -> np.ndarray:
  """A uniform ``side`` × ``side`` square with sharp edges (blind144: 9×9 on 24×24)."""
  k = np.zeros((size, size))
  r0 = size // 2 - side // 2
  k[r0: r0 + side, r0: r0 + side] = 1.0
  return _finish(k, size)


def hollow_square(size: int = SUPPORT, *, side: int = 13, wall: int = 2) -> np.ndarray:
  """A uniform square outline, ``side`` px wide with ``wall``-px walls.

  blind144: 13×13 with 2-px walls (a 9×9 hole), on 24×24.
  """
  k = np.zeros((size, size))
  r0 = size // 2 - side // 2
  k[r0: r0 + side, r0: r0 + side] = 1.0
  k[r0 + wall: r0 + side - wall, r0 + wall: r0 + side - wall] = 0.0
  return _finish(k, size)


def anisotropic_gaussian(size: int = SUPPORT, *, sigmas=(4.0, 1.5),
                         theta: float = 30.0) -> np.ndarray:
  """An anisotropic Gaussian sampled at pixel centres, centred on ``(K//2, K//2)``.

  Args:
    size: support K.
    sigmas: (σ along the major axis, σ along the minor axis) in pixels.
      blind144: (4.0, 1.5).
    theta: angle of the major axis in degrees, counter-clockwise from the
      horizontal as seen on screen (rows point down). blind144: 30°.
  """
  return _finish(gaussian_samples(size, sigmas, theta), size)


def gaussian_samples(size: int, sigmas, theta: float, offset: float = 0.0) -> np.ndarray:
  """exp(−u²/2σ₁² − v²/2σ₂²) at the pixel centres of a size×size grid (float64, not normalised).

  The centre is ``(size//2 + offset, size//2 + offset)`` (row, col); u runs along
  the major axis at ``theta`` degrees counter-clockwise from the horizontal as seen
  on screen, v across it (see :func:`anisotropic_gaussian`).
  """
  c = size // 2 + offset
  rows, cols = np.indices((size, size), dtype=np.float64)
  x, y = cols - c, -(rows - c)                                     # y points up
  t = np.deg2rad(theta)
  u = x * np.cos(t) + y * np.sin(t)                                # along the major axis
  v = -x * np.sin(t) + y * np.cos(t)
  return np.exp(-0.5 * ((u / sigmas[0]) ** 2 + (v / sigmas[1]) ** 2))


def synthetic_kernels(size: int = SUPPORT) -> list[tuple[str, np.ndarray]]:
  """blind144's four synthetic kernels, in benchmark order, as (name, kernel)."""
  return [('l_shape', l_shape(size)), ('filled_square', filled_square(size)),
          ('hollow_square', hollow_square(size)),
          ('aniso_gaussian', anisotropic_gaussian(size))]


# ----------------------------------------------------------------------------
# Procedural camera shake
# ----------------------------------------------------------------------------


def camera_shake(size: int = SUPPORT, seed: int = 0, *, n_steps: int = 64,
                 momentum: float = 0.85, extent: float = 0.65,
                 blur: float = 0.5) -> np.ndarray:
  """A smooth random camera-shake kernel (deterministic for a seed).

  The camera path is a 2-D random walk with momentum: at every step the
  velocity becomes ``momentum · v + (1 − momentum) · a`` with a Gaussian
  acceleration ``a``, plus a weak pull back towards the start, so the path
  curves smoothly and occasionally turns. The path is scaled (keeping its
  aspect) so that its longer side spans ``extent · (size − 1)`` px, then
  rasterised with bilinear splats at 8 sub-steps per step. Equal time per
  step means slow parts of the path collect more exposure, as in a real
  shake. Finally a Gaussian blur of σ = ``blur`` px, recentring on the centre
  of mass and normalisation to sum 1.

  Args:
    size: kernel support K.
    seed: random seed.
    n_steps: number of walk steps.
    momentum: velocity persistence in [0, 1).
    extent: fraction of the support that the path's longer side spans.
    blur: σ of the final Gaussian blur in pixels (0 for none).
  """
  rng = np.random.default_rng(seed)
  pos = np.zeros(2)
  vel = rng.normal(size=2)
  path = [pos.copy()]
  for _ in range(n_steps):
    vel = momentum * vel + (1.0 - momentum) * rng.normal(size=2) * 3.0 - 0.02 * pos
    pos = pos + vel
    path.append(pos.copy())
  path = np.asarray(path)
  # Sub-sample linearly so consecutive splats touch.
  sub = 8
  t = np.linspace(0.0, len(path) - 1.0, (len(path) - 1) * sub + 1)
  path = np.stack([np.interp(t, np.arange(len(path)), path[:, i]) for i in range(2)], 1)
  span = (path.max(0) - path.min(0)).max()
  path = (path - (path.max(0) + path.min(0)) / 2) * (extent * (size - 1) / max(span, 1e-6))
  path = path + (size - 1) / 2.0
  k = np.zeros((size + 1, size + 1))
  r0, c0 = np.floor(path[:, 0]).astype(int), np.floor(path[:, 1]).astype(int)
  fr, fc = path[:, 0] - r0, path[:, 1] - c0
  for dr, wr in ((0, 1 - fr), (1, fr)):
    for dc, wc in ((0, 1 - fc), (1, fc)):
      np.add.at(k, (r0 + dr, c0 + dc), wr * wc)
  k = k[:size, :size]
  if blur > 0:
    k = scipy.ndimage.gaussian_filter(k, blur, mode='constant')
  return _finish(k, size)


# ----------------------------------------------------------------------------
# Resizing and placement
# ----------------------------------------------------------------------------


def resize_kernel(kernel, size: int) -> np.ndarray:
  """Resamples a kernel's *shape* to a (size, size) support, e.g. Levin 13..27 px → 24.

  Interpolation: ``jax.image.resize(..., method='linear', antialias=True)``,
  i.e. bilinear with half-pixel centres (the whole K×K support maps onto the
  whole size×size support, so the kernel's geometry scales by size/K) and a
  correspondingly widened triangle filter when shrinking. The result is
  clipped to ≥ 0 and renormalised to sum 1. Non-square inputs are first
  zero-padded to square.
  """
  k = np.asarray(kernel, np.float64)
  if k.ndim != 2:
    raise ValueError(f'expected a 2-D kernel, got shape {k.shape}')
  if k.shape[0] != k.shape[1]:
    k = degradation.pad_or_crop(k, max(k.shape))
  if k.shape[0] != size:
    k = np.asarray(jax.image.resize(k.astype(np.float32), (size, size),
                                    method='linear', antialias=True), np.float64)
  k = np.clip(k, 0.0, None)
  return (k / k.sum()).astype(np.float32)


def to_lr_scale(kernel, scale: int) -> np.ndarray:
  """What the LR pixel grid sees of an HR kernel: its taps summed over s×s blocks.

  Block (i, j) holds taps ``i·s … i·s + s − 1`` (rows) and likewise for columns,
  the support zero-padded at the end to a multiple of s. A kernel that
  :func:`lift_lr_kernel` made comes back unchanged. Returns (⌈K/s⌉, ⌈K/s⌉),
  summing to the kernel's sum.
  """
  k = np.asarray(kernel, np.float64)
  n = -(-k.shape[0] // scale)
  k = np.pad(k, ((0, n * scale - k.shape[0]), (0, n * scale - k.shape[1])))
  return k.reshape(n, scale, n, scale).sum((1, 3))


def lift_lr_kernel(kernel_lr, scale: int, *, power: float = 0.0) -> np.ndarray:
  """An LR-scale kernel as an HR one, with the same s×s block sums.

  ``power`` 0: each tap spread evenly over its s×s block. With this (s·n, s·n)
  kernel, :func:`kfjax.degradation.downscale` is the n×n LR-scale kernel
  applied to the HR image's s×s block means: a blur that only the LR grid
  resolves (``docs/results.md``, "What the LR grid sees of the kernel").

  ``power`` > 0: within each block the taps follow the LR kernel's cubic-spline
  interpolant at the HR taps' positions, clipped to ≥ 0 and raised to
  ``power``, rescaled so that the block keeps its sum. A thin path's mass then
  leans towards its neighbouring blocks' mass instead of filling the block,
  which is what an even spread adds to the kernel's width (about (s² − 1)/12 HR
  px² per axis). Our addition: with the true kernel's block sums, power 2
  recovers a third of what the even spread costs the committed final step on
  blind144 full mini (docs/results.md, "A sharper lift"). Blocks where the
  interpolant vanishes keep the even spread.

  Place the result with :func:`align_for_scale`.
  """
  k = np.asarray(kernel_lr, np.float64)
  even = np.kron(k, np.ones((scale, scale))) / scale ** 2
  if power <= 0:
    return even
  t = (np.arange(k.shape[0] * scale) - (scale - 1) / 2) / scale    # HR taps in LR units
  rows, cols = np.meshgrid(t, t, indexing='ij')
  shape = np.clip(scipy.ndimage.map_coordinates(k, [rows, cols], order=3,
                                                mode='grid-constant'), 0.0, None) ** power
  sums = to_lr_scale(shape, scale)
  ok = sums > 1e-12 * sums.max()
  block = np.ones((scale, scale))
  gain = np.divide(k, sums, out=np.zeros_like(k), where=ok)
  return shape * np.kron(gain, block) + even * np.kron(~ok, block)


def place_lr_kernel(kernel_lr, scale: int, size: int, *, power: float = 0.0) -> np.ndarray:
  """An LR-scale kernel as a (size, size) HR kernel: :func:`lift_lr_kernel` (``power``),
  then :func:`align_for_scale` for ``scale`` (mass off the support allowed). Returns a
  float32 kernel summing to 1."""
  return align_for_scale(lift_lr_kernel(kernel_lr, scale, power=power), size, scale,
                         max_loss=1.0)


def second_moments(kernel) -> tuple[np.ndarray, np.ndarray]:
  """A kernel's centre of mass (row, col) and 2×2 second-moment matrix about it.

  The kernel is clipped to ≥ 0 and normalised first.
  """
  k = np.clip(np.asarray(kernel, np.float64), 0.0, None)
  k = k / k.sum()
  centre = np.asarray(degradation.center_of_mass(k))
  d = np.stack(np.indices(k.shape, dtype=np.float64), -1) - centre
  return centre, np.einsum('hw,hwi,hwj->ij', k, d, d)


def principal_spread(kernel):
  """A kernel's spread: (σ_minor, σ_major) in pixels, and its principal axes.

  The square roots of the eigenvalues of the second-moment matrix about the
  centre of mass (ascending; :func:`second_moments`), and the matching unit
  eigenvectors as the columns of a (2, 2) array (row, column components).
  """
  var, axes = np.linalg.eigh(second_moments(kernel)[1])
  return np.sqrt(np.clip(var, 0.0, None)), axes


def moment_gaussian(kernel) -> np.ndarray:
  """The Gaussian with the kernel's centre of mass and second moments, on its support.

  Sampled at the pixel centres, normalised to sum 1 (float64): what is left of
  a kernel once its shape beyond position, size and orientation is removed.
  """
  centre, cov = second_moments(kernel)
  d = np.stack(np.indices(np.shape(kernel), dtype=np.float64), -1) - centre
  g = np.exp(-0.5 * np.einsum('...i,ij,...j->...', d, np.linalg.inv(cov), d))
  return g / g.sum()


def cosine(kernel_a, kernel_b) -> float:
  """The cosine similarity ⟨a, b⟩ / (‖a‖ ‖b‖) of two same-size kernels, as placed.

  1 for kernels equal up to a factor, near 0 for ones that share little mass.
  No shift is applied: both must be in one convention (e.g. both centred for the
  scale by :func:`align_for_scale`).
  """
  a = np.asarray(kernel_a, np.float64)
  b = np.asarray(kernel_b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f'kernels of different shapes {a.shape} and {b.shape}')
  return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def shift_to(kernel, target) -> np.ndarray:
  """The kernel moved so that its centre of mass is ``target`` (row, col), sub-pixel.

  Bilinear (so a fractional shift blurs it slightly), zero outside the
  support, clipped to ≥ 0 and normalised to sum 1 (float64). For whole-pixel
  moves without resampling see :func:`kfjax.degradation.center_kernel`.
  """
  k = np.clip(np.asarray(kernel, np.float64), 0.0, None)
  move = np.subtract(target, degradation.center_of_mass(k))
  out = np.clip(scipy.ndimage.shift(k, move, order=1, mode='constant'), 0.0, None)
  return out / out.sum()


def scale_kernel(kernel, minor: float, major: float | None = None) -> np.ndarray:
  """Stretches a kernel's shape about its centre of mass, on the same support.

  ×``minor`` along its minor principal axis and ×``major`` (default: the
  same, an isotropic scaling) along its major one (:func:`principal_spread`);
  bilinear, zero outside the support, clipped to ≥ 0 and normalised to sum 1
  (float32). The centre of mass stays put, so a kernel aligned by
  :func:`align_for_scale` stays aligned (up to what the support cuts off).
  """
  k = np.asarray(kernel, np.float64)
  major = minor if major is None else major
  cy, cx = degradation.center_of_mass(k)
  _, axes = principal_spread(k)
  yy, xx = np.mgrid[:k.shape[0], :k.shape[1]].astype(np.float64)
  along = np.stack([yy - cy, xx - cx], -1) @ axes / np.array([minor, major])
  src = along @ axes.T                                # each output tap's source position
  out = np.clip(scipy.ndimage.map_coordinates(k, [cy + src[..., 0], cx + src[..., 1]], order=1,
                                              mode='constant'), 0.0, None)
  return (out / out.sum()).astype(np.float32)


def _blend_inputs(kernel_a, kernel_b, weight: float):
  """Both kernels clipped to ≥ 0 (float64), after checking the weight and their supports."""
  if not 0.0 <= weight <= 1.0:
    raise ValueError(f'blend weight must be in [0, 1], got {weight}')
  a, b = (np.clip(np.asarray(k, np.float64), 0.0, None) for k in (kernel_a, kernel_b))
  if a.shape != b.shape:
    raise ValueError(f'kernels of different supports: {a.shape} and {b.shape}')
  return a, b


def geometric_blend(kernel_a, kernel_b, weight: float = 0.5) -> np.ndarray:
  """``a^(1 − weight) · b^weight``, normalised to sum 1 (float32): non-zero only where both are.

  Both are clipped to ≥ 0 first; they must share a support. Weight ½ is the geometric mean.
  """
  a, b = _blend_inputs(kernel_a, kernel_b, weight)
  k = a ** (1.0 - weight) * b ** weight
  if not k.sum() > 0:
    raise ValueError('the two kernels share no support')
  return (k / k.sum()).astype(np.float32)


def blend(kernel_a, kernel_b, weight: float) -> np.ndarray:
  """The mixture ``(1 − weight)·a + weight·b`` of two kernels, normalised to sum 1 (float32).

  Both are clipped to ≥ 0 and normalised first; they must share a support.
  Used by ``phase2.kernel_blend`` (:func:`kfjax.pipeline.blind_kernel`).
  """
  a, b = _blend_inputs(kernel_a, kernel_b, weight)
  k = (1.0 - weight) * a / a.sum() + weight * b / b.sum()
  return (k / k.sum()).astype(np.float32)


def unblend(mixture, other, weight: float) -> np.ndarray:
  """The kernel a with ``blend(a, other, weight) == mixture`` (``weight`` < 1).

  ``(mixture − weight·other) / (1 − weight)`` with both normalised, then
  clipped to ≥ 0 and normalised (float64): recovers the INR's kernel from a
  saved ``phase2.kernel_blend`` mixture.
  """
  if not 0.0 <= weight < 1.0:
    raise ValueError(f'unblend weight must be in [0, 1), got {weight}')
  m, o = (np.asarray(k, np.float64) for k in (mixture, other))
  a = np.clip((m / m.sum() - weight * o / o.sum()) / (1.0 - weight), 0.0, None)
  return a / a.sum()


def scale_offset(scale: int) -> float:
  """(s − 1)/2: where, relative to the HR pixel ``i·s``, LR pixel i is centred.

  With MATLAB/``jax.image.resize`` pixel-centre alignment, LR pixel i covers
  HR pixels ``i·s … i·s + s − 1``, whose centre is ``i·s + (s − 1)/2``.
  """
  return (scale - 1) / 2.0


def _integer_target(k, size, scale):
  """Where the centre of mass goes: moved by a whole-pixel shift, ties rounded up.

  ``center_kernel`` maps kernel index K//2 onto canvas index size//2 and then
  shifts by the rounded distance to the target; passing an exact
  ``com + shift`` target makes that shift ours, so ties (a symmetric kernel at
  even s) are broken the same way on every machine.
  """
  com = np.asarray(degradation.center_of_mass(k)) + (size // 2 - k.shape[0] // 2)
  want = size // 2 + scale_offset(scale)
  shift = np.floor(np.round(want - com, 6) + 0.5)
  return tuple(float(c) for c in com + shift)


def align_for_scale(kernel, size: int | None, scale: int, *,
                    max_loss: float = 1e-6) -> np.ndarray:
  """Places a kernel on a (size, size) support, aligned for the bicubic baseline.

  Why: :func:`kfjax.degradation.downscale` makes LR pixel i from the HR pixels
  ``i·s + p − K//2`` weighted by ``k[p]``, so it is centred at HR position
  ``i·s + (com − K//2)``, with ``com`` the kernel's centre of mass. The
  bicubic baseline (and every pixel-centre resizer) assumes LR pixel i is
  centred at ``i·s + (s − 1)/2`` (:func:`scale_offset`). A GT kernel whose
  centre of mass sits at ``K//2 + (s − 1)/2`` therefore makes bicubic aligned
  with the GT HR: no sub-pixel shift that would cost the baseline PSNR for
  no reason, and no shift between the GT HR and any kernel-aware estimate.

  The kernel is moved by a whole-pixel shift (sub-pixel resampling would
  change its shape); the shift is the integer nearest to
  ``K//2 + (s − 1)/2 − com`` on each axis, so the centre of mass lands within
  half a pixel of the target; ties go up (a kernel centred on ``K//2`` moves
  by +0 px at x1, +1 at x2, +1 at x3, +2 at x4).

  Args:
    kernel: 2-D kernel.
    size: output support K; ``None`` picks :func:`aligned_support`, the
      smallest support that loses no mass.
    scale: SR factor s.
    max_loss: raise ``ValueError`` if more than this fraction of the mass
      would be pushed off the support (choose a larger ``size``).

  Returns:
    (size, size) float32 kernel summing to 1.
  """
  k = np.asarray(kernel, np.float64)
  k = k / k.sum()
  if size is None:
    size = aligned_support(k, scale)
  out = degradation.center_kernel(k, size, target=_integer_target(k, size, scale))
  kept = out.sum()
  if 1.0 - kept > max_loss:
    raise ValueError(f'aligning a {k.shape} kernel on a {size}x{size} support for x{scale} '
                     f'drops {100 * (1 - kept):.3g}% of its mass; use a larger support')
  return (out / kept).astype(np.float32)


def aligned_support(kernel, scale: int, min_size: int = 1, *, tol: float = 1e-6) -> int:
  """The smallest support C ≥ max(K, min_size) on which :func:`align_for_scale` loses no mass.

  Off-centre kernels (e.g. Levin k6, whose centre of mass is far from its
  middle) need a support larger than their own to be shifted into place:
  blind144's 24×24 kernels need 33×33 at x4.
  """
  k = np.asarray(kernel, np.float64)
  k = k / k.sum()
  size = max(max(k.shape), min_size)
  while True:
    target = _integer_target(k, size, scale)
    if 1.0 - degradation.center_kernel(k, size, target=target).sum() <= tol:
      return size
    size += 1


def align_all(named_kernels, scale: int, min_size: int = 1):
  """Aligns (name, kernel) pairs for ``scale`` on one common, loss-free support.

  The support is the largest :func:`aligned_support` of the set (at least
  ``min_size``), so every kernel of a benchmark has the same shape.
  """
  named_kernels = list(named_kernels)
  size = max(aligned_support(k, scale, min_size) for _, k in named_kernels)
  return [(n, align_for_scale(k, size, scale)) for n, k in named_kernels]


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------


def _stack_from_array(arr, path, matlab: bool):
  """Turns a loaded array into a list of 2-D arrays."""
  if arr.dtype == object:                       # a MATLAB cell array of kernels
    out = []
    for item in arr.ravel():
      out.extend(_stack_from_array(np.asarray(item), path, matlab))
    return out
  if not np.issubdtype(arr.dtype, np.number):
    raise ValueError(f'{path}: kernel array has non-numeric dtype {arr.dtype}')
  if arr.ndim == 2:
    return [arr]
  if arr.ndim == 3:
    # numpy stacks are (N, K, K); MATLAB stacks are usually (K, K, N).
    if matlab and arr.shape[0] == arr.shape[1] and arr.shape[2] != arr.shape[0]:
      arr = np.moveaxis(arr, 2, 0)
    return list(arr)
  raise ValueError(f'{path}: expected a 2-D kernel or a 3-D stack, got shape {arr.shape}')


def _mat_array(path):
  try:
    data = scipy.io.loadmat(path)
  except NotImplementedError as e:              # MATLAB v7.3 (HDF5)
    raise ValueError(f'{path}: MATLAB v7.3 (HDF5) .mat files are not supported; '
                     f'save as v5 or .npy ({e})') from None
  if 'Kernel' in data:
    return data['Kernel']
  for key, value in data.items():
    if key.startswith('__'):
      continue
    value = np.asarray(value)
    if value.dtype == object or (np.issubdtype(value.dtype, np.number) and value.ndim in (2, 3)):
      return value
  raise ValueError(f'{path}: no key "Kernel" and no 2-D/3-D numeric array in the .mat file')


def _normalise_loaded(k, path, index):
  k = np.asarray(k, np.float64)
  if k.ndim != 2 or min(k.shape) < 1:
    raise ValueError(f'{path}: kernel {index} has shape {k.shape}, expected 2-D')
  if not np.all(np.isfinite(k)):
    raise ValueError(f'{path}: kernel {index} has non-finite values')
  if k.shape[0] != k.shape[1]:
    k = degradation.pad_or_crop(k, max(k.shape))
  total = k.sum()
  if not total > 0:
    raise ValueError(f'{path}: kernel {index} sums to {total}, cannot normalise')
  return (k / total).astype(np.float32)


def load_kernels(path) -> list[tuple[str, np.ndarray]]:
  """Reads kernels from a .npy or .mat file.

  * ``.npy``: a 2-D kernel or an (N, K, K) stack.
  * ``.mat`` (v5): the variable ``Kernel`` if present, else the first 2-D/3-D
    numeric array (or cell array of kernels). A 3-D (K, K, N) MATLAB stack is
    read as N kernels.

  Kernels are zero-padded to square if needed and divided by their sum (not
  clipped: some published kernels have tiny negative taps).

  Returns:
    A list of (name, float32 kernel): the file stem for a single kernel,
    ``f'{stem}_{i}'`` (0-based ``i``) for each kernel of a stack.

  Raises:
    ValueError: naming the file, if it is missing, unreadable or holds no kernel.
  """
  path = os.fspath(path)
  stem, ext = os.path.splitext(os.path.basename(path))
  ext = ext.lower()
  if not os.path.isfile(path):
    raise ValueError(f'{path}: kernel file not found')
  if ext not in ('.npy', '.mat'):
    raise ValueError(f'{path}: unsupported kernel file type {ext!r} (use .npy or .mat)')
  try:
    if ext == '.npy':
      arr, matlab = np.load(path, allow_pickle=False), False
    else:
      arr, matlab = _mat_array(path), True
  except Exception as e:  # pylint: disable=broad-except
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if msg.startswith(path):
      raise ValueError(msg) from None
    raise ValueError(f'{path}: cannot read kernel file ({msg})') from None
  ks = _stack_from_array(np.asarray(arr), path, matlab)
  if not ks:
    raise ValueError(f'{path}: holds no kernel')
  if np.asarray(arr).ndim == 2 and len(ks) == 1:
    return [(stem, _normalise_loaded(ks[0], path, 0))]
  return [(f'{stem}_{i}', _normalise_loaded(k, path, i)) for i, k in enumerate(ks)]


def _natural_key(name):
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', name)]


def levin_kernels(data_dir) -> list[tuple[str, np.ndarray]]:
  """The 8 Levin et al. 2009 kernels at their native sizes (13..27 px).

  Args:
    data_dir: the shared data root (holding ``levin09_kernels/``) or the
      ``levin09_kernels`` folder itself.

  Returns:
    [('levin09_k1', k1), ..., ('levin09_k8', k8)], float32, each summing to 1.
  """
  d = os.fspath(data_dir)
  if os.path.isdir(os.path.join(d, 'levin09_kernels')):
    d = os.path.join(d, 'levin09_kernels')
  if not os.path.isdir(d):
    raise ValueError(f'{d}: Levin kernel folder not found')
  names = sorted((f for f in os.listdir(d) if re.fullmatch(r'levin09_k\d+\.npy', f)),
                 key=_natural_key)
  if len(names) != 8:
    raise ValueError(f'{d}: expected 8 levin09_k*.npy files, found {len(names)}')
  out = []
  for f in names:
    (_, k), = load_kernels(os.path.join(d, f))
    out.append((os.path.splitext(f)[0], k))
  return out


def blind144_shapes(data_dir, size: int = SUPPORT) -> list[tuple[str, np.ndarray]]:
  """blind144's 12 kernel shapes, in benchmark order, on a (size, size) support.

  The 8 Levin kernels resized to ``size`` (:func:`resize_kernel`), then the
  four synthetic kernels (:func:`synthetic_kernels`). Not yet aligned.
  """
  ks = [(n, resize_kernel(k, size)) for n, k in levin_kernels(data_dir)]
  return ks + synthetic_kernels(size)


def blind144_kernels(data_dir, scale: int = 4, size: int = SUPPORT):
  """blind144's 12 kernels, in benchmark order, aligned for ``scale``.

  :func:`blind144_shapes` placed with :func:`align_all` on one common support
  (33×33 at x4, because Levin k6 is far off-centre).
  """
  return align_all(blind144_shapes(data_dir, size), scale, size)
