"""Phase 1: train the patch-diffusion (PD) model on the LR image alone.

The step is a pure function ``step(state, rng) -> (state, metrics)``: random
crops of the LR image (with the 8 flips/rotations), a uniformly drawn
timestep, the v-prediction loss ‖PD(x_t, t) − v‖², one Adam update and an EMA
of the weights. :func:`run_steps` drives many steps per compiled call.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from kfjax import batching, diffusion, models
from kfjax.models import PatchDiffusion


class PDState(flax.struct.PyTreeNode):
  """Phase-1 state: the PD params, their EMA and the Adam state."""
  step: jnp.ndarray
  params: Any
  ema_params: Any
  opt_state: Any


def make_optimizer(lr: float, grad_clip: float = 1.0) -> optax.GradientTransformation:
  """Adam with global-norm gradient clipping (clipping is our choice)."""
  return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(lr))


def init_state(model: PatchDiffusion, optimizer, key, crop: int) -> PDState:
  """Initialises the PD params (on a crop×crop input), their EMA and Adam."""
  params = models.jit_init(model)(key, jnp.zeros((1, crop, crop, 3)), jnp.zeros((1,), jnp.int32))
  return PDState(step=jnp.zeros((), jnp.int32), params=params,
                 ema_params=jax.tree.map(jnp.copy, params),
                 opt_state=optimizer.init(params))


def _dihedral(x, k):
  """Applies the k-th (0…7) of the 8 flips/90° rotations to an (H, W, C) square crop."""
  x = jax.lax.cond(k >= 4, lambda z: z[:, ::-1], lambda z: z, x)
  return jax.lax.switch(k % 4, [lambda z, r=r: jnp.rot90(z, r) for r in range(4)], x)


def random_crops(key, image, *, crop: int, batch: int, augment: bool = True, valid_hw=None):
  """``batch`` random crop×crop windows of an (H, W, C) image, randomly flipped/rotated.

  ``valid_hw`` (optional, may be traced): only the top-left (h, w) pixels are
  real (the rest is padding, see :func:`kfjax.pipeline.pad_to_bucket`); windows
  are drawn inside them. Omitted, it is the whole image; the draws are the same.
  """
  h, w, c = image.shape
  if valid_hw is not None:
    h, w = valid_hw[0], valid_hw[1]
  ky, kx, ka = jax.random.split(key, 3)
  ys = jax.random.randint(ky, (batch,), 0, h - crop + 1)
  xs = jax.random.randint(kx, (batch,), 0, w - crop + 1)
  crops = jax.vmap(lambda y, x: jax.lax.dynamic_slice(image, (y, x, 0), (crop, crop, c)))(ys, xs)
  if augment:
    ks = jax.random.randint(ka, (batch,), 0, 8)
    crops = jax.vmap(_dihedral)(crops, ks)
  return crops


def v_loss(model: PatchDiffusion, schedule: diffusion.Schedule, params, x0, t, eps):
  """The training objective: mean ‖PD(x_t, t) − v‖² over crops ``x0`` at timesteps ``t``.

  ``x_t`` = √ᾱ_t·x0 + √(1−ᾱ_t)·eps and v = √ᾱ_t·eps − √(1−ᾱ_t)·x0 (v-prediction).
  """
  ab = schedule.alpha_bars[t][:, None, None, None]
  x_t = diffusion.q_sample(x0=x0, eps=eps, alpha_bar=ab)
  target = diffusion.v_from_x0_eps(x0=x0, eps=eps, alpha_bar=ab)
  pred = model.apply(params, x_t, t)
  return jnp.mean((pred - target) ** 2)


def make_eval_loss(model: PatchDiffusion, schedule: diffusion.Schedule, image, key, *,
                   crop: int, n: int, t_max: int) -> Callable:
  """A fixed yardstick of a PD: ``eval_loss(params) -> v_loss`` on one drawn set.

  ``n`` crops of ``image`` (no flips), at ``n`` evenly spaced timesteps in
  [0, t_max) and with noise, all drawn once from ``key``. The training loss of a
  step varies with its random draws; this one does not, so curves of it show
  when training has reached its plateau (``tools/bench_speed.py --plateau_batches``).
  """
  k_crop, k_eps = jax.random.split(key)
  x0 = random_crops(k_crop, jnp.asarray(image), crop=crop, batch=n, augment=False)
  t = (jnp.arange(n) * t_max) // n
  eps = jax.random.normal(k_eps, x0.shape)
  return jax.jit(lambda params: v_loss(model, schedule, params, x0, t, eps))


def make_train_step(model: PatchDiffusion, optimizer, schedule: diffusion.Schedule, *,
                    crop: int, batch: int, t_max: int, ema_decay: float,
                    augment: bool = True) -> Callable:
  """Builds the pure Phase-1 step ``step(state, rng, image) -> (state, metrics)``.

  The LR image is an argument, not a constant of the step, so one compiled
  step serves every image of the same size.

  Args:
    model: the PD network.
    optimizer: an optax transformation (see :func:`make_optimizer`).
    schedule: the DDPM schedule.
    crop, batch: crop size (≤ the image's sides) and number of crops per step.
    t_max: timesteps are drawn uniformly from [0, t_max).
    ema_decay: EMA decay of the weights used by Phase 2.
    augment: apply random flips and 90° rotations.

  The step's ``image`` is the LR image, (H, W, 3) in [−1, 1], or a pair
  ``(image, valid_hw)`` for a padded image whose real pixels are the top-left
  ``valid_hw`` = (h, w) (an int32 array: images of one padded size share the
  compiled step).
  """

  loss_fn = functools.partial(v_loss, model, schedule)

  def step(state: PDState, rng, image):
    k_crop, k_t, k_eps = jax.random.split(rng, 3)
    image, valid_hw = image if isinstance(image, tuple) else (image, None)
    x0 = random_crops(k_crop, image, crop=crop, batch=batch, augment=augment, valid_hw=valid_hw)
    t = jax.random.randint(k_t, (batch,), 0, t_max)
    eps = jax.random.normal(k_eps, x0.shape)
    loss, grads = jax.value_and_grad(loss_fn)(state.params, x0, t, eps)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = optax.incremental_update(params, state.ema_params, 1.0 - ema_decay)
    new = state.replace(step=state.step + 1, params=params, ema_params=ema,
                        opt_state=opt_state)
    return new, {'loss': loss}

  return step


def make_chunk_runner(step: Callable, *, chunk: int, driver: str = 'scan',
                      batched: bool = False, mesh=None) -> Callable:
  """Wraps ``step`` as ``run(state, key, image) -> (state, mean_loss)`` doing ``chunk`` steps.

  The rng of step n is ``fold_in(key, n)``, so a run is deterministic and can
  resume from any saved step. ``driver='scan'`` compiles the chunk as one
  ``lax.scan`` (one dispatch per chunk; best on GPU); ``'loop'`` jits the single
  step and loops in Python (on XLA:CPU, weight gradients inside loops can
  compile to much slower code). Both give the same result.

  ``batched=True`` runs N cases at once: ``state`` and ``image`` carry a
  leading case axis (``jax.vmap``), the key is shared, so case i follows
  exactly the computation of a single run on image i. With a ``mesh``
  (:func:`kfjax.batching.case_mesh`) the cases are split over its devices.
  """
  def keyed(s, key, image):
    return step(s, jax.random.fold_in(key, s.step), image)
  if batched:
    keyed = batching.batch_map(keyed, (0, None, 0), mesh)
  if driver == 'scan':
    @functools.partial(jax.jit, donate_argnums=(0,))
    def run(state, key, image):
      def body(s, _):
        s, m = keyed(s, key, image)
        return s, m['loss']
      state, losses = jax.lax.scan(body, state, None, length=chunk)
      return state, jnp.mean(losses, axis=0)
    return run
  if driver == 'loop':
    jstep = jax.jit(keyed, donate_argnums=(0,))
    def run(state, key, image):
      losses = []
      for _ in range(chunk):
        state, m = jstep(state, key, image)
        losses.append(m['loss'])
      return state, jnp.mean(jnp.stack(losses), axis=0)
    return run
  raise ValueError(f'unknown Phase-1 driver {driver!r} (use scan or loop)')
