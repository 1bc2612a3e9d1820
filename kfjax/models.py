"""The three networks of KernelFusion (Flax Linen; use them through ``apply``).

* :class:`PatchDiffusion` — the patch-diffusion (PD) denoiser, fully
  convolutional with a 15×15 receptive field, predicting v.
* :class:`UNet` — a DIP-style encoder/decoder with skips (a global image prior).
* :class:`KernelINR` — a SIREN from (y, x) ∈ [−1, 1]² to a kernel value.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=None)
def jit_init(module: nn.Module):
  """``module.init`` as one compiled program, cached per module config.

  Run eagerly, ``init`` compiles every initialiser and every layer of the forward pass as its
  own small program (hundreds per model; on a GPU each convolution at the image's size is also
  autotuned). Under ``jit`` the forward pass, whose output ``init`` discards, is dead code.
  The params are the same as eager ``init``'s.
  """
  return jax.jit(module.init)


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
  """Sinusoidal embedding of integer timesteps ``t`` (shape (N,)) → (N, dim)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class PatchDiffusion(nn.Module):
  """The PD network: v̂ = PD(x_t, t), receptive field exactly 15×15.

  One block of two 3×3 convs, then ``num_blocks`` blocks of (3×3 conv + 1×1
  conv), then a 1×1 output conv: 2 + num_blocks 3×3 convs, so the receptive
  field is 1 + 2·(2 + 5) = 15 with the paper's five blocks. No stride, pooling,
  normalisation, attention or any other global layer, so the same weights
  apply to an image of any size. The timestep enters as a per-channel bias
  after the first conv of every block (sinusoidal → MLP).
  """
  width: int = 128             # channels of every hidden layer
  num_blocks: int = 5          # (3×3 + 1×1) blocks after the first block
  out_channels: int = 3
  dtype: jnp.dtype = jnp.float32   # computation dtype of the convs (bf16 on GPU)

  @nn.compact
  def __call__(self, x, t):
    """x: (N, H, W, C) noisy images in ≈[−1, 1]; t: (N,) integer timesteps."""
    emb = timestep_embedding(t, self.width)
    emb = nn.Dense(self.width * 2, dtype=jnp.float32)(emb)
    emb = nn.Dense(self.width, dtype=jnp.float32)(nn.silu(emb))
    emb = nn.silu(emb)

    def conv(h, size, name):
      return nn.Conv(self.width, (size, size), padding='SAME', dtype=self.dtype,
                     name=name)(h)

    def add_t(h, name):
      bias = nn.Dense(self.width, dtype=jnp.float32, name=name)(emb)
      return h + bias[:, None, None, :].astype(h.dtype)

    h = x.astype(self.dtype)
    h = nn.silu(add_t(conv(h, 3, 'in_conv0'), 'in_t'))
    h = nn.silu(conv(h, 3, 'in_conv1'))
    for i in range(self.num_blocks):
      h = nn.silu(add_t(conv(h, 3, f'block{i}_3x3'), f'block{i}_t'))
      h = nn.silu(conv(h, 1, f'block{i}_1x1'))
    out = nn.Conv(self.out_channels, (1, 1), dtype=self.dtype, name='out')(h)
    return out.astype(jnp.float32)

  @property
  def receptive_field(self) -> int:
    return 1 + 2 * (2 + self.num_blocks)


def upsample2(x):
  """Nearest-neighbour ×2 upsampling of (N, H, W, C) as a broadcast and a reshape.

  Equal to ``jax.image.resize(x, (N, 2H, 2W, C), 'nearest')``, which XLA runs as a gather
  whose gradient is a scatter-add: on an H100 those scatters took 8 ms of an 81.5 ms Phase-2
  step at 2048×1344 (docs/speed.md); this form's gradient is a plain sum over the copies.
  """
  n, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c))
  return x.reshape(n, 2 * h, 2 * w, c)


