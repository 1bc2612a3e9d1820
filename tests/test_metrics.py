"""Tests for kfjax.metrics: Y-channel PSNR/SSIM against scikit-image, kernel metrics."""


from absl.testing import absltest
from absl.testing import parameterized
import jax.numpy as jnp
import numpy as np
import scipy.ndimage
import skimage.data
import skimage.metrics

from kfjax import degradation
from kfjax import kernels
from kfjax import metrics


def _structured(seed, shape=(72, 90, 3)):
  """A smooth random colour image plus edges, in [0, 1]."""
  rng = np.random.default_rng(seed)
  x = scipy.ndimage.gaussian_filter(rng.random(shape), (3, 3, 0))
  x = (x - x.min()) / (x.max() - x.min())
  x[shape[0] // 3:, : shape[1] // 2] *= 0.5                      # a sharp edge
  return x


def _pairs():
  rng = np.random.default_rng(0)
  gt_r = rng.random((64, 80, 3))
  pred_r = np.clip(gt_r + 0.1 * rng.standard_normal(gt_r.shape), 0, 1)
  gt_s = _structured(1)
  pred_s = np.clip(gt_s + 0.03 * np.random.default_rng(2).standard_normal(gt_s.shape), 0, 1)
  astro = skimage.data.astronaut()[100:180, 200:296] / 255.0
  blurred = scipy.ndimage.gaussian_filter(astro, (1.2, 1.2, 0))
  return [('random', pred_r, gt_r), ('structured', pred_s, gt_s), ('astronaut', blurred, astro)]


def _crop_y(img, border):
  by, bx = border
  y = metrics.rgb_to_y(img)
  return y[by: y.shape[0] - by, bx: y.shape[1] - bx]


class YChannelTest(absltest.TestCase):

  def test_rgb_to_y_range(self):
    self.assertAlmostEqual(float(metrics.rgb_to_y(np.zeros((1, 1, 3)))[0, 0]), 16.0)
    self.assertAlmostEqual(float(metrics.rgb_to_y(np.ones((1, 1, 3)))[0, 0]), 235.0, places=6)
    px = np.array([[[0.2, 0.5, 0.7]]])
    want = 16 + 65.481 * 0.2 + 128.553 * 0.5 + 24.966 * 0.7
    self.assertAlmostEqual(float(metrics.rgb_to_y(px)[0, 0]), want, places=10)

  def test_grey_equals_equal_rgb(self):
    g = np.random.default_rng(0).random((5, 6, 1))
    np.testing.assert_allclose(metrics.rgb_to_y(g), metrics.rgb_to_y(np.repeat(g, 3, -1)),
                               atol=1e-10)
    np.testing.assert_allclose(metrics.rgb_to_y(g[..., 0]), metrics.rgb_to_y(g), atol=0)

  def test_border_5pct(self):
    self.assertEqual(metrics.border_5pct((100, 240, 3)), (5, 12))
    self.assertEqual(metrics.border_5pct((256, 256)), (13, 13))   # 12.8 rounds to 13


class ImageMetricsTest(parameterized.TestCase):

  @parameterized.named_parameters(*[(n, p, g) for n, p, g in _pairs()])
  def test_psnr_matches_skimage(self, pred, gt):
    for border in [(4, 4), metrics.border_5pct(gt.shape), (0, 0)]:
      want = skimage.metrics.peak_signal_noise_ratio(
          _crop_y(gt, border), _crop_y(pred, border), data_range=255)
      self.assertAlmostEqual(metrics.psnr_y(pred, gt, border=border), want, delta=1e-3)

  @parameterized.named_parameters(*[(n, p, g) for n, p, g in _pairs()])
  def test_ssim_matches_skimage(self, pred, gt):
    for border in [(4, 4), metrics.border_5pct(gt.shape)]:
      want = skimage.metrics.structural_similarity(
          _crop_y(gt, border), _crop_y(pred, border), gaussian_weights=True, sigma=1.5,
          use_sample_covariance=False, data_range=255)
      self.assertAlmostEqual(metrics.ssim_y(pred, gt, border=border), want, delta=1e-3)

  def test_border_is_excluded(self):
    gt = _structured(3)
    pred = gt.copy()
    pred[:2] = 0.0                                   # damage only a 2-px strip
    self.assertEqual(metrics.psnr_y(pred, gt, border=2), float('inf'))
    self.assertLess(metrics.psnr_y(pred, gt, border=1), 40)
    self.assertAlmostEqual(metrics.ssim_y(pred, gt, border=2), 1.0, places=5)

  def test_image_metrics(self):
    gt = _structured(4)
    pred = np.clip(gt + 0.05, 0, 1)
    m = metrics.image_metrics(pred, gt, 4)
    self.assertEqual(set(m), {'psnr_y', 'ssim_y', 'psnr_y_s', 'ssim_y_s'})
    b5 = metrics.border_5pct(gt.shape)
    self.assertEqual(m['psnr_y'], metrics.psnr_y(pred, gt, border=b5))
    self.assertEqual(m['psnr_y_s'], metrics.psnr_y(pred, gt, border=4))
    self.assertEqual(m['ssim_y_s'], metrics.ssim_y(pred, gt, border=4))
    same = metrics.image_metrics(gt, gt, 2)
    self.assertEqual(same['psnr_y'], float('inf'))
    self.assertAlmostEqual(same['ssim_y'], 1.0, places=5)

  def test_image_metrics_clips_prediction(self):
    gt = _structured(5)
    over = gt + 0.5                                  # clipping to [0, 1] helps it
    self.assertGreater(metrics.image_metrics(over, gt, 2)['psnr_y'],
                       metrics.image_metrics(over, gt, 2, clip=False)['psnr_y'])

  def test_shape_mismatch(self):
    with self.assertRaises(ValueError):
      metrics.psnr_y(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)), border=0)


