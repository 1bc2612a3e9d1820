"""One entry point for both phases: :func:`super_resolve`.

``super_resolve(lr, config)`` trains the patch-diffusion model on the LR image
(Phase 1), then runs the reverse diffusion at HR size (Phase 2), and returns
``(hr, kernel, info)``. The pure steps it drives live in :mod:`kfjax.phase1`
and :mod:`kfjax.phase2`, so a research variant can reuse them directly.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from kfjax import (batching, degradation, diffusion, dip_kernel, edge_kernel, io, kernels,
                   phase1, phase2, sparse_kernel)
from kfjax import spectral_kernel
from kfjax.checkpoint import StateCheckpointer
from kfjax.models import KernelINR, PatchDiffusion, UNet, render_kernel


class DivergenceError(RuntimeError):
  """Training produced NaN/Inf even after the learning-rate retries."""


@dataclasses.dataclass(frozen=True)
class Models:
  pd: PatchDiffusion
  unet: UNet
  inr: KernelINR


def _dtype(name: str):
  return {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[name]


def build_models(config: ml_collections.ConfigDict) -> Models:
  """The three networks described by ``config.pd``, ``config.unet``, ``config.kernel``."""
  return Models(
      pd=PatchDiffusion(width=config.pd.width, num_blocks=config.pd.num_blocks,
                        dtype=_dtype(config.compute_dtype)),
      unet=UNet(features=tuple(config.unet.features), skip=config.unet.skip,
                residual=config.unet.residual and config.phase2.mode != 'dip',
                dtype=_dtype(config.compute_dtype)),
      inr=KernelINR(width=config.kernel.width, num_layers=config.kernel.num_layers,
                    omega0=config.kernel.omega0, prior_sigma=config.kernel.prior_sigma,
                    prior_floor=config.kernel.prior_floor))


def resolve_driver(name: str) -> str:
  """'auto' → 'loop' on CPU (XLA:CPU runs loop bodies slowly), 'scan' elsewhere."""
  if name != 'auto':
    return name
  return 'loop' if jax.default_backend() == 'cpu' else 'scan'


def fingerprint(config, lr01, sections) -> dict:
  """What a checkpoint depends on: the given config sections and the input's hash."""
  digest = hashlib.sha256(np.ascontiguousarray(lr01, np.float32).tobytes()).hexdigest()
  return {'input_sha256': digest, 'shape': list(np.shape(lr01)),
          'config': json.loads(_sections_json(config, sections))}


@jax.jit
def _all_finite(leaves):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _finite(tree) -> bool:
  """Whether every leaf is free of NaN/Inf: one device reduction and one scalar to the host."""
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  if any(len(getattr(x, 'sharding', None).device_set) > 1 for x in leaves
         if hasattr(x, 'sharding')):
    # Cases split over devices: check on the host, so no cross-device collective is needed.
    return all(bool(np.isfinite(np.asarray(x)).all()) for x in leaves)
  return bool(_all_finite(leaves))


def _scale_lr(state, factor: float):
  """Multiplies every injected learning rate in ``state.opt_state`` by ``factor``."""
  hp = dict(state.opt_state.hyperparams)
  for name in hp:
    if name.startswith('lr') or name == 'learning_rate':
      hp[name] = hp[name] * factor
  return state.replace(opt_state=state.opt_state._replace(hyperparams=hp))


def guarded(run: Callable, state, *args, what: str, retries: int = 2,
            log: Callable = logging.warning):
  """Runs ``run(state, *args) -> (state, out)`` and checks the result is finite.

  On NaN/Inf the call is retried from a copy of the input state with the
  learning rates halved, at most ``retries`` times; then :class:`DivergenceError`.
  """
  for attempt in range(retries + 1):
    backup = jax.tree.map(jnp.copy, state)
    new, out = run(state, *args)
    if _finite((new, out)):
      return new, out
    if attempt == retries:
      break
    state = _scale_lr(backup, 0.5)
    log(f'{what}: NaN/Inf detected; retrying from the last good state with half the '
        f'learning rate (retry {attempt + 1}/{retries})')
  raise DivergenceError(f'{what} diverged (NaN/Inf) even after {retries} retries with '
                        'halved learning rates; lower the learning rate in the config')


class _Progress:
  """Logs step, loss, throughput and ETA at most every ``every_s`` seconds."""

  def __init__(self, name: str, total: int, unit: str, log: Callable, every_s: float = 10.0):
    self.name, self.total, self.unit, self.log, self.every_s = name, total, unit, log, every_s
    self.t0 = time.time()
    self.done0 = None
    self.last = 0.0

  def update(self, done: int, loss: float, force: bool = False):
    now = time.time()
    if self.done0 is None:          # the first chunk includes compilation
      self.done0, self.t0 = done, now
      self.log(f'{self.name}: {done}/{self.total} {self.unit}, loss {loss:.3e} (compiled)')
      self.last = now
      return
    if not force and now - self.last < self.every_s and done < self.total:
      return
    self.last = now
    rate = (done - self.done0) / max(now - self.t0, 1e-9)
    eta = (self.total - done) / rate if rate > 0 else float('inf')
    self.log(f'{self.name}: {done}/{self.total} {self.unit}, loss {loss:.3e}, '
             f'{rate:.2f} {self.unit}/s, ETA {eta:.0f} s')


def _sections_json(config, sections) -> str:
  return json.dumps({k: (config[k].to_dict() if isinstance(config[k], ml_collections.ConfigDict)
                         else config[k]) for k in sections}, sort_keys=True, default=list)


@functools.lru_cache(maxsize=8)
def _phase1_fns(config_json: str, crop: int, batched: bool = False, mesh=None):
  """Models, optimiser and chunk runner for a Phase-1 config (cached: compiled once)."""
  config = ml_collections.ConfigDict(json.loads(config_json))
  c = config.pd
  pd = PatchDiffusion(width=c.width, num_blocks=c.num_blocks, dtype=_dtype(config.compute_dtype))
  schedule = diffusion.linear_schedule(**config.diffusion)
  optimizer = optax.inject_hyperparams(phase1.make_optimizer)(lr=c.lr, grad_clip=c.grad_clip)
  step = phase1.make_train_step(pd, optimizer, schedule, crop=crop, batch=c.batch,
                                t_max=min(c.t_max, schedule.num_steps),
                                ema_decay=c.ema_decay, augment=c.augment)
  chunk = max(1, min(c.chunk, c.steps))
  driver = resolve_driver(c.driver)
  run = phase1.make_chunk_runner(step, chunk=chunk, driver=driver, batched=batched, mesh=mesh)
  return pd, optimizer, run, chunk, driver


