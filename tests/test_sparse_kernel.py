"""Tests for kfjax.sparse_kernel (the classical L0 kernel estimator behind ``sparse_bp``)."""

from absl.testing import absltest
import numpy as np
from scipy import ndimage

from kfjax import degradation
from kfjax import kernels
from kfjax import metrics
from kfjax import sparse_kernel


def _blocks(seed: int, size: int) -> np.ndarray:
  """A piecewise-constant test image: 40 random rectangles on grey, (size, size, 3)."""
  rng = np.random.default_rng(seed)
  x = np.full((size, size), 0.5)
  for _ in range(40):
    h, w = rng.integers(6, size // 2, 2)
    i, j = rng.integers(0, size - 6, 2)
    x[i:i + h, j:j + w] = rng.random()
  return np.repeat(x[..., None], 3, -1).astype(np.float32)


class SparseKernelTest(absltest.TestCase):

  def test_patch_matrix_is_the_downscale(self):
    rng = np.random.default_rng(0)
    for scale, size in [(4, 9), (2, 6), (1, 5)]:
      hr = rng.random((24, 20)).astype(np.float32)
      k = rng.random((size, size)).astype(np.float32)
      want = np.asarray(degradation.downscale(hr[..., None], k, scale))[..., 0]
      p = sparse_kernel.patch_matrix(hr, size, scale, want.shape)
      np.testing.assert_allclose(p @ k.ravel(), want, rtol=1e-5, atol=1e-5)

  def test_kernel_step_recovers_the_kernel_from_the_true_hr(self):
    size, scale = 13, 2
    gt = kernels.align_for_scale(kernels.anisotropic_gaussian(size, sigmas=(2.4, 1.0)), size,
                                 scale, max_loss=1.0)
    hr = _blocks(1, 96)
    lr = np.asarray(degradation.downscale(hr, gt, scale))
    k = sparse_kernel.fit_kernel_gradients(sparse_kernel.luma(hr), sparse_kernel.luma(lr),
                                           scale, size)
    self.assertAlmostEqual(float(k.sum()), 1.0, places=6)
    self.assertGreaterEqual(float(k.min()), 0.0)
    self.assertLess(metrics.kernel_metrics(k, gt)['kernel_nerr'], 0.3)

  def test_l0_restore_fits_the_data_when_the_prior_is_weak(self):
    lr = sparse_kernel.luma(_blocks(2, 32))
    lr = ndimage.gaussian_filter(lr, 1.0)
    delta = np.zeros((3, 3), np.float32)
    delta[1, 1] = 1.0
    x = sparse_kernel.l0_restore(lr, delta, 1, np.zeros_like(lr), lam=1e-7)
    np.testing.assert_allclose(x, lr, atol=2e-3)
    # A strong prior flattens the smooth ramps: less gradient energy.
    flat = sparse_kernel.l0_restore(lr, delta, 1, lr, lam=3e-2)
    energy = lambda im: float(np.sum(np.diff(im, axis=0) ** 2) + np.sum(np.diff(im, axis=1) ** 2))
    self.assertLess(energy(flat), 0.75 * energy(lr))

  def test_grow_kernel_scales_the_shape(self):
    k = kernels.anisotropic_gaussian(9, sigmas=(1.5, 0.7))
    g = sparse_kernel.grow_kernel(k, 17)
    self.assertAlmostEqual(float(g.sum()), 1.0, places=6)
    def spread(a):
      r = np.arange(a.shape[0]) - (a.shape[0] - 1) / 2
      return np.sqrt(np.sum(a * r[:, None] ** 2)), np.sqrt(np.sum(a * r[None, :] ** 2))
    # bilinear interpolation adds a little spread of its own (≈ 1/6 px²)
    np.testing.assert_allclose(spread(g), np.array(spread(k)) * 17 / 9, rtol=0.1)
    np.testing.assert_allclose(sparse_kernel.grow_kernel(k, 9), k / k.sum(), atol=1e-12)

  def test_levels(self):
    self.assertEqual(sparse_kernel.levels(1), [1])
    self.assertEqual(sparse_kernel.levels(2), [1, 2])
    self.assertEqual(sparse_kernel.levels(3), [1, 2, 3])
    self.assertEqual(sparse_kernel.levels(4), [1, 2, 4])

  def test_blind_estimate_beats_an_isotropic_guess(self):
    """x2, a 48×48 LR of rectangles blurred by an elongated Gaussian: the blind
    estimate is closer to the truth than the best-sized isotropic blob."""
    size, scale = 13, 2
    gt = kernels.align_for_scale(kernels.anisotropic_gaussian(size, sigmas=(2.4, 1.0)), size,
                                 scale, max_loss=1.0)
    lr = np.asarray(degradation.downscale(_blocks(0, 96), gt, scale))
    k = sparse_kernel.estimate_kernel(lr, scale, size)
    self.assertEqual(k.shape, (size, size))
    self.assertAlmostEqual(float(k.sum()), 1.0, places=5)
    err = metrics.kernel_metrics(k, gt)['kernel_nerr']
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1.0
    blobs = [metrics.kernel_metrics(ndimage.gaussian_filter(delta, s), gt)['kernel_nerr']
             for s in (1.0, 1.4, 1.8, 2.2)]
    self.assertLess(err, 0.9 * min(blobs))     # measured: 0.366 vs 0.432

  def test_large_images_use_the_centre_window(self):
    lr = np.asarray(degradation.downscale(_blocks(4, 112), kernels.anisotropic_gaussian(9), 2))
    whole = sparse_kernel.estimate_kernel(lr, 2, 9, window=40)          # 56×56 LR → centre 40²
    centre = sparse_kernel.estimate_kernel(lr[8:48, 8:48], 2, 9, window=0)
    np.testing.assert_array_equal(whole, centre)

  def test_deterministic(self):
    lr = np.asarray(degradation.downscale(_blocks(3, 64), kernels.anisotropic_gaussian(9), 2))
    a = sparse_kernel.estimate_kernel(lr, 2, 9)
    b = sparse_kernel.estimate_kernel(lr, 2, 9)
    np.testing.assert_array_equal(a, b)


if __name__ == '__main__':
  absltest.main()
