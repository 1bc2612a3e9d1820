"""Benchmark construction (SPEC §4): plans the cases, then writes a benchmark folder.

A benchmark folder holds::

  manifest.json     {"name", "scale", "size", "seed", "command", "cases": [...]}
  lr/<id>.png       the LR input of each case (8-bit RGB)
  hr/<image>.png    the HR ground truth, one per image (8-bit RGB)
  kernels/<k>.npy   the GT kernel, one per kernel (float32, sums to 1)

with every case ``{"id", "image", "kernel", "scale", "lr", "hr", "kernel_path"}``
and paths relative to the folder. ``manifest.json`` is written last, so its
presence marks a complete build.

Synthetic cases (blind144, div2kfk, generic folders): the HR image is cropped
to a multiple of ``s`` (top-left, like :func:`kfjax.degradation.crop_to_multiple`)
or centre-cropped to ``crop × crop`` (``crop`` rounded down to a multiple of s);
the kernel is placed with :func:`kfjax.kernels.align_for_scale`; then
``LR = downscale(HR / 255, k, s)`` is rounded and clipped to 8 bits. Everything
is deterministic, so a second build is bit for bit the same (on the same
software stack).

Provided cases (div2krk): the LR PNG and GT kernel are used as they are, alpha
dropped. For ``crop`` the LR is centre-cropped to ``crop/s`` at an LR offset
``o`` and the HR to ``crop`` at ``s·o``, so the two stay aligned.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re

import jax.numpy as jnp
import numpy as np

from kfjax import degradation
from kfjax import io as kio
from kfjax import kernels as kernel_lib

NAMES = ('blind144', 'div2kfk', 'div2krk')
IMAGE_EXTS = kio.IMAGE_EXTENSIONS
N_BLIND144_IMAGES = 12


class BenchmarkError(ValueError):
  """A problem with the inputs of a benchmark build (reported in one line)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Case:
  """One planned benchmark case.

  Attributes:
    image: image name (file stem), also the HR file name in the benchmark.
    hr_path: source HR image file.
    kernel: kernel name, also the kernel file name in the benchmark.
    kernel_array: the GT kernel as it will be saved (already aligned for
      synthetic cases).
    lr_path: a provided LR image file (div2krk), or None to synthesise the LR.
  """
  image: str
  hr_path: str
  kernel: str
  kernel_array: np.ndarray
  lr_path: str | None = None

  @property
  def id(self) -> str:
    return f'{self.image}__{self.kernel}'


# ----------------------------------------------------------------------------
# Image I/O (uint8, exact)
# ----------------------------------------------------------------------------


def read_rgb_u8(path) -> np.ndarray:
  """Reads an image as (H, W, 3) uint8 with :func:`kfjax.io.read_image`.

  Alpha is dropped (an opaque alpha, as in DIV2KRK's LR PNGs, is simply
  removed), grey is repeated to RGB. ``round(x · 255)`` recovers 8-bit values
  exactly; deeper images are reduced to 8 bits.
  """
  try:
    img, _ = kio.read_image(path)
  except kio.InputError as e:
    raise BenchmarkError(str(e)) from None
  return np.round(img.astype(np.float64) * 255.0).astype(np.uint8)


def write_png_u8(path, img_u8) -> None:
  """Writes an (H, W, 3) uint8 image as PNG atomically (:func:`kfjax.io.write_image`)."""
  img = np.asarray(img_u8)
  if img.dtype != np.uint8:
    raise TypeError(f'expected uint8, got {img.dtype}')
  kio.write_image(path, img)


def _write_json(path, obj):
  kio.atomic_write_text(path, json.dumps(obj, indent=1) + '\n')