@functools.lru_cache(maxsize=8)
def _phase2_fns(config_json: str, batched: bool = False, mesh=None):
  """Models, optimiser and timestep runner for a Phase-2 config (cached: compiled once)."""
  config = ml_collections.ConfigDict(json.loads(config_json))
  models = build_models(config)
  c = config.phase2
  schedule = diffusion.linear_schedule(**config.diffusion)
  optimizer = optax.inject_hyperparams(phase2.make_optimizer)(lr_unet=c.lr, lr_kernel=c.lr_kernel)
  inner = phase2.make_inner_step(models.unet, models.inr, models.pd, optimizer, schedule,
                                 scale=config.scale, kernel_size=config.kernel.size,
                                 mode=c.mode, renoise=c.renoise)
  driver = resolve_driver(c.driver)
  run = phase2.make_timestep_runner(inner, models.inr, config.kernel.size, driver=driver,
                                    batched=batched, mesh=mesh)
  return models, optimizer, run, schedule, driver


PHASE1_SECTIONS = ('diffusion', 'pd', 'compute_dtype')
PHASE2_SECTIONS = ('scale', 'diffusion', 'pd', 'unet', 'kernel', 'phase2', 'compute_dtype')


def run_phase1(lr, config, key, *, valid_hw: tuple[int, int] | None = None,
               ckpt: StateCheckpointer | None = None,
               log: Callable = logging.info) -> tuple[Any, dict]:
  """Trains PD on the LR image (in [−1, 1]); returns the EMA params and info.

  ``valid_hw``: the real (h, w) of a padded LR (:func:`pad_to_bucket`); crops
  are drawn inside it, so the result equals the unpadded run's.
  """
  c = config.pd
  h, w = valid_hw or lr.shape[:2]
  crop = min(c.crop, h, w)
  image = lr if valid_hw is None else (lr, jnp.asarray(valid_hw, jnp.int32))
  pd, optimizer, run, chunk, driver = _phase1_fns(_sections_json(config, PHASE1_SECTIONS), crop)
  state = phase1.init_state(pd, optimizer, jax.random.fold_in(key, 0), crop)
  done = 0
  if ckpt is not None and (restored := ckpt.restore_latest(state)) is not None:
    done, state = restored
    log(f'Phase 1: resumed from checkpoint step {done}')
  if done >= c.steps:
    return state.ema_params, {'steps': done, 'seconds': 0.0, 'resumed': True,
                              'driver': driver, 'losses': []}
  train_key = jax.random.fold_in(key, 1)
  progress = _Progress('Phase 1', c.steps, 'steps', log)
  losses, t0 = [], time.time()
  while done < c.steps:
    state, loss = guarded(run, state, train_key, image, what='Phase 1')
    done = int(state.step)
    losses.append(float(loss))
    progress.update(done, losses[-1])
    if ckpt is not None and (done % c.save_every < chunk or done >= c.steps):
      ckpt.save(done, state)
  if ckpt is not None:
    ckpt.wait()
  return state.ema_params, {'steps': done, 'seconds': time.time() - t0, 'resumed': False,
                            'driver': driver, 'chunk': chunk, 'losses': losses}


def known_kernel(kernel, size: int) -> jnp.ndarray:
  """A user-given kernel as Phase 2 uses it: centred on a (size, size) support, summing to 1."""
  k = np.asarray(kernel, np.float32)
  if k.ndim != 2 or not np.all(np.isfinite(k)) or k.sum() <= 0:
    raise ValueError(f'a known kernel must be a finite 2-D array with a positive sum, '
                     f'got shape {k.shape}')
  if max(k.shape) > size:
    raise ValueError(f'the known kernel ({k.shape[0]}x{k.shape[1]}) is larger than '
                     f'config.kernel.size ({size})')
  return jnp.asarray(degradation.normalise_kernel(degradation.pad_or_crop(k, size)))


def chunk_length(done: int, total: int, chunk: int) -> int:
  """Timesteps in the next Phase-2 call: 1 for the first (it has n_iter_first) and for a
  remainder shorter than ``chunk``, else ``chunk``. So the scan driver compiles at
  most two programs (lengths 1 and ``chunk``; n_iter is traced) per image size."""
  return 1 if done == 0 or total - done < chunk else chunk


