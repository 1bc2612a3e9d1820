r"""A blind kernel at the LR grid's own scale, from a deep-image-prior deblurring of the LR.

Our addition, not the paper's. ``docs/results.md`` ("What the LR grid sees of
the kernel") found that the SR kernel's gain lies almost all in what the LR
pixels resolve of it: its s×s block sums. With those known, the final steps
gain +1.5 dB or more over bicubic on the motion-blur sets. With a kernel
lifted from an LR-scale one (:func:`kfjax.kernels.lift_lr_kernel`), the
downscale is an LR-scale convolution of the HR image's block means, so
finding it is a blind *deblurring* of the LR image itself, with a kernel of a
few LR pixels.

This module solves that deblurring as SelfDeblur does (Ren et al. 2020,
"Neural blind deconvolution using deep priors"), with the same two parts as
KernelFusion's Phase 2, at scale 1:

* the sharp LR image ``z = sigmoid(G_θ(η))``, a DIP-style U-Net
  (:class:`kfjax.models.UNet`) from fixed noise η (perturbed slightly each
  step), which gives the image prior;
* the kernel ``k = softmax(φ)`` on n×n LR pixels, from uniform logits;

fitted jointly by Adam to ``min ‖downscale(z, k, 1) − y‖²``
(:func:`kfjax.degradation.downscale`, so the convention is the forward
model's). The uniform start makes the early z sharper than y; the kernel then
narrows to the blur. The final LR kernel is lifted to the HR grid and centred
for the scale (:func:`estimate_kernel`). Where it never narrows, it is not
used (:func:`spread_ratio`). About 35 s for a 64×64 LR window on a
2-core CPU (1500 steps). The settings were chosen on blind144 crop mini by the
mean over its 12 cases. The estimator finds some motion paths that the
diffusion misses, but it is unreliable: it lost to the committed pipeline on a
held-out set, so no config uses it by default (docs/results.md, "A kernel at
the LR grid's scale from a deep image prior").
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kfjax import degradation
from kfjax import io
from kfjax import kernels
from kfjax import models

DEFAULTS = dict(steps=1500, lr_image=2e-3, lr_kernel=1e-2, width=64, levels=4,
                noise_channels=8, reg_noise=1e-3, window=64, seed=0)
"""The estimator's settings (:func:`estimate_lr_kernel`), measured in docs/results.md."""


def lr_support(size: int, scale: int) -> int:
  """The LR-scale kernel support for an HR support ``size``: ⌈size/s⌉ plus a margin, odd."""
  return (-(-size // scale) + 2) | 1


@functools.lru_cache(maxsize=8)
def _step_fn(n: int, width: int, levels: int, lr_image: float, lr_kernel: float,
             reg_noise: float):
  """(init, step) for one setting, jitted (once per setting and LR shape)."""
  net = models.UNet(features=(width,) * levels, skip=16, out_channels=3, residual=False)
  opt = optax.multi_transform({'image': optax.adam(lr_image), 'kernel': optax.adam(lr_kernel)},
                              {'image': 'image', 'kernel': 'kernel'})

  def init(key, noise):
    params = {'image': net.init(key, noise), 'kernel': jnp.zeros((n, n), jnp.float32)}
    return params, opt.init(params)

  def loss_fn(params, noise, y):
    z = jax.nn.sigmoid(net.apply(params['image'], noise))
    k = jax.nn.softmax(params['kernel'].ravel()).reshape(n, n)
    return jnp.mean((degradation.downscale(z, k, 1) - y) ** 2)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, noise, y, key, i):
    noisy = noise + reg_noise * jax.random.normal(jax.random.fold_in(key, i), noise.shape)
    loss, grads = jax.value_and_grad(loss_fn)(params, noisy, y)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(init), step


def estimate_lr_kernel(lr01, n: int, *, steps: int = DEFAULTS['steps'],
                       lr_image: float = DEFAULTS['lr_image'],
                       lr_kernel: float = DEFAULTS['lr_kernel'],
                       width: int = DEFAULTS['width'], levels: int = DEFAULTS['levels'],
                       noise_channels: int = DEFAULTS['noise_channels'],
                       reg_noise: float = DEFAULTS['reg_noise'],
                       window: int = DEFAULTS['window'],
                       seed: int = DEFAULTS['seed']) -> tuple[np.ndarray, float]:
  """The n×n LR-scale blur of an LR image, blind (module docstring).

  Args:
    lr01: (h, w, 3) LR image in [0, 1]; or (m, h, w, 3), m windows of one image
      fitted jointly: one kernel, one U-Net, one input noise per window, the
      loss their mean (``docs/results.md``: not better than one window).
    n: the LR-scale kernel support (odd).
    steps: Adam steps.
    lr_image, lr_kernel: Adam learning rates of the U-Net and the kernel logits.
    width, levels: the U-Net's channels per level and its number of levels.
    noise_channels, reg_noise: the fixed input noise's channels, and the std of
      the perturbation added to it each step.
    window: run on the centre window×window LR pixels at most (0: all).
    seed: the U-Net's initialisation, the input noise and its perturbations.

  Returns:
    ``(kernel, loss)``: the (n, n) float64 kernel, summing to 1, in
    :func:`kfjax.degradation.downscale`'s convention at scale 1; and the final
    data loss.
  """
  y = np.asarray(lr01, np.float32)
  y = y if y.ndim == 4 else y[None]
  if window > 0:
    top, left, h, w = io.center_box(*y.shape[1:3], window)
    y = y[:, top:top + h, left:left + w]
  y = jnp.asarray(y)
  key = jax.random.PRNGKey(seed)
  k_init, k_noise, k_steps = jax.random.split(key, 3)
  noise = 0.1 * jax.random.uniform(k_noise, y.shape[:3] + (noise_channels,))
  init, step = _step_fn(n, width, levels, lr_image, lr_kernel, reg_noise)
  params, opt_state = init(k_init, noise[:1])      # the same params for any m
  loss = jnp.nan
  for i in range(steps):
    params, opt_state, loss = step(params, opt_state, noise, y, k_steps, i)
  k = np.asarray(jax.nn.softmax(params['kernel'].ravel()), np.float64).reshape(n, n)
  return k / k.sum(), float(loss)


def spread_ratio(kernel) -> float:
  """The kernel's major principal σ over that of a uniform kernel on its whole support.

  A uniform K×K kernel has σ = √((K² − 1)/12) on each axis. The estimator starts from
  the uniform kernel, so a ratio near 1 means that it never narrowed: on the
  tuning sets every such estimate was far off (docs/results.md), and
  ``kernel_source = 'lrdip'`` then falls back to the diffusion's kernel
  (``lrdip.max_spread``).
  """
  k = np.asarray(kernel, np.float64)
  (_, major), _ = kernels.principal_spread(k)
  return float(major / np.sqrt((max(k.shape) ** 2 - 1) / 12.0))


def estimate_kernel(lr01, scale: int, size: int, **settings) -> np.ndarray:
  """The (size, size) HR kernel: :func:`estimate_lr_kernel` lifted and centred.

  The LR kernel (support :func:`lr_support`) is spread over s×s blocks
  (:func:`kfjax.kernels.lift_lr_kernel`) and centred for ``scale``
  (:func:`kfjax.kernels.align_for_scale`); ``settings`` go to
  :func:`estimate_lr_kernel`. Returns a float32 kernel summing to 1.
  """
  k_lr, _ = estimate_lr_kernel(lr01, lr_support(size, scale), **settings)
  return kernels.place_lr_kernel(k_lr, scale, size)
