"""DDPM maths with v-parameterisation: schedules and x0 / ε / v conversions.

All functions are pure and keyword-only. ``alpha_bar`` (ᾱ_t) is a scalar or an
array that broadcasts against the images, so the same functions serve a batch
of timesteps (reshape ᾱ to (N, 1, 1, 1)) and a single one.

    x_t = √ᾱ·x0 + √(1−ᾱ)·ε
    v   = √ᾱ·ε − √(1−ᾱ)·x0
    x0  = √ᾱ·x_t − √(1−ᾱ)·v
    ε   = √(1−ᾱ)·x_t + √ᾱ·v
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class Schedule(NamedTuple):
  """A discrete DDPM noise schedule of T steps (index t = 0 … T−1)."""
  betas: jnp.ndarray
  alpha_bars: jnp.ndarray     # cumulative products ᾱ_t = ∏_{τ≤t} (1 − β_τ)

  @property
  def num_steps(self) -> int:
    return int(self.betas.shape[0])


def linear_schedule(*, num_steps: int = 1000, beta_start: float = 1e-4,
                    beta_end: float = 0.02) -> Schedule:
  """The linear β schedule of DDPM (Ho et al. 2020), computed in float64."""
  betas = np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)
  alpha_bars = np.cumprod(1.0 - betas)
  return Schedule(jnp.asarray(betas, jnp.float32), jnp.asarray(alpha_bars, jnp.float32))


def q_sample(*, x0, eps, alpha_bar):
  """Samples x_t ~ q(x_t | x0) with the given noise: √ᾱ·x0 + √(1−ᾱ)·ε."""
  return jnp.sqrt(alpha_bar) * x0 + jnp.sqrt(1.0 - alpha_bar) * eps


def v_from_x0_eps(*, x0, eps, alpha_bar):
  """The v-prediction target: √ᾱ·ε − √(1−ᾱ)·x0."""
  return jnp.sqrt(alpha_bar) * eps - jnp.sqrt(1.0 - alpha_bar) * x0


def x0_from_v(*, x_t, v, alpha_bar):
  """x̂0 = √ᾱ·x_t − √(1−ᾱ)·v."""
  return jnp.sqrt(alpha_bar) * x_t - jnp.sqrt(1.0 - alpha_bar) * v


def eps_from_v(*, x_t, v, alpha_bar):
  """ε̂ = √(1−ᾱ)·x_t + √ᾱ·v."""
  return jnp.sqrt(1.0 - alpha_bar) * x_t + jnp.sqrt(alpha_bar) * v


def eps_from_x0(*, x_t, x0, alpha_bar):
  """ε = (x_t − √ᾱ·x0) / √(1−ᾱ)."""
  return (x_t - jnp.sqrt(alpha_bar) * x0) / jnp.sqrt(1.0 - alpha_bar)


def posterior(*, x0, x_t, alpha_bar_t, alpha_bar_s):
  """Mean and variance of q(x_s | x_t, x0) for s < t (strided DDPM posterior).

  With ᾱ_{t|s} = ᾱ_t / ᾱ_s and β_{t|s} = 1 − ᾱ_{t|s}:

      mean = √ᾱ_s·β_{t|s}/(1−ᾱ_t) · x0 + √ᾱ_{t|s}·(1−ᾱ_s)/(1−ᾱ_t) · x_t
      var  = (1−ᾱ_s)/(1−ᾱ_t) · β_{t|s}

  For s = t−1 this is the usual DDPM posterior with β_t. Pass ᾱ_s = 1 for
  s = −1 (the clean image): the mean is then x0 and the variance 0.
  """
  a_ts = alpha_bar_t / alpha_bar_s
  b_ts = 1.0 - a_ts
  mean = (jnp.sqrt(alpha_bar_s) * b_ts / (1.0 - alpha_bar_t) * x0
          + jnp.sqrt(a_ts) * (1.0 - alpha_bar_s) / (1.0 - alpha_bar_t) * x_t)
  var = (1.0 - alpha_bar_s) / (1.0 - alpha_bar_t) * b_ts
  return mean, var


def visited_timesteps(*, t_start: int, stride: int) -> np.ndarray:
  """The reverse-diffusion timesteps, from ``t_start − 1`` down to 0 inclusive.

  ``ceil(t_start / stride)`` timesteps, evenly spaced (rounded), always
  containing both ends. ``stride = 1`` visits every timestep.
  """
  if t_start < 1 or stride < 1:
    raise ValueError(f't_start and stride must be ≥ 1, got {t_start}, {stride}')
  n = max(1, -(-t_start // stride))
  if n == 1:
    return np.array([t_start - 1], np.int32)
  return np.round(np.linspace(t_start - 1, 0, n)).astype(np.int32)
