"""Tests for kfjax.spectral_kernel (the Gaussian kernel fit to the LR power spectrum)."""

from absl.testing import absltest
import numpy as np

from kfjax import degradation
from kfjax import metrics
from kfjax import spectral_kernel as sk


def _power_law_image(seed: int, size: int, alpha: float = 2.0) -> np.ndarray:
  """A random (size, size, 3) grey image whose power spectrum falls as 1/|f|^alpha."""
  rng = np.random.default_rng(seed)
  amp = np.sqrt(sk.prior_power((size, size), alpha))
  x = np.real(np.fft.ifft2(amp * np.fft.fft2(rng.standard_normal((size, size)))))
  x = 0.5 + 0.15 * x / x.std()
  return np.repeat(x[..., None], 3, -1).astype(np.float32)


class SpectralKernelTest(absltest.TestCase):

  def test_periodic_component_keeps_an_image_without_border_jumps(self):
    yy, xx = np.mgrid[:32, :48]                    # first row = last row, first col = last col
    y = np.sin(2 * np.pi * 3 * xx / 47) + np.cos(2 * np.pi * 2 * yy / 31)
    np.testing.assert_allclose(sk.periodic_component(y), y, atol=1e-10)

  def test_periodic_component_removes_the_border_jump(self):
    yy, xx = np.mgrid[:32, :32].astype(np.float64)
    ramp = xx / 31.0                                   # a 1.0 jump across the wrap-around
    p = sk.periodic_component(ramp)
    self.assertLess(np.abs(p[:, 0] - p[:, -1]).max(), 0.2)
    self.assertAlmostEqual(float(p.mean()), float(ramp.mean()), places=10)

  def test_aliased_gain_of_a_delta(self):
    prior = sk.prior_power((8, 12), 2.0)
    delta = np.ones((1, 1))
    np.testing.assert_allclose(sk.aliased_gain(delta, 1, (8, 12), prior), prior)
    # At s = 2, LR frequency (1, 2) of a 4×6 grid collects HR (1|5, 2|8).
    g = sk.aliased_gain(delta, 2, (4, 6), prior)
    self.assertAlmostEqual(g[1, 2], prior[1, 2] + prior[5, 2] + prior[1, 8] + prior[5, 8])

  def test_aliased_gain_is_the_power_of_downscaled_white_noise(self):
    """The model's C(ω) for a white prior, against the measured LR power (periodic blur)."""
    scale, lr_hw, reps = 2, (16, 16), 400
    k = sk.gaussian_kernel(2.0, 0.7, 0.5, 9)
    rng = np.random.default_rng(0)
    power = np.zeros(lr_hw)
    kh = np.fft.fft2(k, s=(32, 32))
    for _ in range(reps):
      x = rng.standard_normal((32, 32))
      y = np.real(np.fft.ifft2(np.fft.fft2(x) * kh))[::scale, ::scale]
      power += np.abs(np.fft.fft2(y)) ** 2 / reps
    want = sk.aliased_gain(k, scale, lr_hw, np.ones((32, 32)))
    ratio = power / want
    self.assertLess(ratio.std() / ratio.mean(), 0.1)   # ~0.05 sampling noise at 400 draws

  def test_neg_log_evidence_is_the_minimum_over_contrast_and_noise(self):
    """The Newton solve reaches the minimum of the 2-parameter objective: no point of a
    fine grid around it is lower, and the value matches the closed form of a pure-noise
    spectrum (gain 0 everywhere but DC: the minimum is at n = mean(power))."""
    rng = np.random.default_rng(3)
    power = sk.lr_power(_power_law_image(3, 48)) * rng.uniform(0.5, 1.5, (48, 48))
    prior = sk.prior_power((96, 96), 2.0)
    for kernel in (np.eye(1), sk.gaussian_kernel(2.5, 0.9, 0.4, 15)):
      gain = sk.aliased_gain(kernel, 2, (48, 48), prior)
      best = sk.neg_log_evidence(power, gain)
      p, g = power.ravel()[1:], gain.ravel()[1:]
      f = lambda c, n: np.mean(p / (c * g + n) + np.log(c * g + n))
      c0 = p.mean() / g.mean()
      grid = min(f(c0 * a, p.mean() * b) for a in np.geomspace(1e-3, 1e3, 61)
                 for b in np.geomspace(1e-6, 1, 61))
      self.assertLessEqual(best, grid + 1e-9)
      self.assertGreater(best, grid - 0.05)          # the grid is near the minimum
    noise = np.full((16, 16), 1e-30)
    p = power[:16, :16]
    self.assertAlmostEqual(sk.neg_log_evidence(p, noise),
                           np.mean(1.0 + np.log(np.mean(p.ravel()[1:]))), places=5)

  def test_fit_recovers_an_anisotropic_gaussian(self):
    scale, size = 4, 33
    gt = sk.gaussian_kernel(3.2, 1.6, 0.6, size, scale)
    hr = _power_law_image(0, 512)
    lr = np.asarray(degradation.downscale(hr, gt, scale))
    k, info = sk.fit_gaussian(lr, scale, size)
    self.assertAlmostEqual(float(k.sum()), 1.0, places=5)
    self.assertLess(abs(info['sigma1'] / 3.2 - 1), 0.1)
    self.assertLess(abs(info['sigma2'] / 1.6 - 1), 0.15)
    self.assertLess(abs(info['theta'] - 0.6), 0.1)
    self.assertLess(metrics.kernel_metrics(k, gt)['kernel_nerr'], 0.15)

  def test_the_true_kernel_explains_the_spectrum_best(self):
    scale = 4
    gt = sk.gaussian_kernel(2.5, 2.5, 0.0, 25, scale)
    lr = np.asarray(degradation.downscale(_power_law_image(1, 256), gt, scale))
    power = sk.lr_power(lr)
    prior = sk.prior_power((4 * power.shape[0], 4 * power.shape[1]), 2.0)
    nle = lambda k: sk.neg_log_evidence(power, sk.aliased_gain(k, scale, power.shape, prior))
    for wrong in (sk.gaussian_kernel(1.5, 1.5, 0.0, 25), sk.gaussian_kernel(4.0, 4.0, 0.0, 25),
                  sk.gaussian_kernel(4.0, 1.5, 0.0, 25)):
      self.assertLess(nle(gt), nle(wrong))


if __name__ == '__main__':
  absltest.main()