def bucketed(n: int, bucket: int) -> int:
  """``n`` rounded up to a multiple of ``bucket`` (``n`` itself when ``bucket`` is 0)."""
  return -(-n // bucket) * bucket if bucket else n


def pad_to_bucket(lr01, bucket: int) -> tuple[np.ndarray, tuple[int, int] | None]:
  """Pads an (h, w, C) LR image up to multiples of ``bucket`` pixels (mirror padding at the
  bottom and right), so images of similar sizes share compiled programs (``io.size_bucket``).

  Returns ``(padded, (h, w))``, or ``(lr01, None)`` when ``bucket`` is 0 or the
  sides are multiples already. The pipeline draws Phase-1 crops inside the real
  pixels, masks the padding out of the Phase-2 loss and crops the outputs back.
  """
  h, w = lr01.shape[:2]
  ph, pw = bucketed(h, bucket) - h, bucketed(w, bucket) - w
  if not ph and not pw:
    return lr01, None
  return np.pad(lr01, ((0, ph), (0, pw), (0, 0)), mode='symmetric'), (h, w)


def kernel_window(lr01, config) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
  """The LR pixels both phases see: the centre ``io.kernel_crop`` window, or all of them.

  With ``io.kernel_crop`` = c > 0 and an LR side longer than c, Phase 1 and
  Phase 2 run on the centre c×c (at most) window, which sets the kernel; the
  whole image is then back-projected with that kernel (:func:`final_projection`,
  which must start from the bicubic upscale). The kernel is the same
  everywhere, so this trades the image prior's view of the whole image for
  time and memory. Returns ``(window, (top, left, h, w))``, or ``(lr01, None)``.
  """
  c = config.io.kernel_crop
  h, w = lr01.shape[-3:-1]
  if c <= 0 or max(h, w) <= c:
    return lr01, None
  if config.phase2.final_bp_reg <= 0 or config.phase2.final_bp_from != 'bicubic':
    raise ValueError("io.kernel_crop needs phase2.final_bp_reg > 0 and final_bp_from 'bicubic' "
                     '(the whole image is back-projected from its bicubic upscale)')
  top, left, wh, ww = io.center_box(h, w, c)
  return lr01[..., top:top + wh, left:left + ww, :], (top, left, wh, ww)


def blind_kernel(inr_kernel, lr01, config, *, l0=None) -> np.ndarray:
  """The estimated kernel: the INR's, or with ``phase2.kernel_blend`` = w > 0 a mixture.

  ``(1 − w)·inr_kernel + w·k_L0`` (:func:`kfjax.kernels.blend`), where k_L0 is the
  classical sparse-gradient estimate of the same LR pixels
  (:func:`kfjax.sparse_kernel.estimate_kernel`, ~1 s for 64×64 LR px). The two
  err in opposite directions (the INR's kernels are too wide, the L0 ones too
  small), and their equal mixture back-projects better than either on all three
  benchmarks. Our addition, measured in docs/results.md. ``l0``: k_L0 if already
  computed (it depends on the LR alone).
  """
  w = config.phase2.kernel_blend
  if w <= 0:
    return inr_kernel
  if l0 is None:
    l0 = sparse_kernel.estimate_kernel(lr01, config.scale, config.kernel.size)
  return kernels.blend(inr_kernel, l0, w)


def gaussian_switch(lr01, config) -> tuple[np.ndarray | None, dict]:
  """The blind test of Gaussian blur (``phase2.gaussian_test`` = τ < 0); ``(kernel, info)``.

  Fits the anisotropic Gaussian of maximal evidence to the LR power spectrum
  (:func:`kfjax.spectral_kernel.fit_gaussian`, ~1 s). Where its evidence gain
  over no blur is below τ the blur is taken to be Gaussian and that kernel is
  returned (the output is then its TV SR, :func:`final_projection` with
  ``gaussian=True``); otherwise, or with the test off, ``None``. ``info``
  holds the gain and the decision. Our addition, measured in docs/results.md.
  """
  tau = config.phase2.gaussian_test
  if tau >= 0:
    return None, {}
  k, fit = spectral_kernel.fit_gaussian(lr01, config.scale, config.kernel.size)
  hit = fit['evidence_gain'] < tau
  info = {'evidence_gain': fit['evidence_gain'], 'gaussian': bool(hit),
          'sigmas': [fit['sigma1'], fit['sigma2']], 'theta': fit['theta']}
  return (np.asarray(k, np.float32) if hit else None), info


def gaussian_shortcut(full01, window, config, log: Callable = logging.info):
  """:func:`gaussian_switch` on the whole LR image, before Phase 1.

  The test sees the whole image (the spectral fit takes its centre 128×128 LR px
  at most), not only an ``io.kernel_crop`` window: it costs ~1 s either way, and
  on a 64×64 window it separates Gaussian from motion blur less well
  (docs/results.md).

  Where the edge kernel would take the image, the switch must also pass
  :func:`edges_veto`.

  Returns ``(result, test)``: ``test`` is the test's info; where it says
  Gaussian, both phases are skipped (their kernel would be replaced anyway) and
  ``result`` is ``(hr, kernel, info)`` in :func:`super_resolve`'s form, the
  whole image's TV SR with the spectral Gaussian; otherwise ``result`` is None.
  """
  t0 = time.time()
  gauss, test = gaussian_switch(full01, config)
  if gauss is not None:
    gauss = edges_veto(full01, gauss, test, config)
  log(f"Gaussian-blur test (phase2.gaussian_test {config.phase2.gaussian_test:g}): evidence "
      f"gain {test['evidence_gain']:.2f}, " + (
          'Gaussian: the output is its TV SR; both phases skipped' if test['gaussian'] else
          f"Gaussian, but overruled: the edge kernel's cosine with it is {test['agreement']:.2f}"
          f" < edges.min_agreement {config.edges.min_agreement:g}" if test.get('vetoed') else
          'not Gaussian'))
  if gauss is None:
    return None, test
  hr = final_projection(None, full01, gauss, config, gaussian=True)
  return (hr, gauss, _skipped_phases(time.time() - t0, window, gaussian_test=test)), test


def _skipped_phases(seconds: float, window, **phase2_info) -> dict:
  """:func:`super_resolve`'s ``info`` for a run that skipped both phases."""
  info = {'backend': jax.default_backend(), 'device': str(jax.devices()[0]),
          'phase1': {'steps': 0, 'seconds': 0.0, 'skipped': True},
          'phase2': {'timesteps': 0, 'inner_steps': 0, 'seconds': seconds, 'skipped': True,
                     **phase2_info}}
  if window is not None:
    info['kernel_window'] = list(window)
  return info


def lrdip_kernel(lr01, config) -> np.ndarray:
  """``kernel_source = 'lrdip'``: :func:`kfjax.dip_kernel.estimate_kernel` with the
  ``lrdip`` settings and ``config.seed``; a (kernel.size, kernel.size) kernel."""
  c = config.lrdip
  return dip_kernel.estimate_kernel(lr01, config.scale, config.kernel.size, steps=c.steps,
                                    lr_image=c.lr_image, lr_kernel=c.lr_kernel, width=c.width,
                                    levels=c.levels, window=c.window, seed=config.seed)


_EDGES_MEMO: collections.OrderedDict = collections.OrderedDict()
_EDGES_MEMO_SIZE = 64
_EDGES_SETTINGS = ('n_iter', 'r', 'gamma', 'alpha', 'threshold', 'window', 'soften',
                   'hr_edges', 'hr_levels', 'lift_power')
"""The ``edges`` fields that are :func:`kfjax.edge_kernel.estimate_kernel` settings."""


def edges_kernel(lr01, config, **overrides) -> np.ndarray:
  """``kernel_source = 'edges'``: :func:`kfjax.edge_kernel.estimate_kernel` with the
  ``edges`` settings (``overrides`` replace some of them: an ``edges.ensemble``
  member); a (kernel.size, kernel.size) kernel.

  The last few LR-scale kernels are kept in memory, keyed by the image's bytes and
  the estimator's settings, so that :func:`edges_veto` and :func:`source_shortcut`
  estimate it once, whatever ``lift_power`` each asks for.
  """
  settings = {name: config.edges[name] for name in _EDGES_SETTINGS}
  settings.update(overrides)
  lift_power = settings.pop('lift_power')
  arr = np.ascontiguousarray(lr01)
  key = (hashlib.sha256(arr.tobytes()).hexdigest(), arr.shape, str(arr.dtype), config.scale,
         config.kernel.size, tuple(sorted(settings.items())))
  if key not in _EDGES_MEMO:
    _EDGES_MEMO[key] = edge_kernel.estimate_lr_kernel(
        arr, edge_kernel.lr_support(config.kernel.size, config.scale), **settings)
    while len(_EDGES_MEMO) > _EDGES_MEMO_SIZE:
      _EDGES_MEMO.popitem(last=False)
  _EDGES_MEMO.move_to_end(key)
  return kernels.place_lr_kernel(_EDGES_MEMO[key], config.scale, config.kernel.size,
                                 power=lift_power)


def edges_members(config) -> list[dict]:
  """The members of the edge-kernel ensemble, as overrides of the ``edges``
  settings: ``{}`` (the settings themselves), then one per ``edges.ensemble``
  entry. Raises ValueError naming an entry with a field that is not an edge
  kernel setting."""
  members = [{}]
  for i, entry in enumerate(config.edges.ensemble):
    entry = entry.to_dict() if hasattr(entry, 'to_dict') else dict(entry)
    unknown = sorted(set(entry) - set(_EDGES_SETTINGS))
    if unknown:
      raise ValueError(f'edges.ensemble[{i}]: {", ".join(unknown)} is not an edge kernel '
                       f'setting (those are {", ".join(_EDGES_SETTINGS)})')
    members.append(entry)
  return members


def edges_kernels(lr01, config) -> list[np.ndarray]:
  """The kernel of each member of the edge-kernel ensemble (:func:`edges_members`,
  :func:`edges_kernel`)."""
  return [edges_kernel(lr01, config, **m) for m in edges_members(config)]


def edges_output(full01, config) -> tuple[np.ndarray, np.ndarray]:
  """The edge kernel's output: ``(hr, kernel)``.

  Each member of the ensemble (:func:`edges_kernels`) gives a kernel and the
  whole image's final step with it (:func:`final_projection`, ``source =
  'edges'``). ``hr`` is the mean of those outputs and ``kernel`` the mean of
  the members' kernels (the returned estimate). With one member (an empty
  ``edges.ensemble``) that is its final step and its kernel. Averaging the
  outputs of kernels that err in different directions (the plain kernel is too
  wide, the softened one can collapse) is our addition, measured in
  docs/results.md ("An ensemble of two edge kernels").
  """
  members = edges_kernels(full01, config)
  hr = np.mean([final_projection(None, full01, k, config, source='edges') for k in members],
               axis=0, dtype=np.float32)
  return hr, np.mean(members, axis=0, dtype=np.float32)


def edges_apply(full01, config) -> bool:
  """Whether the edge kernel takes this LR image: ``kernel_source`` 'edges' and at least
  ``edges.min_pixels`` pixels."""
  return (config.kernel_source == 'edges'
          and full01.shape[0] * full01.shape[1] >= config.edges.min_pixels)


def edges_veto(full01, gauss, test: dict, config) -> np.ndarray | None:
  """``edges.min_agreement``: the Gaussian test's kernel, or None where the edge kernel
  overrules it.

  Where :func:`gaussian_switch` says Gaussian on an image that the edge kernel
  takes (:func:`edges_apply`), the edge kernel is estimated too, and the
  switch stands only where the two kernels agree: cosine similarity
  (:func:`kfjax.kernels.cosine`) at least ``edges.min_agreement``. Elsewhere
  the test's call is taken to be a non-Gaussian blur whose spectrum looks
  Gaussian (a hollow square's does), and the edge kernel's path follows
  (:func:`source_shortcut`). The edge kernel is lifted evenly here
  (``lift_power`` 0), as when the threshold was measured. Our addition,
  measured in docs/results.md. Adds ``agreement`` and ``vetoed`` to ``test``
  (and sets ``gaussian`` False when vetoed); with the setting 0, or where the
  edge kernel does not apply, returns ``gauss`` unchanged.
  """
  threshold = config.edges.min_agreement
  if threshold <= 0 or not edges_apply(full01, config):
    return gauss
  test['agreement'] = kernels.cosine(edges_kernel(full01, config, lift_power=0.0), gauss)
  test['vetoed'] = test['agreement'] < threshold
  if test['vetoed']:
    test['gaussian'] = False
    return None
  return gauss


def source_shortcut(full01, window, config, log: Callable = logging.info):
  """``kernel_source`` 'lrdip' or 'edges': an LR-scale kernel, and the phases skipped.

  The kernel is :func:`lrdip_kernel` or :func:`edges_kernel` of the LR image.
  Both phases are skipped and the output is the final step with it on the
  whole image (:func:`final_projection` from the bicubic upscale; for the edge
  kernel, :func:`edges_output`: with ``edges.ensemble``, the mean of its
  members' final steps, and the mean kernel), except
  where the DIP kernel never narrowed from its uniform start
  (:func:`kfjax.dip_kernel.spread_ratio` > ``lrdip.max_spread``) or the LR
  has fewer than ``edges.min_pixels`` pixels for the edge kernel: there the
  phases run as with ``kernel_source = 'inr'``.

  Returns ``(result, test)``: ``test`` holds the decision and the seconds (and
  the DIP's spread ratio); ``result`` is ``(hr, kernel, info)`` in
  :func:`super_resolve`'s form, or None where the phases must run.
  """
  source = config.kernel_source
  if config.phase2.final_bp_reg <= 0 or config.phase2.final_bp_from != 'bicubic':
    raise ValueError(f"kernel_source {source!r} needs phase2.final_bp_reg > 0 and "
                     "final_bp_from 'bicubic' (there is no diffusion output to start from)")
  t0 = time.time()
  if source == 'edges':
    c = config.edges
    pixels = full01.shape[0] * full01.shape[1]
    if not edges_apply(full01, config):
      log(f'Kernel: the LR has {pixels} px, fewer than edges.min_pixels {c.min_pixels}, too few '
          'for the edge kernel, so the phases estimate it')
      return None, {'used': False, 'seconds': 0.0}
    n = len(edges_members(config))
    log(f'Kernel: LR-scale blind deblurring from predicted edges (kernel_source edges; '
        f'{c.n_iter} rounds per level on {f"the centre {c.window}" if c.window else "all the"} '
        f'LR px{f"; an ensemble of {n} (edges.ensemble)" if n > 1 else ""})')
    edges_kernels(full01, config)                 # timed here; edges_output reads the memo
    test = {'used': True, 'members': n, 'seconds': time.time() - t0}
    hr, kernel = edges_output(full01, config)
    summary = ''
  else:
    c = config.lrdip
    log(f'Kernel: LR-scale deep-image-prior deblurring (kernel_source lrdip; {c.steps} steps '
        f'on the centre {c.window or "all"} LR px)')
    kernel = lrdip_kernel(full01, config)
    ratio = dip_kernel.spread_ratio(kernel)
    test = {'spread_ratio': ratio, 'used': ratio <= c.max_spread,
            'seconds': time.time() - t0}
    summary = f' (spread ratio {ratio:.2f})'
    if not test['used']:
      log(f'Kernel: the LR-scale estimate is as spread as its uniform start (spread ratio '
          f'{ratio:.2f} > lrdip.max_spread {c.max_spread:g}), so the phases estimate it')
      return None, test
    hr = final_projection(None, full01, kernel, config, source=source)
  lam, mix = final_tv_setting(config, source)
  tv = f', mixed with the TV SR (λ {lam:g}, share {mix:g})' if lam > 0 else ''
  each = ' for each, then averaged' if test.get('members', 1) > 1 else ''
  log(f'Kernel: estimated in {test["seconds"]:.1f} s{summary}; both phases skipped, final '
      f'step on the whole image{each}: the back-projection (λ {config.phase2.final_bp_reg:g})'
      f'{tv}')
  return (hr, kernel, _skipped_phases(time.time() - t0, window, kernel_source=source,
                                      **{source: test})), test


def final_tv_setting(config, source: str = 'inr') -> tuple[float, float]:
  """The final step's TV weight λ and share: ``edges.final_tv``, ``edges.final_tv_mix``
  where the kernel is the edge kernel (``source`` 'edges'), else ``phase2.final_tv``,
  ``phase2.final_tv_mix``."""
  c = config.edges if source == 'edges' else config.phase2
  return float(c.final_tv), float(c.final_tv_mix)


def final_projection(hr01, lr01, kernel, config, *, gaussian: bool = False,
                     source: str = 'inr') -> np.ndarray:
  """The returned HR: x̂0, or with ``phase2.final_bp_reg`` > 0 a final back-projection.

  The back-projection (:func:`kfjax.degradation.back_projection`, regulariser
  ``final_bp_reg``) uses the final kernel and starts from x̂0
  (``phase2.final_bp_from = 'x0'``: keeps x̂0's detail where the LR says
  nothing and removes the LR residual the inner steps leave) or from the
  bicubic upscale (``'bicubic'``: the diffusion only estimates the kernel).
  With ``phase2.final_tv`` = λ > 0 the output is
  ``(1 − final_tv_mix)·BP + final_tv_mix·TV``, where TV is the total-variation
  SR of the LR with the same kernel and weight λ, from the bicubic upscale
  (:func:`kfjax.degradation.sparse_gradient_restore`). Where the kernel is the
  edge kernel (``source = 'edges'``) λ and the share are ``edges.final_tv`` and
  ``edges.final_tv_mix`` instead (:func:`final_tv_setting`). Our additions,
  measured in docs/results.md.
  """
  c = config.phase2
  if gaussian:                  # gaussian_switch said Gaussian blur: its TV SR alone
    return np.clip(np.asarray(degradation.sparse_gradient_restore(
        lr01, kernel, config.scale, degradation.bicubic_upscale(lr01, config.scale),
        lam=c.gaussian_tv), np.float32), 0.0, 1.0)
  if c.final_bp_reg > 0:
    if c.final_bp_from not in ('x0', 'bicubic'):
      raise ValueError(f"phase2.final_bp_from must be 'x0' or 'bicubic', got {c.final_bp_from!r}")
    init = hr01 if c.final_bp_from == 'x0' else None
    hr01 = degradation.back_projection(lr01, kernel, config.scale, init=init, reg=c.final_bp_reg)
    lam, mix = final_tv_setting(config, source)
    if lam > 0:
      tv = degradation.sparse_gradient_restore(
          lr01, kernel, config.scale, degradation.bicubic_upscale(lr01, config.scale), lam=lam)
      hr01 = (1.0 - mix) * hr01 + mix * tv
  return np.clip(np.asarray(hr01, np.float32), 0.0, 1.0)


def _chunk_lengths(total: int, chunk: int) -> list[int]:
  """The distinct timestep counts of the Phase-2 calls (:func:`chunk_length`), in call order."""
  lengths, done = [], 0
  while done < total:
    n = chunk_length(done, total, chunk)
    if n not in lengths:
      lengths.append(n)
    done += n
  return lengths


def precompile_phase2(lr, config, *, known: bool = False,
                      valid_hw: tuple[int, int] | None = None) -> float:
  """Compiles the Phase-2 programs for this LR shape and config ahead of time; returns the
  seconds it took (0 when there is nothing to do).

  Only the ``scan`` driver has whole-chunk programs to compile; with ``loop`` (the CPU
  default) this returns at once. No Phase-1 result is needed (the PD params are shapes
  from :func:`jax.eval_shape`), so :func:`super_resolve` runs this in a thread while Phase 1
  trains. It also builds one initial state (:func:`kfjax.phase2.init_state`, then
  dropped), which compiles the initialisers. The later calls of :func:`run_phase2` then find
  their programs compiled in this process (tested: they compile nothing). ``known``: the
  run is given a kernel (non-blind).
  """
  c = config.phase2
  models, optimizer, run, schedule, driver = _phase2_fns(
      _sections_json(config, PHASE2_SECTIONS))
  if driver != 'scan':
    return 0.0
  t0 = time.time()
  shape = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
  lr_s = jax.ShapeDtypeStruct(lr.shape, jnp.float32)
  pd_params = None
  if c.mode in phase2.PD_MODES:
    pd_params = jax.eval_shape(lambda: models.pd.init(
        jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, lr.shape[-1])), jnp.zeros((1,), jnp.int32)))
  size = config.kernel.size
  data = phase2.Data(                  # as run_phase2 builds it
      lr=lr_s, pd_params=pd_params,
      kernel=jax.ShapeDtypeStruct((size, size), jnp.float32) if known else None,
      lr_mask=None if valid_hw is None else jax.ShapeDtypeStruct(lr.shape[:2] + (1,),
                                                                 jnp.float32))
  state = shape(phase2.init_state(models.unet, models.inr, optimizer, jax.random.PRNGKey(0),
                                  jnp.zeros(lr.shape, jnp.float32), scale=config.scale,
                                  mode=c.mode))
  key = shape(jax.random.PRNGKey(0))
  plan = phase2.timestep_plan(t_start=min(c.t_start, schedule.num_steps), stride=c.stride)
  for n in _chunk_lengths(len(plan.t), c.chunk):
    ts = phase2.Timestep(*(jnp.asarray(a[:n]) for a in plan))
    run.lower(state, key, shape(ts), c.n_iter, data).compile()
  return time.time() - t0