class UNet(nn.Module):
  """A DIP-style encoder/decoder with skip connections (Ulyanov et al. 2018).

  Each level: a stride-2 3×3 conv and a 3×3 conv down (LeakyReLU 0.2); a
  ``skip`` 1×1 conv taps the level input; on the way up, nearest-neighbour ×2
  upsampling, concatenation with the skip, then a 3×3 and a 1×1 conv. Inputs
  are reflect-padded to a multiple of 2^levels and the output is cropped back.

  With ``residual=True`` the output is ``x + Δ(x)`` and the last conv starts at
  zero, so the U-Net starts as the identity (our default: the first timestep
  then begins from the bicubic guess instead of from noise).
  """
  features: Sequence[int] = (64, 64, 64, 64)   # channels per level (len = levels)
  skip: int = 4                                # channels of each skip tap
  out_channels: int = 3
  residual: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    """x: (N, H, W, C) → (N, H, W, out_channels)."""
    levels = len(self.features)
    mult = 2 ** levels
    n, h, w, _ = x.shape
    ph, pw = (-h) % mult, (-w) % mult
    inp = x
    x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode='reflect') if (ph or pw) else x
    act = lambda z: nn.leaky_relu(z, 0.2)
    conv = lambda f, k, s=1: nn.Conv(f, (k, k), strides=(s, s), padding='SAME',
                                     dtype=self.dtype)
    hcur = x.astype(self.dtype)
    skips = []
    for f in self.features:
      skips.append(act(conv(self.skip, 1)(hcur)))
      hcur = act(conv(f, 3, 2)(hcur))
      hcur = act(conv(f, 3)(hcur))
    for f, s in zip(reversed(self.features), reversed(skips)):
      hcur = upsample2(hcur)
      hcur = jnp.concatenate([hcur, s], axis=-1)
      hcur = act(conv(f, 3)(hcur))
      hcur = act(conv(f, 1)(hcur))
    init = nn.initializers.zeros if self.residual else nn.initializers.lecun_normal()
    out = nn.Conv(self.out_channels, (1, 1), dtype=self.dtype, kernel_init=init,
                  name='out')(hcur).astype(jnp.float32)
    out = out[:, :h, :w, :]
    return inp + out if self.residual else out


def _siren_init(omega0: float, first: bool):
  def init(key, shape, dtype=jnp.float32):
    fan_in = shape[0]
    bound = 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / omega0
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class KernelINR(nn.Module):
  """SIREN (Sitzmann et al. 2020) from coordinates to an unnormalised kernel value.

  ``num_layers`` sine layers of ``width`` units with frequency ``omega0``,
  then a linear layer to one value and the near-positive activation
  ``(1 + 1e−4)·sigmoid(z + prior) − 1e−4``. ``prior`` is an optional fixed
  logit bias (our choice; ``prior_sigma`` 0 disables it): an isotropic
  Gaussian bump of std ``prior_sigma`` (in the [−1, 1] coordinate units) that
  goes from the logit ``prior_peak`` at the centre to ``prior_floor`` far
  from it. The floor matters: on a 33×33 support a floor of −3 (sigmoid
  0.047) holds ~85% of the first kernel's mass, i.e. the first kernel is a
  box blur with a spike; −8 makes it a centred blob. Normalise with
  :func:`render_kernel`.
  """
  width: int = 256
  num_layers: int = 5
  omega0: float = 5.0
  prior_sigma: float = 0.3
  prior_peak: float = 3.0
  prior_floor: float = -3.0

  @nn.compact
  def __call__(self, coords):
    """coords: (..., 2) in [−1, 1]² → (...) values in (−1e−4, 1)."""
    h = coords
    for i in range(self.num_layers):
      dense = nn.Dense(self.width, kernel_init=_siren_init(self.omega0, i == 0),
                       bias_init=nn.initializers.uniform(1.0 / coords.shape[-1])
                       if i == 0 else nn.initializers.zeros)
      h = jnp.sin(self.omega0 * dense(h))
    z = nn.Dense(1, kernel_init=_siren_init(self.omega0, False))(h)[..., 0]
    if self.prior_sigma > 0:
      r2 = jnp.sum(coords ** 2, axis=-1)
      bump = jnp.exp(-r2 / (2 * self.prior_sigma ** 2))
      z = z + self.prior_floor + (self.prior_peak - self.prior_floor) * bump
    return (1 + 1e-4) * jax.nn.sigmoid(z) - 1e-4


def kernel_grid(size: int, oversample: int = 1) -> jnp.ndarray:
  """(n, n, 2) pixel-centre coordinates in [−1, 1]² for a size×size support.

  ``oversample = m`` samples the same square m× more finely (n = size·m), to
  render the continuous kernel at a finer grid for display.
  """
  n = size * oversample
  half = (size - 1) / 2
  pos = (np.arange(n) + 0.5) / oversample - 0.5       # in input-pixel units
  c = (pos - half) / max(half, 1e-9)
  yy, xx = np.meshgrid(c, c, indexing='ij')
  return jnp.asarray(np.stack([yy, xx], -1), jnp.float32)


def render_kernel(inr: KernelINR, params, size: int, oversample: int = 1):
  """Evaluates the INR on the support grid and normalises it to sum 1."""
  k = inr.apply(params, kernel_grid(size, oversample))
  return k / jnp.sum(k)
