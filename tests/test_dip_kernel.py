"""Tests for kfjax.dip_kernel (the LR-scale DIP kernel estimator behind ``lrdip_bp``)."""

from absl.testing import absltest
import jax
import numpy as np

from kfjax import degradation
from kfjax import dip_kernel
from kfjax import kernels
from kfjax import metrics

_SMALL = dict(width=16, levels=3)        # a small U-Net: seconds on a CPU


def _rectangles(seed: int, size: int) -> np.ndarray:
  """A piecewise-constant colour test image: 12 random rectangles on black."""
  rng = np.random.default_rng(seed)
  x = np.zeros((size, size, 3), np.float32)
  for _ in range(12):
    (i, j), (h, w) = rng.integers(0, size - 8, 2), rng.integers(4, 14, 2)
    x[i:i + h, j:j + w] = rng.uniform(0, 1, 3)
  return x


def _line(n: int = 5) -> np.ndarray:
  """An n-px horizontal motion blur on an n×n support."""
  k = np.zeros((n, n))
  k[n // 2] = 1.0 / n
  return k


class DipKernelTest(absltest.TestCase):

  def test_lr_support(self):
    self.assertEqual(dip_kernel.lr_support(33, 4), 11)   # ⌈33/4⌉ = 9, + 2
    self.assertEqual(dip_kernel.lr_support(17, 2), 11)
    self.assertEqual(dip_kernel.lr_support(24, 4), 9)    # 6 + 2 = 8, made odd

  def test_spread_ratio(self):
    self.assertAlmostEqual(dip_kernel.spread_ratio(np.ones((33, 33))), 1.0)   # uniform
    delta = np.zeros((33, 33))
    delta[16, 16] = 1.0
    self.assertEqual(dip_kernel.spread_ratio(delta), 0.0)
    line = np.zeros((33, 33))
    line[16, 4:29] = 1.0                      # 25 px: σ = √((25² − 1)/12)
    self.assertAlmostEqual(dip_kernel.spread_ratio(line), np.sqrt((25 ** 2 - 1) / (33 ** 2 - 1)))

  def test_recovers_a_motion_blur(self):
    # A 5-px horizontal blur of a sharp image: the estimate is a horizontal line,
    # far closer to the truth than the uniform start or no blur.
    truth = _line()
    y = np.asarray(degradation.downscale(_rectangles(0, 40), truth.astype(np.float32), 1))
    est, loss = dip_kernel.estimate_lr_kernel(y, 7, steps=600, **_SMALL)
    self.assertEqual(est.shape, (7, 7))
    self.assertAlmostEqual(est.sum(), 1.0, places=6)
    self.assertLess(loss, 2e-3)
    nerr = lambda k: metrics.kernel_metrics(k, truth)['kernel_nerr']
    delta = np.zeros((7, 7))
    delta[3, 3] = 1.0
    self.assertLess(nerr(est), 0.5)
    self.assertLess(nerr(est), 0.5 * min(nerr(delta), nerr(np.full((7, 7), 1 / 49))))
    (minor, major), _ = kernels.principal_spread(est)
    self.assertGreater(major, 2 * minor)
    self.assertGreater(est.sum(1).max(), 0.8)            # one row holds the mass
    self.assertLess(dip_kernel.spread_ratio(est), dip_kernel.spread_ratio(np.ones((7, 7))))

  def test_deterministic_for_a_seed(self):
    y = np.asarray(degradation.downscale(_rectangles(1, 32), _line().astype(np.float32), 1))
    a, _ = dip_kernel.estimate_lr_kernel(y, 5, steps=20, seed=3, **_SMALL)
    b, _ = dip_kernel.estimate_lr_kernel(y, 5, steps=20, seed=3, **_SMALL)
    c, _ = dip_kernel.estimate_lr_kernel(y, 5, steps=20, seed=4, **_SMALL)
    np.testing.assert_array_equal(a, b)
    self.assertGreater(np.abs(a - c).max(), 0)

  def test_hr_kernel_is_the_lifted_lr_kernel(self):
    # estimate_kernel = estimate_lr_kernel, spread over s×s blocks and centred for s.
    lr = np.asarray(degradation.downscale(_rectangles(2, 96), kernels.align_for_scale(
        np.kron(_line(), np.ones((4, 4))), 24, 4, max_loss=1.0), 4))
    settings = dict(steps=30, window=16, **_SMALL)
    hr_k = dip_kernel.estimate_kernel(lr, 4, 33, **settings)
    lr_k, _ = dip_kernel.estimate_lr_kernel(lr, dip_kernel.lr_support(33, 4), **settings)
    self.assertEqual(hr_k.shape, (33, 33))
    self.assertEqual(hr_k.dtype, np.float32)
    self.assertAlmostEqual(float(hr_k.sum()), 1.0, places=5)
    np.testing.assert_array_equal(hr_k, kernels.align_for_scale(
        kernels.lift_lr_kernel(lr_k, 4), 33, 4, max_loss=1.0))

  def test_windows_fitted_jointly(self):
    # A stack of one window is the image itself; two images blurred by one line give one
    # kernel, the line.
    truth = _line().astype(np.float32)
    ys = [np.asarray(degradation.downscale(_rectangles(s, 40), truth, 1)) for s in (0, 5)]
    settings = dict(steps=20, window=0, **_SMALL)
    np.testing.assert_array_equal(dip_kernel.estimate_lr_kernel(ys[0][None], 7, **settings)[0],
                                  dip_kernel.estimate_lr_kernel(ys[0], 7, **settings)[0])
    est, loss = dip_kernel.estimate_lr_kernel(np.stack(ys), 7, steps=600, **_SMALL)
    self.assertAlmostEqual(est.sum(), 1.0, places=6)
    self.assertLess(loss, 1e-2)
    self.assertLess(metrics.kernel_metrics(est, truth)['kernel_nerr'], 0.5)
    self.assertGreater(est.sum(1).max(), 0.8)            # one row holds the mass

  def test_one_compilation_per_setting(self):
    y = np.asarray(degradation.downscale(_rectangles(3, 24), _line().astype(np.float32), 1))
    dip_kernel.estimate_lr_kernel(y, 5, steps=3, **_SMALL)
    _, step = dip_kernel._step_fn(5, 16, 3, *(
        dip_kernel.DEFAULTS[k] for k in ('lr_image', 'lr_kernel', 'reg_noise')))
    before = step._cache_size()
    dip_kernel.estimate_lr_kernel(y, 5, steps=5, seed=1, **_SMALL)
    self.assertEqual(step._cache_size(), before)


if __name__ == '__main__':
  jax.config.update('jax_platforms', 'cpu')
  absltest.main()