def quantise_u8(img01) -> np.ndarray:
  """Rounds a [0, 1] float image to uint8 (round half to even, then clip)."""
  return np.clip(np.round(np.asarray(img01, np.float64) * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------------


def _natural_key(name):
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', name)]


def _safe_name(name: str) -> str:
  return re.sub(r'[^A-Za-z0-9._-]', '_', name)


def list_images(folder) -> list[tuple[str, str]]:
  """(stem, path) of the image files in ``folder``, in natural (numeric) order."""
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    raise BenchmarkError(f'{folder}: image folder not found')
  files = [f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTS)
           and not f.startswith('.') and os.path.isfile(os.path.join(folder, f))]
  files.sort(key=_natural_key)
  out, seen = [], set()
  for f in files:
    stem = _safe_name(os.path.splitext(f)[0])
    if stem in seen:
      raise BenchmarkError(f'{folder}: two images share the name {stem!r}')
    seen.add(stem)
    out.append((stem, os.path.join(folder, f)))
  if not out:
    raise BenchmarkError(f'{folder}: no images ({", ".join(IMAGE_EXTS)})')
  return out


def _div2krk_dir(data_dir):
  d = os.path.join(os.fspath(data_dir), 'div2krk')
  if not os.path.isdir(os.path.join(d, 'gt')):
    raise BenchmarkError(f'{d}/gt: DIV2KRK ground-truth folder not found (check --data)')
  return d


def _levin_24(data_dir):
  try:
    return [(n, kernel_lib.resize_kernel(k, kernel_lib.SUPPORT))
            for n, k in kernel_lib.levin_kernels(data_dir)]
  except ValueError as e:
    raise BenchmarkError(f'{e} (check --data)') from None


def pair(n_images: int, n_kernels: int, pairing: str, seed: int) -> list[tuple[int, int]]:
  """(image index, kernel index) pairs.

  ``all``: every image with every kernel (image-major); ``diagonal``: image i
  with kernel i, for i < min(n_images, n_kernels); ``seeded``: every image
  with one kernel drawn uniformly by ``np.random.default_rng(seed)``.
  """
  if pairing == 'all':
    return [(i, j) for i in range(n_images) for j in range(n_kernels)]
  if pairing == 'diagonal':
    return [(i, i) for i in range(min(n_images, n_kernels))]
  if pairing == 'seeded':
    draws = np.random.default_rng(seed).integers(0, n_kernels, size=n_images)
    return [(i, int(j)) for i, j in enumerate(draws)]
  raise BenchmarkError(f'unknown pairing {pairing!r} (all|diagonal|seeded)')


def _cases(images, kernels, pairs):
  return [Case(image=images[i][0], hr_path=images[i][1], kernel=kernels[j][0],
               kernel_array=kernels[j][1]) for i, j in pairs]


def named_cases(name: str, data_dir, *, scale: int = 4, seed: int = 0,
                subset: str = 'all') -> list[Case]:
  """Plans a named benchmark from the shared data folder.

  * ``blind144``: the first 12 ``div2krk/gt`` images in index order × the 12
    kernels of :func:`kfjax.kernels.blind144_kernels`; ``subset='mini'``
    keeps the 12 diagonal cases (image i with kernel i).
  * ``div2kfk``: each of the 16 ``div2krk/gt`` images with one of the 8 Levin
    kernels (resized to 24×24 and aligned as in blind144), drawn by ``seed``.
  * ``div2krk``: the 16 images with GT, their provided LR
    (``lr_x{s}/im_i.png``) and GT kernel (``kernels_x{s}.npy`` row i−1, shape
    untouched but moved by a whole-pixel shift with
    :func:`kfjax.kernels.align_for_scale`, which is where DIV2KRK's generator
    put it); s ∈ {2, 4}.
  """
  if subset not in ('all', 'mini'):
    raise BenchmarkError(f'unknown subset {subset!r} (all|mini)')
  if subset == 'mini' and name != 'blind144':
    raise BenchmarkError('--subset=mini is defined for blind144 only')
  if name == 'blind144':
    images = list_images(os.path.join(_div2krk_dir(data_dir), 'gt'))[:N_BLIND144_IMAGES]
    if len(images) < N_BLIND144_IMAGES:
      raise BenchmarkError(f'blind144 needs {N_BLIND144_IMAGES} div2krk/gt images, '
                           f'found {len(images)}')
    shapes = _levin_24(data_dir) + kernel_lib.synthetic_kernels()
    kernels = kernel_lib.align_all(shapes, scale, kernel_lib.SUPPORT)
    return _cases(images, kernels, pair(12, 12, 'diagonal' if subset == 'mini' else 'all', seed))
  if name == 'div2kfk':
    images = list_images(os.path.join(_div2krk_dir(data_dir), 'gt'))
    kernels = kernel_lib.align_all(_levin_24(data_dir), scale, kernel_lib.SUPPORT)
    return _cases(images, kernels, pair(len(images), len(kernels), 'seeded', seed))
  if name == 'div2krk':
    return _div2krk_cases(data_dir, scale)
  raise BenchmarkError(f'unknown benchmark {name!r} ({"|".join(NAMES)})')


def _div2krk_cases(data_dir, scale):
  if scale not in (2, 4):
    raise BenchmarkError(f'div2krk exists at x2 and x4 only, not x{scale}')
  d = _div2krk_dir(data_dir)
  kpath = os.path.join(d, f'kernels_x{scale}.npy')
  try:
    ks = np.load(kpath)
  except OSError as e:
    raise BenchmarkError(f'{kpath}: cannot read DIV2KRK kernels ({e})') from None
  cases = []
  for stem, hr_path in list_images(os.path.join(d, 'gt')):
    m = re.fullmatch(r'im_(\d+)', stem)
    if not m:
      continue
    idx = int(m.group(1))
    lr_path = os.path.join(d, f'lr_x{scale}', f'{stem}.png')
    if not os.path.isfile(lr_path):
      raise BenchmarkError(f'{lr_path}: provided LR image not found')
    if not 1 <= idx <= len(ks):
      raise BenchmarkError(f'{kpath}: no kernel for image {stem}')
    cases.append(Case(image=stem, hr_path=hr_path, kernel=f'div2krk_x{scale}_k{idx}',
                      kernel_array=np.asarray(ks[idx - 1], np.float32), lr_path=lr_path))
  if not cases:
    raise BenchmarkError(f'{d}/gt: no im_<i>.png images')
  # The provided kernels are centred on K//2, but DIV2KRK's generator
  # (KernelGAN's kernel_shift) moved each kernel's centre of mass to
  # K//2 + (s-1)/2 before blurring: our align_for_scale convention. Placing the
  # provided kernel the same way (whole-pixel shift, shape untouched) makes
  # downscale(HR, k) match the provided LR to ~45 dB instead of ~35 dB at x4.
  aligned = kernel_lib.align_all([(c.kernel, c.kernel_array) for c in cases], scale,
                                 cases[0].kernel_array.shape[0])
  return [dataclasses.replace(c, kernel_array=k) for c, (_, k) in zip(cases, aligned)]


def generic_cases(hr_dir, kernel_files, *, scale: int, pairing: str = 'all',
                  seed: int = 0, kernel_size: int = 0) -> list[Case]:
  """Plans a benchmark from any folder of HR images and any kernel files.

  Args:
    hr_dir: folder of HR images (natural order of file names).
    kernel_files: .npy / .mat files (see :func:`kfjax.kernels.load_kernels`).
    scale: SR factor.
    pairing: ``all``, ``diagonal`` or ``seeded`` (see :func:`pair`).
    seed: seed of the ``seeded`` pairing.
    kernel_size: if > 0, resize every kernel's shape to this support first
      (:func:`kfjax.kernels.resize_kernel`, as blind144 does with 24).

  Kernels are then aligned (:func:`kfjax.kernels.align_all`) on one common
  support, the smallest that loses no mass.
  """
  images = list_images(hr_dir)
  named = []
  for f in kernel_files:
    try:
      named += kernel_lib.load_kernels(f)
    except ValueError as e:
      raise BenchmarkError(str(e)) from None
  if not named:
    raise BenchmarkError('no kernels given')
  named = [(_safe_name(n), k) for n, k in named]
  names = [n for n, _ in named]
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise BenchmarkError(f'duplicate kernel names {dup}: rename the kernel files')
  if kernel_size > 0:
    named = [(n, kernel_lib.resize_kernel(k, kernel_size)) for n, k in named]
  kernels = kernel_lib.align_all(named, scale, max(kernel_size, 1))
  return _cases(images, kernels, pair(len(images), len(kernels), pairing, seed))


# ----------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------


def centre_crop(img, size: int, *, name: str = 'image'):
  """Centre ``size × size`` crop (offset ``((H − size)//2, (W − size)//2)``)."""
  h, w = img.shape[:2]
  if h < size or w < size:
    raise BenchmarkError(f'{name}: {h}x{w} is smaller than the {size}x{size} crop')
  oy, ox = (h - size) // 2, (w - size) // 2
  return img[oy: oy + size, ox: ox + size]


def synthesise_lr(hr_u8, kernel, scale: int) -> np.ndarray:
  """``quantise_u8(downscale(hr_u8 / 255, kernel, scale))``: the LR of a synthetic case."""
  hr = jnp.asarray(np.asarray(hr_u8, np.float32) / np.float32(255.0))
  lr = degradation.downscale(hr, jnp.asarray(kernel, jnp.float32), scale)
  return quantise_u8(np.asarray(lr))


def _size_problem(case, hr_hw, lr_hw, scale: int, size: str, crop: int) -> str | None:
  """Why ``case`` cannot be built from images of these (h, w) sizes; None if it can."""
  if case.lr_path is None:
    need = crop if size == 'crop' else scale
    if min(hr_hw) < need:
      return (f'{case.hr_path}: {hr_hw[0]}x{hr_hw[1]} is smaller than the '
              + (f'{crop}x{crop} crop' if size == 'crop' else f'scale {scale}'))
    return None
  h, w = lr_hw
  if hr_hw[0] < h * scale or hr_hw[1] < w * scale:
    return (f'{case.hr_path}: HR {tuple(hr_hw)} is smaller than x{scale} the LR '
            f'{case.lr_path} {(h, w)}')
  c = crop // scale
  if size == 'crop' and (h < c or w < c):
    return f'{case.lr_path}: {h}x{w} is smaller than the {c}x{c} LR crop'
  return None


def _image_hw(path) -> tuple[int, int]:
  try:
    return kio.image_hw(path)
  except kio.InputError as e:
    raise BenchmarkError(str(e)) from None


def check_sizes(cases, *, scale: int, size: str, crop: int) -> None:
  """Raises :class:`BenchmarkError` before anything is written if any case's images are
  too small for ``size``/``crop``; the message names the first file and counts the rest."""
  hw = functools.lru_cache(maxsize=None)(_image_hw)
  problems = list(dict.fromkeys(
      p for c in cases
      if (p := _size_problem(c, hw(c.hr_path), c.lr_path and hw(c.lr_path), scale, size, crop))))
  if problems:
    more = f' (and {len(problems) - 1} more too-small images)' if len(problems) > 1 else ''
    raise BenchmarkError(f'{problems[0]}{more}; nothing was written')


def _prepare_pair(case, hr_u8, scale, size, crop):
  """Returns (hr_u8, lr_u8) for a case, cropped as the benchmark asks."""
  lr_u8 = None if case.lr_path is None else read_rgb_u8(case.lr_path)
  problem = _size_problem(case, hr_u8.shape[:2], None if lr_u8 is None else lr_u8.shape[:2],
                          scale, size, crop)
  if problem:
    raise BenchmarkError(problem)
  if lr_u8 is None:
    if size == 'crop':
      hr_u8 = centre_crop(hr_u8, crop, name=case.hr_path)
    else:
      hr_u8 = np.asarray(degradation.crop_to_multiple(hr_u8[None], scale))[0]
    return hr_u8, synthesise_lr(hr_u8, case.kernel_array, scale)
  h, w = lr_u8.shape[:2]
  hr_u8 = hr_u8[: h * scale, : w * scale]
  if size == 'crop':
    c = crop // scale
    oy, ox = (h - c) // 2, (w - c) // 2
    lr_u8 = lr_u8[oy: oy + c, ox: ox + c]
    hr_u8 = hr_u8[oy * scale: (oy + c) * scale, ox * scale: (ox + c) * scale]
  return hr_u8, lr_u8


def _check_out_dir(out_dir, overwrite):
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise BenchmarkError(f'{out_dir}: exists and is not a folder')
  if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
    raise BenchmarkError(f'{out_dir}: folder is not empty (pass --overwrite to replace it)')


def build(cases, out_dir, *, scale: int, size: str = 'full', crop: int = 256,
          meta: dict | None = None, overwrite: bool = False, log=None) -> dict:
  """Writes a benchmark folder for planned cases and returns its manifest.

  Args:
    cases: list of :class:`Case` (from :func:`named_cases` / :func:`generic_cases`).
    out_dir: output folder; must be empty or absent unless ``overwrite``.
    scale: SR factor.
    size: ``'full'`` (whole images, cropped to a multiple of s) or ``'crop'``
      (centre ``crop × crop`` HR, ``crop/s`` LR; ``crop`` is first rounded
      down to a multiple of s).
    crop: HR crop size for ``size='crop'``.
    meta: extra top-level manifest fields (``name``, ``seed``, ``command``).
    overwrite: allow a non-empty ``out_dir``. The old manifest is removed
      first, and files under lr/, hr/, kernels/ that the new build does not
      write are deleted at the end; nothing else is touched.
    log: optional ``callable(str)`` for progress lines.

  Returns:
    The manifest dict (also written to ``out_dir/manifest.json``).
  """
  if size not in ('full', 'crop'):
    raise BenchmarkError(f'unknown size {size!r} (full|crop)')
  if not cases:
    raise BenchmarkError('no cases to build')
  crop = (crop // scale) * scale
  if size == 'crop' and crop < scale:
    raise BenchmarkError(f'crop {crop} is smaller than the scale {scale}')
  out_dir = os.fspath(out_dir)
  _check_out_dir(out_dir, overwrite)
  check_sizes(cases, scale=scale, size=size, crop=crop)
  manifest_path = os.path.join(out_dir, 'manifest.json')
  if os.path.exists(manifest_path):
    os.remove(manifest_path)
  for sub in ('lr', 'hr', 'kernels'):
    os.makedirs(os.path.join(out_dir, sub), exist_ok=True)

  written = set()
  hr_owner, kernels_done, by_index = {}, {}, {}
  groups = {}                                       # read each HR file once
  for i, c in enumerate(cases):
    groups.setdefault(c.hr_path, []).append(i)
  for hr_path, idxs in groups.items():
    hr_src = read_rgb_u8(hr_path)
    for i in idxs:
      c = cases[i]
      hr_u8, lr_u8 = _prepare_pair(c, hr_src, scale, size, crop)
      hr_rel = f'hr/{c.image}.png'
      if hr_owner.setdefault(c.image, c.hr_path) != c.hr_path:
        raise BenchmarkError(f'two different HR images are named {c.image!r}')
      if hr_rel not in written:
        write_png_u8(os.path.join(out_dir, hr_rel), hr_u8)
        written.add(hr_rel)
      k_rel = f'kernels/{c.kernel}.npy'
      k = np.asarray(c.kernel_array, np.float32)
      if c.kernel in kernels_done:
        if not np.array_equal(kernels_done[c.kernel], k):
          raise BenchmarkError(f'two different kernels are named {c.kernel!r}')
      else:
        kio.atomic_save_npy(os.path.join(out_dir, k_rel), k)
        kernels_done[c.kernel] = k
        written.add(k_rel)
      lr_rel = f'lr/{c.id}.png'
      if lr_rel in written:
        raise BenchmarkError(f'duplicate case id {c.id!r}')
      write_png_u8(os.path.join(out_dir, lr_rel), lr_u8)
      written.add(lr_rel)
      by_index[i] = {'id': c.id, 'image': c.image, 'kernel': c.kernel, 'scale': scale,
                     'lr': lr_rel, 'hr': hr_rel, 'kernel_path': k_rel}
      if log:
        log(f'[{len(by_index)}/{len(cases)}] {c.id}: HR {hr_u8.shape[0]}x{hr_u8.shape[1]}, '
            f'LR {lr_u8.shape[0]}x{lr_u8.shape[1]}, kernel {k.shape[0]}x{k.shape[1]}')
  records = [by_index[i] for i in range(len(cases))]

  for sub in ('lr', 'hr', 'kernels'):               # stale files of an overwritten build
    for f in os.listdir(os.path.join(out_dir, sub)):
      if f'{sub}/{f}' not in written:
        os.remove(os.path.join(out_dir, sub, f))
  manifest = {'name': None, 'scale': scale, 'size': size, 'seed': None, 'command': None}
  manifest.update(meta or {})
  if size == 'crop':
    manifest['crop'] = crop
  manifest['cases'] = records
  _write_json(manifest_path, manifest)
  return manifest


def read_manifest(bench_dir) -> dict:
  """Reads ``bench_dir/manifest.json``; case paths are returned joined to ``bench_dir``."""
  bench_dir = os.fspath(bench_dir)
  path = os.path.join(bench_dir, 'manifest.json')
  if not os.path.isfile(path):
    raise BenchmarkError(f'{path}: no manifest (is this a complete benchmark folder?)')
  with open(path, encoding='utf-8') as f:
    manifest = json.load(f)
  for c in manifest['cases']:
    for key in ('lr', 'hr', 'kernel_path'):
      c[key] = os.path.join(bench_dir, c[key])
  return manifest