def run_phase2(lr, pd_params, config, key, *, kernel=None,
               valid_hw: tuple[int, int] | None = None,
               ckpt: StateCheckpointer | None = None,
               log: Callable = logging.info) -> tuple[np.ndarray, np.ndarray, dict]:
  """Reverse diffusion at HR size; returns the HR image in [0, 1], the kernel and info.

  With ``kernel`` (a known (k, k) kernel) the run is non-blind: that kernel is
  used in the loss and returned (see :func:`known_kernel`). ``valid_hw``: the
  real (h, w) of a padded LR (:func:`pad_to_bucket`): the loss ignores the
  padding and the returned images cover the real pixels only.
  """
  c = config.phase2
  models, optimizer, run, schedule, driver = _phase2_fns(
      _sections_json(config, PHASE2_SECTIONS))
  if kernel is not None:
    kernel = known_kernel(kernel, config.kernel.size)
  mask = None
  if valid_hw is not None:
    mask = jnp.zeros(lr.shape[:2] + (1,), jnp.float32).at[:valid_hw[0], :valid_hw[1]].set(1.0)
  data = phase2.Data(lr=lr, pd_params=pd_params, kernel=kernel, lr_mask=mask)
  plan = phase2.timestep_plan(t_start=min(c.t_start, schedule.num_steps), stride=c.stride)
  total = len(plan.t)
  state = phase2.init_state(models.unet, models.inr, optimizer, jax.random.fold_in(key, 0),
                            lr, scale=config.scale, mode=c.mode)
  done = 0
  if ckpt is not None and (restored := ckpt.restore_latest(state)) is not None:
    _, state = restored
    done = int(state.t_index)
    log(f'Phase 2: resumed from checkpoint after {done}/{total} timesteps')
  noise_key = jax.random.fold_in(key, 1)
  progress = _Progress('Phase 2', total, 'timesteps', log)
  traces, t0 = [], time.time()
  while done < total:
    n = chunk_length(done, total, c.chunk)
    n_iter = c.n_iter_first if done == 0 else c.n_iter
    ts = phase2.Timestep(*(jnp.asarray(a[done:done + n]) for a in plan))
    state, trace = guarded(run, state, noise_key, ts, n_iter, data, what='Phase 2')
    done = int(state.t_index)
    traces.append(jax.device_get(trace))
    progress.update(done, float(trace['loss_last'][-1]))
    if ckpt is not None:
      ckpt.save(done, state)
  if ckpt is not None:
    ckpt.wait()
  kernel = np.asarray(render_kernel(models.inr, state.inr_params, config.kernel.size)
                      if data.kernel is None else data.kernel, np.float32)
  info = {'timesteps': total, 'inner_steps': int(state.step), 'seconds': time.time() - t0,
          'driver': driver}
  if traces:
    cat = {k: np.concatenate([t[k] for t in traces]) for k in traces[0]}
    every = max(1, c.trace_every)
    info.update(t=plan.t[total - len(cat['loss_last']):].tolist(),
                loss_mean=cat['loss_mean'].tolist(), loss_last=cat['loss_last'].tolist(),
                kernel_trace=cat['kernel'][::every])
  x0, lr01 = phase2.output_image(state), (np.asarray(lr) + 1.0) / 2.0
  if valid_hw is not None:
    h, w = valid_hw
    x0, lr01 = x0[:h * config.scale, :w * config.scale], lr01[:h, :w]
    info['padded_lr_shape'] = list(lr.shape[:2])
  if data.kernel is None and c.kernel_blend > 0:
    info['kernel_inr'] = kernel        # the INR's own kernel, before the blend
    kernel = blind_kernel(kernel, lr01, config)
    log(f"Kernel: the INR's mixed with the classical L0 estimate (phase2.kernel_blend "
        f'{c.kernel_blend:g})')
  if c.final_bp_reg > 0 and c.final_tv > 0:
    log(f'Output: the back-projection mixed with the TV SR (phase2.final_tv {c.final_tv:g}, '
        f'share {c.final_tv_mix:g})')
  hr = final_projection(x0, lr01, kernel, config)
  if c.final_bp_reg > 0:
    info['hr_diffusion'] = x0          # the reverse diffusion's own estimate x̂0, for reference
  return hr, kernel, info


