r"""A blind Gaussian kernel estimate from the LR power spectrum (marginal likelihood).

Not KernelFusion: a fast, training-free estimate of the kernel's *width and
orientation*, the ``spectral_bp`` reference of :mod:`kfjax.evaluation`. Under a
Gaussian image prior whose power spectrum falls as ``1/|f|^alpha`` (natural
images: alpha ≈ 2), the LR image ``y = D(k ⊛ x) + n`` of the forward model
(:func:`kfjax.degradation.downscale`, stride s) is Gaussian with a covariance
that is diagonal in the Fourier domain of the (periodic) LR grid: at each LR
frequency ω its power is

    C(ω) = c · Σ_a |k̂(ω + a)|² · |ω + a|^(−alpha) + n,

the sum running over the s² HR frequencies that alias onto ω. ``c`` (the
image's contrast) and ``n`` (the noise power) are fitted for each kernel, so
the negative log marginal likelihood

    L(k) = mean_ω [ |ŷ(ω)|² / C(ω) + log C(ω) ]

scores a kernel by how well its blur explains the fall-off of the LR spectrum
(Levin et al. 2011 use the same Gaussian-prior marginal likelihood for blind
deblurring). It sees only |k̂|, so it cannot tell a kernel from its mirror
image, but for the centro-symmetric Gaussian family, the anisotropic Gaussian
``(σ₁, σ₂, θ)`` that minimises L is a well-posed, three-parameter fit
(:func:`fit_gaussian`): a grid search, then Nelder–Mead, on the centre 128×128
LR pixels at most; ~1 s for a 64×64 LR crop, ~3 s for a DIV2K-size image on a
2-core CPU.

Measured in docs/results.md, "A spectral Gaussian kernel": on DIV2KRK's
Gaussian kernels its kernel error is 0.24 (kernelfusion's mixture: 0.42), and
with a TV SR (λ 1e-4) it scores what the true kernel does. On motion kernels
it is no better than the other estimators. alpha = 2 measured best of 1.4–2.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

from kfjax import io
from kfjax import kernels
from kfjax import sparse_kernel

DEFAULTS = dict(alpha=2.0, window=128, sigma_min=0.6, sigma_max=8.0)
"""The estimator's settings (:func:`fit_gaussian`), measured in docs/results.md."""


def periodic_component(y) -> np.ndarray:
  """The periodic component of a 2-D image (Moisan 2011, "Periodic plus smooth").

  Removes the smooth image whose Laplacian equals the jumps across the image's
  borders, so that the DFT of the rest has no cross-shaped border artefact.
  """
  y = np.asarray(y, np.float64)
  h, w = y.shape
  v = np.zeros_like(y)
  v[0, :] += y[-1, :] - y[0, :]
  v[-1, :] += y[0, :] - y[-1, :]
  v[:, 0] += y[:, -1] - y[:, 0]
  v[:, -1] += y[:, 0] - y[:, -1]
  q = np.arange(h)[:, None]
  r = np.arange(w)[None, :]
  den = 2 * np.cos(2 * np.pi * q / h) + 2 * np.cos(2 * np.pi * r / w) - 4
  den[0, 0] = 1.0
  smooth = np.fft.fft2(v) / den
  smooth[0, 0] = 0.0
  return y - np.real(np.fft.ifft2(smooth))


def _frequencies(n: int) -> np.ndarray:
  """DFT frequencies of an n-point grid, in cycles per pixel, in FFT order."""
  return np.fft.fftfreq(n)


def prior_power(hr_shape: tuple[int, int], alpha: float) -> np.ndarray:
  """``|f|^(−alpha)`` on the HR DFT grid (FFT order), 0 at f = 0."""
  fy = _frequencies(hr_shape[0])[:, None]
  fx = _frequencies(hr_shape[1])[None, :]
  f2 = fy ** 2 + fx ** 2
  f2[0, 0] = np.inf
  return f2 ** (-alpha / 2)


