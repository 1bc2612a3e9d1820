"""Tests for kfjax.edge_kernel (the LR-scale kernel from predicted edges, coarse to fine)."""

from absl.testing import absltest
import numpy as np
from scipy import ndimage

from kfjax import degradation
from kfjax import edge_kernel
from kfjax import kernels
from kfjax import metrics
from kfjax import sparse_kernel


def _discs(seed: int, size: int) -> np.ndarray:
  """A 2-D test image of 40 random discs on grey: edges in every direction."""
  rng = np.random.default_rng(seed)
  x = np.full((size, size), 0.5)
  yy, xx = np.mgrid[:size, :size]
  for _ in range(40):
    cy, cx = rng.uniform(0, size, 2)
    radius = rng.uniform(3, size / 6)
    x[(yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2] = rng.random()
  return x


def _blur(x, k) -> np.ndarray:
  """The forward model at scale 1 (kfjax.degradation.downscale) on a 2-D image."""
  return np.asarray(degradation.downscale(x[..., None].astype(np.float32),
                                          k.astype(np.float32), 1))[..., 0].astype(np.float64)


def _line(n: int) -> np.ndarray:
  """A diagonal motion path of n LR pixels, off centre: a kernel no blob matches."""
  k = np.zeros((n, n))
  for i in range(1, n - 1):
    k[i, n - 1 - i] = 1.0 + 0.1 * i
  return k / k.sum()


class EdgeKernelTest(absltest.TestCase):

  def test_pyramid_sizes(self):
    self.assertEqual(edge_kernel.pyramid_sizes(9), [3, 5, 7, 9])
    self.assertEqual(edge_kernel.pyramid_sizes(17), [3, 5, 7, 9, 13, 17])
    self.assertEqual(edge_kernel.pyramid_sizes(3), [3])
    self.assertEqual(edge_kernel.lr_support(33, 4), 9)
    self.assertEqual(edge_kernel.lr_support(32, 4), 9)

  def test_select_keeps_the_largest_gradients_per_orientation(self):
    x = np.random.default_rng(0).random((40, 40))
    gx, gy = edge_kernel.gradients(x)
    px, py = edge_kernel.select_gradients(x, 3, 0.5)
    kept = (px != 0) | (py != 0)
    self.assertEqual(int(kept.sum()), 4 * int(0.5 * np.sqrt(x.size * 9)))
    np.testing.assert_array_equal(px[kept], gx[kept])
    np.testing.assert_array_equal(py[kept], gy[kept])
    mag = np.hypot(gx, gy)         # every kept gradient beats every dropped one of its bin
    ang = np.mod(np.arctan2(gy, gx), np.pi)
    horizontal = (ang < np.pi / 4) & (mag > 0)
    self.assertGreaterEqual(mag[kept & horizontal].min(), mag[~kept & horizontal].max())

  def test_remove_pedestal_subtracts_a_share_of_the_peak(self):
    k = np.array([[0.1, 0.5], [1.0, 0.2]])
    np.testing.assert_allclose(edge_kernel.remove_pedestal(k, 0.2),
                               np.array([[0.0, 0.3], [0.8, 0.0]]) / 1.1)
    np.testing.assert_allclose(edge_kernel.remove_pedestal(k, 0.0), k / k.sum())

  def test_kernel_step_recovers_the_kernel_from_the_sharp_gradients(self):
    k = _line(7)
    x = _discs(1, 64)
    y = _blur(x, k)
    got = edge_kernel.fit_kernel(*edge_kernel.gradients(x), y, 7, gamma=1e-6)
    np.testing.assert_allclose(got, k, atol=5e-3)   # symmetric borders: not exactly

  def test_soften_takes_the_soft_latent_edges_out_of_the_kernel(self):
    # The sharp latent's edges are soft (Gaussian σ 0.5) where the prediction has steps:
    # the plain kernel step folds that softness into the kernel, `soften` keeps it out.
    k = _line(7)
    x = _discs(3, 64)
    y = _blur(ndimage.gaussian_filter(x, 0.5), k)
    grads = edge_kernel.gradients(x)
    plain = edge_kernel.fit_kernel(*grads, y, 7, gamma=1e-6, threshold=0.0)
    soft = edge_kernel.fit_kernel(*grads, y, 7, gamma=1e-6, threshold=0.0, soften=0.5)
    np.testing.assert_allclose(soft, k, atol=2e-2)
    self.assertGreater(np.abs(plain - k).max(), 0.05)
    var = lambda kk: np.trace(kernels.second_moments(kk)[1])
    self.assertGreater(var(plain), var(k) + 0.3)      # wider by about 2σ² = 0.5 px²
    self.assertLess(abs(var(soft) - var(k)), 0.1)

  def test_hr_edges_take_the_block_means_ramps_out_of_the_kernel(self):
    # The LR grid's sharp image is an HR image's 4×4 block means, whose step edges are
    # one-pixel ramps: the plain prediction (steps between LR pixels) folds them into the
    # kernel, which comes out too wide; predicted at the HR scale and block-averaged, the
    # edges are ramps too, and the kernel is nearer the truth on each of three images.
    k = kernels.anisotropic_gaussian(5, sigmas=(0.5, 0.7), theta=0.4).astype(np.float64)
    var = lambda kk: np.trace(kernels.second_moments(kk)[1])
    for seed in range(3):
      hr = _discs(seed, 384)
      y = _blur(hr.reshape(96, 4, 96, 4).mean((1, 3)), k)
      plain = edge_kernel.estimate_lr_kernel(y, 5)
      fine = edge_kernel.estimate_lr_kernel(y, 5, hr_edges=4)
      nerr = lambda kk: metrics.kernel_metrics(kk, k)['kernel_nerr']
      self.assertLess(nerr(fine), 0.7 * nerr(plain))
      self.assertGreater(var(plain) - var(k), 0.15)
      self.assertLess(abs(var(fine) - var(k)), 0.5 * (var(plain) - var(k)))
    last = edge_kernel.estimate_lr_kernel(y, 5, hr_edges=4, hr_levels=1)
    self.assertFalse(np.allclose(last, fine) or np.allclose(last, plain))

  def test_predict_edges_keeps_an_hr_steps_sub_pixel_position(self):
    # A vertical HR step at x = 64 + t, block-averaged: LR pixel 16 holds (4 − t)/4 of the
    # jump. The HR-scale prediction keeps that ramp to 0.06 at every t; the plain shock
    # filter pushes it towards a step between two LR pixels (off by more than 0.15).
    for t in (1, 2, 3):
      hr = np.zeros((32, 128))
      hr[:, 64 + t:] = 1.0
      lr = hr.reshape(8, 4, 32, 4).mean((1, 3))
      self.assertAlmostEqual(lr[4, 16], (4 - t) / 4)
      fine = edge_kernel.predict_edges(lr, hr_edges=4)
      self.assertAlmostEqual(float(fine[4, 16]), (4 - t) / 4, delta=0.06)
      self.assertGreater(abs(float(edge_kernel.shock_filter(lr)[4, 16]) - (4 - t) / 4), 0.15)
    np.testing.assert_array_equal(edge_kernel.predict_edges(lr, hr_edges=0),
                                  edge_kernel.shock_filter(lr))

  def test_deconvolve_inverts_the_blur_in_the_interior(self):
    # A well-conditioned blur, off centre (a wrong convention would shift the result): with
    # a tiny α the interior comes back exactly; a delta kernel with α = 0 returns y.
    block = np.array([[0.02, 0.05, 0.02], [0.05, 0.72, 0.05], [0.02, 0.05, 0.02]])
    k = np.pad(block, ((0, 2), (1, 1)))
    x = _discs(2, 64)
    y = _blur(x, k)
    got = edge_kernel.deconvolve(y, k, alpha=1e-6)
    inner = (slice(8, -8),) * 2
    self.assertLess(np.abs(got - x)[inner].max(), 1e-4)
    self.assertGreater(np.abs(y - x)[inner].max(), 0.1)
    delta = np.zeros((3, 3))
    delta[1, 1] = 1.0
    np.testing.assert_allclose(edge_kernel.deconvolve(y, delta, alpha=0.0), y, atol=1e-9)

  def test_blind_estimate_finds_a_motion_path(self):
    """On four images of random discs (edges in every direction) blurred by a diagonal
    path, the blind estimate is always closer to the path than a blob, and in the median
    far closer."""
    k = _line(7)
    errs = []
    for seed in range(4):
      got = edge_kernel.estimate_lr_kernel(_blur(_discs(seed, 112), k), 7)
      self.assertAlmostEqual(float(got.sum()), 1.0, places=9)
      errs.append(metrics.kernel_metrics(got, k)['kernel_nerr'])
    blob = metrics.kernel_metrics(kernels.anisotropic_gaussian(7, sigmas=(1.2, 1.2)), k)
    self.assertLess(max(errs), blob['kernel_nerr'])
    self.assertLess(np.median(errs), 0.5 * blob['kernel_nerr'])

  def test_estimate_kernel_is_an_aligned_hr_kernel(self):
    lr = np.repeat(_blur(_discs(4, 48), _line(5))[..., None], 3, -1).astype(np.float32)
    k = edge_kernel.estimate_kernel(lr, 4, 19)
    self.assertEqual(k.shape, (19, 19))
    self.assertEqual(k.dtype, np.float32)
    self.assertAlmostEqual(float(k.sum()), 1.0, places=5)
    want = kernels.align_for_scale(kernels.lift_lr_kernel(
        edge_kernel.estimate_lr_kernel(lr, 5), 4), 19, 4, max_loss=1.0)
    np.testing.assert_allclose(k, want, atol=1e-7)
    self.assertEqual(sparse_kernel.luma(lr).shape, (48, 48))


if __name__ == '__main__':
  absltest.main()