_PHASE1_MEMO: dict = {}
"""The latest Phase-1 result: {fingerprint JSON: (EMA params, info)} (one entry)."""


def super_resolve(lr01, config: ml_collections.ConfigDict, *, kernel=None,
                  ckpt_dir: str | None = None, reuse_phase1: bool = False,
                  log: Callable = logging.info) -> tuple[np.ndarray, np.ndarray, dict]:
  """Runs KernelFusion on one LR image.

  Args:
    lr01: (h, w, 3) float LR image in [0, 1].
    config: a config from ``configs/`` (see ``configs/x4.py``).
    kernel: optional known (k, k) blur kernel (k ≤ ``config.kernel.size``): a
      non-blind run that uses it instead of estimating one.
    ckpt_dir: if given, Phase 1 and Phase 2 states are checkpointed there
      (``phase1/``, ``phase2/``) and a re-run resumes from them.
    reuse_phase1: reuse the PD of the previous call if it had the same input,
      seed and Phase-1 config (Phase 1 is deterministic, so the result is the
      same; used by the evaluation to run several methods on one image). Its
      ``info['phase1']`` then says ``reused`` and counts 0 seconds.
    log: progress logger (absl ``logging.info`` by default).

  Returns:
    ``(hr, kernel, info)``: the (h·s, w·s, 3) HR image in [0, 1], the (K, K)
    kernel (sums to 1), and a dict with per-phase timings and loss traces (and,
    when ``phase2.final_bp_reg`` > 0, ``info['phase2']['hr_diffusion']``: the
    diffusion's x̂0 before the final back-projection). With ``io.kernel_crop``
    (:func:`kernel_window`) the phases see the centre window only:
    ``info['kernel_window']`` is its (top, left, h, w) in LR pixels, x̂0 covers
    it, and ``hr`` is the whole image back-projected with the kernel. With
    ``phase2.gaussian_test`` (:func:`gaussian_shortcut`) the test runs first
    and ``info['phase2']['gaussian_test']`` holds it; where it says Gaussian,
    both phases are skipped (``info['phase1']['skipped']``). With
    ``kernel_source`` 'lrdip' or 'edges' (:func:`source_shortcut`) they are
    skipped too (for 'lrdip': where the LR-scale DIP kernel narrowed; for
    'edges': where the LR has at least ``edges.min_pixels`` pixels);
    ``info['phase2']['kernel_source']`` is then the source, and
    ``info['phase2'][source]`` holds its test.
  """
  full01 = np.asarray(lr01, np.float32)
  lr01, window = kernel_window(full01, config)
  test = {}
  if kernel is None and config.phase2.gaussian_test < 0:
    shortcut, test = gaussian_shortcut(full01, window, config, log)
    if shortcut is not None:
      return shortcut
  source_test = {}
  if kernel is None and config.kernel_source in ('lrdip', 'edges'):
    shortcut, source_test = source_shortcut(full01, window, config, log)
    if shortcut is not None:
      if test:
        shortcut[2]['phase2']['gaussian_test'] = test
      return shortcut
  if window is not None:                # the phases run on the window
    log(f'Kernel window (io.kernel_crop): the centre {window[3]}×{window[2]} LR px at '
        f'({window[0]}, {window[1]}); the whole {full01.shape[1]}×{full01.shape[0]} image is '
        'back-projected with its kernel')
  padded01, valid_hw = pad_to_bucket(lr01, config.io.size_bucket)
  lr = jnp.asarray(padded01 * 2.0 - 1.0)
  key = jax.random.PRNGKey(config.seed)
  needs_pd = config.phase2.mode in phase2.PD_MODES
  ck1 = ck2 = None
  if ckpt_dir is not None:
    ck1 = StateCheckpointer(os.path.join(ckpt_dir, 'phase1'),
                            fingerprint=fingerprint(config, lr01, ('seed',) + PHASE1_SECTIONS))
    fp2 = fingerprint(config, lr01, ('seed',) + PHASE2_SECTIONS)
    if valid_hw is not None:
      fp2['padded_lr_shape'] = list(padded01.shape)
    if kernel is not None:
      fp2['known_kernel_sha256'] = hashlib.sha256(
          np.ascontiguousarray(kernel, np.float32).tobytes()).hexdigest()
    ck2 = StateCheckpointer(os.path.join(ckpt_dir, 'phase2'), fingerprint=fp2)
  # Phase 2's programs compile in a thread while Phase 1 trains (scan driver only).
  pool = concurrent.futures.ThreadPoolExecutor(1) if config.phase2.precompile else None
  compiling = pool and pool.submit(precompile_phase2, lr, config, known=kernel is not None,
                                   valid_hw=valid_hw)
  try:
    info: dict = {'backend': jax.default_backend(), 'device': str(jax.devices()[0])}
    if needs_pd:
      memo_key = json.dumps(fingerprint(config, lr01, ('seed',) + PHASE1_SECTIONS),
                            sort_keys=True)
      if reuse_phase1 and memo_key in _PHASE1_MEMO:
        pd_params, p1 = _PHASE1_MEMO[memo_key]
        info['phase1'] = dict(p1, seconds=0.0, reused=True)
        log('Phase 1: reused the PD trained for the previous call (same input and config)')
      else:
        pd_params, info['phase1'] = run_phase1(lr, config, jax.random.fold_in(key, 1),
                                               valid_hw=valid_hw, ckpt=ck1, log=log)
        _PHASE1_MEMO.clear()
        _PHASE1_MEMO[memo_key] = (pd_params, info['phase1'])
    else:
      pd_params, info['phase1'] = None, {'steps': 0, 'seconds': 0.0, 'skipped': True}
    if compiling and (done := _wait_precompile(compiling, log)):
      info['phase2_precompile'] = done
    hr, kernel, info['phase2'] = run_phase2(lr, pd_params, config, jax.random.fold_in(key, 2),
                                            kernel=kernel, valid_hw=valid_hw, ckpt=ck2, log=log)
    if test:
      info['phase2']['gaussian_test'] = test
    if source_test:               # the source fell back to the phases
      info['phase2'][config.kernel_source] = source_test
    if window is not None:
      info['kernel_window'] = list(window)
      hr = final_projection(None, full01, kernel, config)
  finally:
    if pool:
      pool.shutdown(wait=True)
    for ck in (ck1, ck2):
      if ck is not None:
        ck.close()
  return hr, kernel, info