def aliased_gain(kernel, scale: int, lr_shape: tuple[int, int], prior) -> np.ndarray:
  """``Σ_a |k̂(ω + a)|² · prior(ω + a)`` on the LR DFT grid: the model's C(ω) at c = 1, n = 0.

  Args:
    kernel: 2-D kernel (its position does not matter: only |k̂| enters).
    scale: SR factor s.
    lr_shape: (h, w) of the LR image.
    prior: (s·h, s·w) prior power on the HR DFT grid (:func:`prior_power`).
  """
  h, w = lr_shape
  k = np.asarray(kernel, np.float64)
  if k.shape[0] > scale * h or k.shape[1] > scale * w:
    raise ValueError(f'kernel {k.shape} larger than the HR grid {(scale * h, scale * w)}')
  kh = np.abs(np.fft.fft2(k, s=(scale * h, scale * w))) ** 2
  # HR index (q + a·h, r + b·w) aliases onto LR index (q, r) under stride-s sampling.
  return (kh * prior).reshape(scale, h, scale, w).sum(axis=(0, 2))


def neg_log_evidence(power, gain, *, max_iter: int = 100) -> float:
  """``min over c, n of mean[ power / (c·gain + n) + log(c·gain + n) ]`` (DC excluded).

  ``power`` is ``|ŷ|²`` of the LR image and ``gain`` :func:`aliased_gain`; the
  contrast c and noise power n are fitted by Newton's method on their logarithms
  (exact gradient and Hessian, a backtracking line search, a gradient step
  where the Hessian is not positive definite), within ±40 of the start, until
  the value changes by less than 1e-12 relative; where no step descends (a gain
  of very wide range), L-BFGS-B goes on from there. Lower is a better explanation
  of the LR spectrum. (The fourteenth session's L-BFGS-B solve stopped up to
  1e-5 above this minimum and took 3–30× as long: ~20 s of a 128×128 fit.)
  """
  p = np.asarray(power, np.float64).ravel()[1:]
  g = np.asarray(gain, np.float64).ravel()[1:]
  t = np.array([np.log(p.mean() / g.mean()), np.log(p.mean() * 1e-3)])
  lo, hi = t - 40.0, t + 40.0                       # keeps exp() finite
  value = lambda t: _nle_terms(t, p, g)
  a, b, cov, f = value(t)
  for _ in range(max_iter):
    u = (1.0 - p / cov) / cov                       # ∂f/∂cov
    v = (2.0 * p / cov - 1.0) / cov ** 2            # ∂²f/∂cov²
    grad = np.array([np.mean(u * a), np.mean(u) * b])
    hab = np.mean(v * a) * b
    hess = np.array([[np.mean(v * a * a + u * a), hab], [hab, np.mean(v) * b * b + grad[1]]])
    step = -grad
    if np.all(np.linalg.eigvalsh(hess) > 0):
      step = -np.linalg.solve(hess, grad)
    slope, s = float(grad @ step), 1.0
    while True:
      t_new = np.clip(t + s * step, lo, hi)
      a_new, b_new, cov_new, f_new = value(t_new)
      if f_new <= f + 1e-4 * s * slope or s < 1e-10:
        break
      s *= 0.5
    if f_new > f:                                   # no descent found: L-BFGS-B from here
      return _nle_lbfgs(p, g, t, lo, hi)
    converged = abs(f - f_new) <= 1e-12 * max(1.0, abs(f))
    t, a, b, cov, f = t_new, a_new, b_new, cov_new, f_new
    if converged:
      break
  return float(f)


def _nle_terms(t, p, g):
  """(a, b, cov, value) of :func:`neg_log_evidence`'s objective at t = (log c, log n)."""
  a, b = np.exp(t[0]) * g, np.exp(t[1])
  cov = a + b
  return a, b, cov, np.mean(p / cov + np.log(cov))


def _nle_lbfgs(p, g, t0, lo, hi) -> float:
  """:func:`neg_log_evidence`'s objective minimised by L-BFGS-B from ``t0`` (the fallback)."""
  def f(t):
    a, b, cov, value = _nle_terms(t, p, g)
    u = (1.0 - p / cov) / cov
    return value, np.array([np.mean(u * a), np.mean(u) * b])

  return float(optimize.minimize(f, t0, jac=True, method='L-BFGS-B',
                                 bounds=list(zip(lo, hi))).fun)


