"""Phase 2: reverse diffusion at HR size, estimating the HR image and the kernel.

For each visited timestep t (from T_nd−1 down to 0) a fresh ε_t is drawn, and
n_iter Adam steps update the U-Net θ and the kernel INR φ together under the
single LR-consistency loss (SPEC §1):

    x_t = √ᾱ_t·U_θ(x0_prev) + √(1−ᾱ_t)·ε_t        # 'fixed' re-noising rule
    x̂0  = U_θ(x0_from_v(x_t, PD(x_t, t)))          # PD frozen, differentiable in x_t
    k̂   = normalise(INR_φ(grid))
    L   = MSE(LR, downscale(x̂0, k̂, s))           # over the real LR pixels

then ``x0_prev ← stop_gradient(x̂0)``. The ablation ``mode`` and the re-noising
rule are arguments; see :func:`make_inner_step`.

Every function here is pure. :func:`make_timestep_runner` drives the loop:
``'scan'`` compiles a whole chunk of timesteps (inner iterations nested) as one
call; ``'loop'`` jits the single inner step and loops in Python, which XLA:CPU
runs several times faster. Both drivers share the same step code and give the
same result.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from kfjax import batching, degradation, diffusion, models
from kfjax.models import KernelINR, PatchDiffusion, UNet, render_kernel

MODES = ('full', 'pd_unet', 'unet_only', 'dip', 'unet_pd')
PD_MODES = ('full', 'pd_unet', 'unet_pd')   # the modes that use the Phase-1 PD
RENOISE_RULES = ('fixed', 'posterior')


class P2State(flax.struct.PyTreeNode):
  """Phase-2 state. ``t_index`` counts finished timesteps, ``step`` inner steps."""
  step: jnp.ndarray
  t_index: jnp.ndarray
  unet_params: Any
  inr_params: Any
  opt_state: Any
  x0_prev: jnp.ndarray       # (1, H, W, 3) current HR estimate, in [−1, 1]
  x_t: jnp.ndarray           # (1, H, W, 3) last noisy image (for the posterior rule)
  noise_input: jnp.ndarray   # (1, H, W, 3) fixed U-Net input of the 'dip' mode


class Data(NamedTuple):
  """What a Phase-2 step reads but never changes: the LR target and the frozen PD.

  ``kernel`` (optional) makes the run non-blind: the loss uses this known
  (K, K) kernel instead of the INR's (which then gets no gradient).
  ``lr_mask`` (optional) marks the real LR pixels of a padded image
  (:func:`kfjax.pipeline.pad_to_bucket`); the loss averages over them only.
  """
  lr: jnp.ndarray            # (h, w, 3) LR image in [−1, 1]
  pd_params: Any             # frozen PD (EMA) params; None for the modes without PD
  kernel: Any = None         # known (K, K) kernel summing to 1, or None (blind: the INR's)
  lr_mask: Any = None        # (h, w, 1): 1 on real LR pixels, 0 on padding; None: all real


class Timestep(NamedTuple):
  """Per-timestep inputs: t, the previously visited t, and whether it is the first."""
  t: jnp.ndarray
  t_prev: jnp.ndarray
  first: jnp.ndarray


def make_optimizer(lr_unet: float, lr_kernel: float) -> optax.GradientTransformation:
  """One Adam over {'unet', 'inr'}, with a learning rate per parameter set."""
  return optax.multi_transform({'unet': optax.adam(lr_unet), 'inr': optax.adam(lr_kernel)},
                               {'unet': 'unet', 'inr': 'inr'})


def init_state(unet: UNet, inr: KernelINR, optimizer, key, lr_image, *, scale: int,
               mode: str) -> P2State:
  """Initial Phase-2 state: fresh U-Net and INR, and x0_prev = bicubic(LR).

  Args:
    lr_image: (h, w, 3) LR image in [−1, 1].
  """
  k_unet, k_inr, k_noise = jax.random.split(key, 3)
  hr0 = degradation.bicubic_upscale(lr_image, scale)[None]
  # The U-Net is fully convolutional: its params depend on the channels only, so a small
  # input gives the same params and one compiled init serves every image size.
  tile = 2 ** len(unet.features)
  unet_params = models.jit_init(unet)(k_unet, jnp.zeros((1, tile, tile, hr0.shape[-1])))
  inr_params = models.jit_init(inr)(k_inr, jnp.zeros((1, 2)))
  noise = (0.1 * jax.random.normal(k_noise, hr0.shape) if mode == 'dip'
           else jnp.zeros((1, 1, 1, 1)))
  params = {'unet': unet_params, 'inr': inr_params}
  return P2State(step=jnp.zeros((), jnp.int32), t_index=jnp.zeros((), jnp.int32),
                 unet_params=unet_params, inr_params=inr_params,
                 opt_state=optimizer.init(params), x0_prev=hr0, x_t=jnp.copy(hr0),
                 noise_input=noise)


def make_inner_step(unet: UNet, inr: KernelINR, pd: PatchDiffusion | None, optimizer,
                    schedule: diffusion.Schedule, *, scale: int, kernel_size: int,
                    mode: str = 'full', renoise: str = 'fixed') -> Callable:
  """Builds the pure inner step ``inner(state, ts, eps, data) -> (state, (loss, x̂0, x_t))``.

  ``data`` is a :class:`Data` (LR target and frozen PD params): arguments, not
  constants, so one compiled step serves every image of the same size.

  Modes (the paper's Table 3):
    * ``full``: x_t from U(x0_prev), then x̂0 = U(x0_from_v(x_t, PD(x_t, t))).
    * ``pd_unet``: x_t from x0_prev (no first U-Net), then the same x̂0.
    * ``unet_only``: x_t from U(x0_prev), then x̂0 = U(x_t); no PD.
    * ``dip``: x̂0 = U(z) for a fixed noise z; no PD, no diffusion.
    * ``unet_pd`` (ours, not in the paper): x_t from U(x0_prev), then x̂0 =
      x0_from_v(x_t, PD(x_t, t)), with no second U-Net: the HR that meets the
      LR loss is the PD's own denoised estimate, so the U-Net cannot undo
      the patch prior.

  Re-noising rules: ``fixed`` uses x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε_t; ``posterior``
  samples the DDPM posterior q(x_t | x_{t_prev}, x0) from the previous noisy
  image (the first timestep uses the fixed rule).
  """
  if mode not in MODES:
    raise ValueError(f'unknown Phase-2 mode {mode!r}; choose one of {MODES}')
  if renoise not in RENOISE_RULES:
    raise ValueError(f'unknown re-noising rule {renoise!r}; choose one of {RENOISE_RULES}')
  if mode in PD_MODES and pd is None:
    raise ValueError(f'mode {mode!r} needs the PD model')

  def noisy(x0, state, ts, eps):
    ab_t = schedule.alpha_bars[ts.t]
    fixed = diffusion.q_sample(x0=x0, eps=eps, alpha_bar=ab_t)
    if renoise == 'fixed':
      return fixed
    mean, var = diffusion.posterior(x0=x0, x_t=state.x_t, alpha_bar_t=schedule.alpha_bars[ts.t_prev],
                                    alpha_bar_s=ab_t)
    return jnp.where(ts.first, fixed, mean + jnp.sqrt(var) * eps)

  def estimate(unet_params, state, ts, eps, pd_params):
    u = lambda x: unet.apply(unet_params, x)
    if mode == 'dip':
      return u(state.noise_input), state.x_t
    start = state.x0_prev if mode == 'pd_unet' else u(state.x0_prev)
    x_t = noisy(start, state, ts, eps)
    if mode == 'unet_only':
      return u(x_t), x_t
    v = pd.apply(jax.lax.stop_gradient(pd_params), x_t, jnp.full((x_t.shape[0],), ts.t))
    x0 = diffusion.x0_from_v(x_t=x_t, v=v, alpha_bar=schedule.alpha_bars[ts.t])
    return (x0 if mode == 'unet_pd' else u(x0)), x_t

  def loss_fn(params, state, ts, eps, data):
    x0_hat, x_t = estimate(params['unet'], state, ts, eps, data.pd_params)
    kernel = (render_kernel(inr, params['inr'], kernel_size) if data.kernel is None
              else data.kernel)
    pred = degradation.downscale(x0_hat[0].astype(jnp.float32), kernel, scale)
    sq = (pred - data.lr) ** 2
    if data.lr_mask is None:
      return jnp.mean(sq), (x0_hat, x_t)
    return jnp.sum(sq * data.lr_mask) / (jnp.sum(data.lr_mask) * sq.shape[-1]), (x0_hat, x_t)

  def inner(state: P2State, ts: Timestep, eps, data: Data):
    params = {'unet': state.unet_params, 'inr': state.inr_params}
    (loss, (x0_hat, x_t)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, state, ts, eps, data)
    updates, opt_state = optimizer.update(grads, state.opt_state, params)
    params = optax.apply_updates(params, updates)
    state = state.replace(step=state.step + 1, unet_params=params['unet'],
                          inr_params=params['inr'], opt_state=opt_state)
    return state, (loss, x0_hat, x_t)

  return inner


def timestep_noise(key, state: P2State):
  """ε_t for the current timestep: ``normal(fold_in(key, t_index))``, HR-shaped."""
  return jax.random.normal(jax.random.fold_in(key, state.t_index), state.x0_prev.shape)


def finish_timestep(state: P2State, x0_hat, x_t) -> P2State:
  """x0_prev ← stop_gradient(x̂0) (clipped to [−1, 1]); advance the timestep counter."""
  return state.replace(x0_prev=jnp.clip(jax.lax.stop_gradient(x0_hat), -1.0, 1.0),
                       x_t=jax.lax.stop_gradient(x_t), t_index=state.t_index + 1)


def make_timestep_runner(inner: Callable, inr: KernelINR, kernel_size: int, *,
                         driver: str = 'scan', batched: bool = False, mesh=None) -> Callable:
  """Wraps the inner step as ``run(state, key, ts, n_iter, data) -> (state, trace)``.

  ``ts`` is a :class:`Timestep` of arrays of length n (a chunk of visited
  timesteps); each gets ``n_iter`` inner steps. ``trace`` holds, per timestep,
  the mean and last loss and the kernel after the timestep. ``'scan'``
  compiles one call per chunk length (``n_iter`` is a traced value, so the
  first timestep's longer run shares the program); ``'loop'`` compiles one
  inner step and loops in Python.

  ``batched=True`` runs N cases at once: ``state`` and ``data`` carry a
  leading case axis (``jax.vmap``), the key and timesteps are shared, and the
  trace's leaves get the case axis first: (N, n, ...). With a ``mesh``
  (:func:`kfjax.batching.case_mesh`) the cases are split over its devices.
  """
  kernel_of = lambda s: render_kernel(inr, s.inr_params, kernel_size)
  vmap = ((lambda f, axes: batching.batch_map(f, axes, mesh)) if batched
          else (lambda f, axes: f))

  if driver == 'scan':
    def chunk(state, key, ts, data, n_iter):
      def one_timestep(state, t):
        eps = timestep_noise(key, state)
        # Carry the x̂0 and x_t of the latest inner iteration and the loss sum. n_iter
        # is traced (a while loop), so the first timestep's longer run reuses the program.
        def body(_, carry):
          s, total, _, _, _ = carry
          s, (loss, x0_hat, x_t) = inner(s, t, eps, data)
          return s, total + loss, loss, x0_hat, x_t
        zero = jnp.zeros((), jnp.float32)
        init = (state, zero, zero, state.x0_prev, state.x_t)
        state, total, last, x0_hat, x_t = jax.lax.fori_loop(0, n_iter, body, init)
        state = finish_timestep(state, x0_hat, x_t)
        return state, {'loss_mean': total / n_iter, 'loss_last': last,
                       'kernel': kernel_of(state)}
      return jax.lax.scan(one_timestep, state, ts)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def run(state, key, ts, n_iter, data):
      n_iter = jnp.asarray(n_iter, jnp.int32)
      return vmap(chunk, (0, None, None, 0, None))(state, key, ts, data, n_iter)
    return run

  if driver == 'loop':
    jinner = jax.jit(vmap(inner, (0, None, 0, 0)), donate_argnums=(0,))
    jnoise = jax.jit(vmap(timestep_noise, (None, 0)))
    jfinish = jax.jit(vmap(finish_timestep, (0, 0, 0)), donate_argnums=(0,))
    jkernel = jax.jit(vmap(kernel_of, (0,)))
    axis = 1 if batched else 0

    def run(state, key, ts, n_iter, data):
      traces = []
      for i in range(len(ts.t)):
        t = Timestep(*(jnp.asarray(a[i]) for a in ts))
        eps = jnoise(key, state)
        losses = []
        for _ in range(n_iter):
          state, (loss, x0_hat, x_t) = jinner(state, t, eps, data)
          losses.append(loss)
        state = jfinish(state, x0_hat, x_t)
        losses = jnp.stack(losses)
        traces.append({'loss_mean': jnp.mean(losses, axis=0), 'loss_last': losses[-1],
                       'kernel': jkernel(state)})
      return state, jax.tree.map(lambda *a: jnp.stack(a, axis=axis), *traces)
    return run
  raise ValueError(f'unknown Phase-2 driver {driver!r} (use scan or loop)')


def timestep_plan(*, t_start: int, stride: int) -> Timestep:
  """All visited timesteps as a :class:`Timestep` of numpy arrays."""
  t = diffusion.visited_timesteps(t_start=t_start, stride=stride)
  t_prev = np.concatenate([t[:1], t[:-1]]).astype(np.int32)
  first = np.zeros(len(t), bool)
  first[0] = True
  return Timestep(t, t_prev, first)


def output_image(state: P2State) -> np.ndarray:
  """The current HR estimate as an (H, W, 3) float array in [0, 1]."""
  return np.asarray((state.x0_prev[0] + 1.0) / 2.0)