def _wait_precompile(future, log: Callable) -> dict:
  """Waits for :func:`precompile_phase2`; {'seconds': its time, 'waited_s': how long Phase 2
  waited for it}, or {} when it had nothing to compile. A failure is logged, not raised:
  Phase 2 then compiles as usual."""
  t0 = time.time()
  try:
    seconds = future.result()
  except Exception as e:  # pylint: disable=broad-except
    log(f'Phase 2: compiling ahead failed ({type(e).__name__}: {e}); compiling on first use')
    return {'error': str(e)}
  waited = time.time() - t0
  if not seconds:
    return {}                                         # the loop driver: nothing compiled
  log(f'Phase 2: programs compiled beside Phase 1 in {seconds:.1f} s '
      f'(Phase 2 waited {waited:.1f} s for them)')
  return {'seconds': seconds, 'waited_s': waited}


def _stack(tree, n: int):
  """n copies of a pytree along a new leading (case) axis."""
  return jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + jnp.shape(x)), tree)


def super_resolve_batch(lr01s, config: ml_collections.ConfigDict, *,
                        log: Callable = logging.info) -> tuple[np.ndarray, np.ndarray, dict]:
  """Runs KernelFusion on N same-size LR images at once (``jax.vmap`` over both phases).

  Case i computes exactly what ``super_resolve(lr01s[i], config)`` computes (same
  seed, same initial weights, same noise), so the outputs equal the one-by-one
  outputs up to float rounding of the batched convolutions. With
  ``phase2.gaussian_test`` the test runs first on every case, as there: the
  cases it calls Gaussian get their spectral kernel's TV SR, and the phases run
  batched on the others only (none, if all are Gaussian). With
  ``kernel_source`` 'lrdip' or 'edges' each other case gets
  :func:`source_shortcut`, one by one, and the phases run batched on those where
  it falls back. With several
  local devices, the cases are split over them (:mod:`kfjax.batching`). No
  checkpoints are written.

  Args:
    lr01s: (N, h, w, 3) float LR images in [0, 1].
    config: as for :func:`super_resolve`; ``phase2.mode`` must be the same for all.
      ``io.size_bucket`` is not applied: the cases share one size already;
      ``io.kernel_crop`` is (:func:`kernel_window`).

  Returns:
    ``(hrs, kernels, info)``: (N, h·s, w·s, 3), (N, K, K) and per-phase timings;
    ``info['gaussian_cases']`` lists the cases the test switched (and, with
    ``kernel_source`` 'lrdip' or 'edges', ``info['source_seconds']`` is the time
    spent on those kernels).
  """
  full01s = np.asarray(lr01s, np.float32)
  n = full01s.shape[0]
  _, window = kernel_window(full01s, config)
  t0 = time.time()
  shortcuts = [gaussian_shortcut(lr, window, config, log)[0] if config.phase2.gaussian_test < 0
               else None for lr in full01s]
  gaussian_cases = [i for i, sc in enumerate(shortcuts) if sc is not None]
  info: dict = {'backend': jax.default_backend(), 'cases': n, 'gaussian_cases': gaussian_cases,
                'devices': 1, 'phase1_seconds': 0.0, 'phase2_seconds': 0.0,
                'gaussian_test_seconds': time.time() - t0}
  if config.kernel_source in ('lrdip', 'edges'):  # one by one, as super_resolve; the
    t0 = time.time()                              # fallbacks join `rest`
    shortcuts = [sc or source_shortcut(lr, window, config, log)[0]
                 for sc, lr in zip(shortcuts, full01s)]
    info['source_seconds'] = time.time() - t0
  rest = [i for i, sc in enumerate(shortcuts) if sc is None]
  if len(rest) < n:
    log(f'{len(gaussian_cases)} of {n} cases Gaussian, {n - len(rest) - len(gaussian_cases)} '
        f'with an LR-scale kernel ({config.kernel_source}); the phases run on the other '
        f'{len(rest)}')
  hrs = np.zeros((n,) + tuple(np.multiply(full01s.shape[1:3], config.scale)) + (3,), np.float32)
  ks = np.zeros((n, config.kernel.size, config.kernel.size), np.float32)
  for i, sc in enumerate(shortcuts):
    if sc is not None:                  # exactly super_resolve's output for the case
      hrs[i], ks[i] = sc[0], sc[1]
  if window is not None:
    info['kernel_window'] = list(window)
  if rest:
    hrs[rest], ks[rest], timing = _batch_phases(full01s[rest], config, log)
    info.update(timing)
  return hrs, ks, info