class KernelMetricsTest(absltest.TestCase):

  def test_shifted_copy_is_perfect(self):
    k = kernels.camera_shake(15, seed=3)
    shifted = np.roll(np.pad(k, 6), (3, -2), axis=(0, 1))          # 27×27, moved
    m = metrics.kernel_metrics(shifted, k)
    self.assertLess(m['kernel_nerr'], 1e-6)
    self.assertTrue(m['kernel_psnr'] > 100 or m['kernel_psnr'] == float('inf'))
    self.assertLess(metrics.kernel_metrics(3.0 * k, k)['kernel_nerr'], 1e-6)   # scale-free

  def test_error_grows_with_difference(self):
    k = kernels.l_shape()
    rng = np.random.default_rng(0)
    small = np.clip(k + 2e-4 * rng.random(k.shape), 0, None)
    other = kernels.hollow_square()
    m_small, m_other = metrics.kernel_metrics(small, k), metrics.kernel_metrics(other, k)
    self.assertGreater(m_small['kernel_nerr'], 0)
    self.assertGreater(m_other['kernel_nerr'], 5 * m_small['kernel_nerr'])
    self.assertGreater(m_small['kernel_psnr'], m_other['kernel_psnr'])

  def test_psnr_definition(self):
    k = kernels.filled_square()
    est = kernels.hollow_square()
    ke, kg = metrics.align_kernels(est, k)
    mse = ((ke - kg) ** 2).sum() / k.size
    want = 10 * np.log10(kg.max() ** 2 / mse)
    self.assertAlmostEqual(metrics.kernel_metrics(est, k)['kernel_psnr'], want, places=6)
    self.assertAlmostEqual(metrics.kernel_metrics(est, k)['kernel_nerr'],
                           np.linalg.norm(ke - kg) / np.linalg.norm(kg), places=6)


class BaselineOrderingTest(absltest.TestCase):
  """Back-projection with the GT kernel should beat bicubic on a non-Gaussian blur."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.hr = skimage.data.astronaut()[100:228, 180:308].astype(np.float32) / 255.0
    cls.k = kernels.align_for_scale(kernels.l_shape(), 24, 4)
    cls.lr = np.asarray(degradation.downscale(jnp.asarray(cls.hr), jnp.asarray(cls.k), 4))
    bic = np.asarray(degradation.bicubic_upscale(jnp.asarray(cls.lr), 4))
    cls.psnr_bicubic = metrics.image_metrics(bic, cls.hr, 4)['psnr_y']

  def test_one_back_projection_step_beats_bicubic(self):
    bp = np.asarray(degradation.back_projection(self.lr, self.k, 4, n_iter=1))
    self.assertGreater(metrics.image_metrics(bp, self.hr, 4)['psnr_y'], self.psnr_bicubic + 1.0)

  def test_default_back_projection_beats_bicubic(self):
    bp = np.asarray(degradation.back_projection(self.lr, self.k, 4))
    self.assertGreater(metrics.image_metrics(bp, self.hr, 4)['psnr_y'], self.psnr_bicubic)


if __name__ == '__main__':
  absltest.main()
