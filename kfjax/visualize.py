"""Pictures for people: enlarged kernels, kernel grids and side-by-side reports.

Everything returns float RGB arrays in [0, 1], to be written with
:func:`kfjax.io.write_image`.
"""

from __future__ import annotations

import numpy as np


def kernel_image(kernel, size: int | None = None) -> np.ndarray:
  """A (size, size, 3) picture of a kernel: scaled to its max, nearest-neighbour enlarged.

  Positive taps are white-hot (black → white); the few negative taps a kernel
  may have show as black. ``size`` defaults to 8 px per tap.
  """
  k = np.asarray(kernel, np.float64)
  k = np.clip(k / max(k.max(), 1e-12), 0.0, 1.0)
  size = size or 8 * k.shape[0]
  idx = np.minimum((np.arange(size) * k.shape[0]) // size, k.shape[0] - 1)
  big = k[np.ix_(idx, idx)]
  return np.repeat(big[:, :, None], 3, axis=2).astype(np.float32)


def _pad_to(img, h, w, value=1.0):
  out = np.full((h, w, 3), value, np.float32)
  out[: img.shape[0], : img.shape[1]] = img
  return out


def hstack(images, gap: int = 8) -> np.ndarray:
  """Places RGB images side by side on white, top-aligned, ``gap`` px apart."""
  h = max(i.shape[0] for i in images)
  parts = []
  for i, img in enumerate(images):
    parts.append(_pad_to(np.asarray(img, np.float32), h, img.shape[1]))
    if i < len(images) - 1:
      parts.append(np.ones((h, gap, 3), np.float32))
  return np.concatenate(parts, axis=1)


def vstack(images, gap: int = 8) -> np.ndarray:
  """Stacks RGB images vertically on white, left-aligned, ``gap`` px apart."""
  w = max(i.shape[1] for i in images)
  parts = []
  for i, img in enumerate(images):
    parts.append(_pad_to(np.asarray(img, np.float32), img.shape[0], w))
    if i < len(images) - 1:
      parts.append(np.ones((gap, w, 3), np.float32))
  return np.concatenate(parts, axis=0)


def nearest_upscale(img, scale: int) -> np.ndarray:
  """Pixel replication by an integer factor (shows the LR input at HR size)."""
  return np.repeat(np.repeat(np.asarray(img, np.float32), scale, 0), scale, 1)


def report(lr, bicubic, hr, kernel, *, scale: int, gt=None, gt_kernel=None) -> np.ndarray:
  """Side-by-side report: LR (nearest), bicubic, kfjax [, ground truth], then the kernel(s).

  The kernel column shows the estimate, and below it the ground truth when given.
  """
  panels = [nearest_upscale(lr, scale), bicubic, hr] + ([gt] if gt is not None else [])
  side = min(hr.shape[0], 256)
  kernels = [kernel_image(kernel, side)]
  if gt_kernel is not None:
    kernels.append(kernel_image(gt_kernel, side))
  return hstack([np.clip(p, 0, 1) for p in panels] + [vstack(kernels)])