def _batch_phases(full01s, config: ml_collections.ConfigDict, log: Callable):
  """Both phases on N same-size cases at once, then each case's kernel and final step:
  ``(hrs, kernels, timing)`` (:func:`super_resolve_batch`, without the Gaussian test)."""
  win01s, window = kernel_window(full01s, config)
  lrs = jnp.asarray(win01s * 2.0 - 1.0)
  n = lrs.shape[0]
  mesh = batching.case_mesh(n)
  put = lambda tree: batching.shard_cases(tree, mesh)
  lrs = put(lrs)
  key = jax.random.PRNGKey(config.seed)
  timing: dict = {'devices': 1 if mesh is None else mesh.size}
  t0 = time.time()
  pd_params = None
  if config.phase2.mode in phase2.PD_MODES:
    c = config.pd
    k1 = jax.random.fold_in(key, 1)
    crop = min(c.crop, lrs.shape[1], lrs.shape[2])
    pd, optimizer, run, chunk, _ = _phase1_fns(_sections_json(config, PHASE1_SECTIONS), crop,
                                               True, mesh)
    state = put(_stack(phase1.init_state(pd, optimizer, jax.random.fold_in(k1, 0), crop), n))
    progress = _Progress('Phase 1 (batched)', c.steps, 'steps', log)
    while int(np.asarray(state.step)[0]) < c.steps:
      state, loss = guarded(run, state, jax.random.fold_in(k1, 1), lrs, what='Phase 1')
      progress.update(int(np.asarray(state.step)[0]), float(np.mean(np.asarray(loss))))
    pd_params = state.ema_params
  timing['phase1_seconds'] = time.time() - t0
  t1 = time.time()
  c = config.phase2
  k2 = jax.random.fold_in(key, 2)
  models, optimizer, run, schedule, _ = _phase2_fns(_sections_json(config, PHASE2_SECTIONS), True,
                                                    mesh)
  data = phase2.Data(lr=lrs, pd_params=pd_params)
  plan = phase2.timestep_plan(t_start=min(c.t_start, schedule.num_steps), stride=c.stride)
  init = lambda lr: phase2.init_state(models.unet, models.inr, optimizer, jax.random.fold_in(k2, 0),
                                      lr, scale=config.scale, mode=c.mode)
  state = put(jax.vmap(init)(lrs))
  progress = _Progress('Phase 2 (batched)', len(plan.t), 'timesteps', log)
  done = 0
  while done < len(plan.t):
    m = chunk_length(done, len(plan.t), c.chunk)
    ts = phase2.Timestep(*(jnp.asarray(a[done:done + m]) for a in plan))
    state, trace = guarded(run, state, jax.random.fold_in(k2, 1), ts,
                           c.n_iter_first if done == 0 else c.n_iter, data, what='Phase 2')
    done += m
    progress.update(done, float(np.mean(np.asarray(trace['loss_last'])[:, -1])))
  ks = jax.vmap(lambda p: render_kernel(models.inr, p, config.kernel.size))(state.inr_params)
  ks = np.stack([blind_kernel(k, lr, config) for k, lr in zip(np.asarray(ks, np.float32), win01s)])
  hrs = np.asarray((state.x0_prev[:, 0] + 1.0) / 2.0)
  hrs = np.stack([final_projection(None if window else hr, lr, k, config)
                  for hr, lr, k in zip(hrs, full01s, ks)])
  timing['phase2_seconds'] = time.time() - t1
  return hrs, ks, timing


def config_to_json(config: ml_collections.ConfigDict) -> str:
  """The effective config as indented JSON (logged next to every result)."""
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)