def gaussian_kernel(sigma1: float, sigma2: float, theta: float, size: int,
                    scale: int = 1) -> np.ndarray:
  """An anisotropic Gaussian sampled on (size, size), summing to 1.

  σ₁ along the direction θ (radians from the x axis), σ₂ across it, both in
  HR pixels. Centred (sub-pixel) at ``size//2 + (scale − 1)/2`` on each axis,
  the position :func:`kfjax.kernels.align_for_scale` gives kernels for the
  bicubic baseline's pixel grid.
  """
  # θ is measured with rows pointing down; kernels.gaussian_samples' angle with y up.
  k = kernels.gaussian_samples(size, (sigma1, sigma2), -np.degrees(theta), (scale - 1) / 2)
  return k / k.sum()


def lr_power(lr01, window: int = DEFAULTS['window']) -> np.ndarray:
  """``|ŷ|²`` of the periodic component of the LR luma (centre window×window at most)."""
  y = sparse_kernel.luma(lr01)
  if window > 0:
    top, left, h, w = io.center_box(*y.shape, window)
    y = y[top:top + h, left:left + w]
  return np.abs(np.fft.fft2(periodic_component(y))) ** 2


def fit_gaussian(lr01, scale: int, size: int, *, alpha: float = DEFAULTS['alpha'],
                 window: int = DEFAULTS['window'], sigma_min: float = DEFAULTS['sigma_min'],
                 sigma_max: float = DEFAULTS['sigma_max']) -> tuple[np.ndarray, dict]:
  """The anisotropic Gaussian kernel of maximal marginal likelihood (module docstring).

  Args:
    lr01: (h, w, C) LR image in [0, 1] (C = 1 or 3; luma is used).
    scale: SR factor s.
    size: kernel support K at the HR scale.
    alpha: the image prior's power-spectrum exponent.
    window: fit on the centre window×window LR pixels at most (0 = all).
    sigma_min, sigma_max: the grid's range of σ, in HR pixels.

  Returns:
    ``(kernel, info)``: the (size, size) float32 kernel summing to 1, centred
    for ``scale``, and ``info`` with sigma1 ≥ sigma2, theta, the evidence
    ``nle`` (:func:`neg_log_evidence`), ``nle_no_blur`` (the same for the delta
    kernel) and ``evidence_gain`` = nle − nle_no_blur: how much better the
    Gaussian explains the LR spectrum than no blur at all (more negative =
    more clearly Gaussian-blurred; docs/results.md, fourteenth session).
  """
  power = lr_power(lr01, window)
  prior = prior_power((scale * power.shape[0], scale * power.shape[1]), alpha)

  def score(s1, s2, th):
    return neg_log_evidence(power, aliased_gain(gaussian_kernel(s1, s2, th, size), scale,
                                                power.shape, prior))

  sigmas = np.geomspace(sigma_min, sigma_max, 10)
  grid = [(s1, s2, th) for s1 in sigmas for s2 in sigmas if s2 <= s1
          for th in (np.linspace(0, np.pi, 8, endpoint=False) if s2 < s1 else [0.0])]
  best = min(grid, key=lambda p: score(*p))
  res = optimize.minimize(lambda t: score(np.exp(t[0]), np.exp(t[1]), t[2]),
                          [np.log(best[0]), np.log(best[1]), best[2]], method='Nelder-Mead',
                          options=dict(xatol=1e-3, fatol=1e-7, maxiter=200))
  s1, s2, th = float(np.exp(res.x[0])), float(np.exp(res.x[1])), float(res.x[2])
  if s2 > s1:
    s1, s2, th = s2, s1, th + np.pi / 2
  delta = np.zeros((size, size))
  delta[size // 2, size // 2] = 1.0
  no_blur = neg_log_evidence(power, aliased_gain(delta, scale, power.shape, prior))
  info = dict(sigma1=s1, sigma2=s2, theta=float(np.mod(th, np.pi)), nle=float(res.fun),
              nle_no_blur=float(no_blur), evidence_gain=float(res.fun - no_blur))
  return gaussian_kernel(s1, s2, th, size, scale).astype(np.float32), info


def estimate_kernel(lr01, scale: int, size: int, **kwargs) -> np.ndarray:
  """The (size, size) float32 kernel of :func:`fit_gaussian` alone."""
  return fit_gaussian(lr01, scale, size, **kwargs)[0]
