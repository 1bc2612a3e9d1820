"""Tests for kfjax.kernels: synthetic kernels, camera shake, loading, resizing, alignment."""

import itertools
import os
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax.numpy as jnp
import numpy as np
import scipy.io
import skimage.data

from kfjax import degradation
from kfjax import kernels
from kfjax import metrics
from kfjax import sparse_kernel

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    '..', 'shared', 'data')
HAVE_LEVIN = os.path.isdir(os.path.join(DATA, 'levin09_kernels'))

SYNTHETIC = {
    'l_shape': kernels.l_shape,
    'filled_square': kernels.filled_square,
    'hollow_square': kernels.hollow_square,
    'aniso_gaussian': kernels.anisotropic_gaussian,
}


def _is_kernel(test, k, size):
  test.assertEqual(k.shape, (size, size))
  test.assertEqual(k.dtype, np.float32)
  test.assertGreaterEqual(float(k.min()), 0.0)
  test.assertAlmostEqual(float(k.sum()), 1.0, places=5)


class SyntheticTest(parameterized.TestCase):

  @parameterized.named_parameters(*SYNTHETIC.items())
  def test_valid_and_centred(self, fn):
    k = fn()
    _is_kernel(self, k, 24)
    cy, cx = degradation.center_of_mass(k)
    self.assertLessEqual(abs(cy - 12), 0.5)
    self.assertLessEqual(abs(cx - 12), 0.5)

  def test_distinct(self):
    ks = kernels.synthetic_kernels()
    self.assertEqual([n for n, _ in ks], list(SYNTHETIC))
    for (_, a), (_, b) in itertools.combinations(ks, 2):
      self.assertGreater(metrics.kernel_metrics(a, b)['kernel_nerr'], 0.3)

  def test_documented_shapes(self):
    self.assertEqual(int((kernels.l_shape() > 0).sum()), 11 * 2 + 11 * 2 - 4)
    self.assertEqual(int((kernels.filled_square() > 0).sum()), 81)
    hollow = kernels.hollow_square()
    self.assertEqual(int((hollow > 0).sum()), 13 * 13 - 9 * 9)
    self.assertEqual(float(hollow[12, 12]), 0.0)
    # Uniform weights for the three binary shapes.
    for k in (kernels.l_shape(), kernels.filled_square(), hollow):
      np.testing.assert_allclose(k[k > 0], k.max(), rtol=1e-5)

  def test_gaussian_orientation(self):
    k = kernels.anisotropic_gaussian(64, sigmas=(4.0, 1.5), theta=30.0).astype(np.float64)
    rows, cols = np.indices(k.shape)
    cy, cx = degradation.center_of_mass(k)
    x, y = cols - cx, -(rows - cy)
    cov = np.array([[(k * x * x).sum(), (k * x * y).sum()],
                    [(k * x * y).sum(), (k * y * y).sum()]])
    evals, evecs = np.linalg.eigh(cov)
    np.testing.assert_allclose(np.sqrt(evals), [1.5, 4.0], rtol=0.02)
    angle = np.rad2deg(np.arctan2(evecs[1, 1], evecs[0, 1])) % 180
    self.assertAlmostEqual(angle, 30.0, delta=0.5)


class CameraShakeTest(absltest.TestCase):

  def test_valid_and_deterministic(self):
    a = kernels.camera_shake(24, seed=7)
    _is_kernel(self, a, 24)
    np.testing.assert_array_equal(a, kernels.camera_shake(24, seed=7))
    b = kernels.camera_shake(24, seed=8)
    self.assertGreater(metrics.kernel_metrics(a, b)['kernel_nerr'], 0.1)

  def test_is_a_thin_path(self):
    k = kernels.camera_shake(24, seed=0)
    support = (k > 0.01 * k.max()).sum()
    self.assertGreater(support, 20)                  # not a dot
    self.assertLess(support, 0.5 * k.size)           # not a blob
    _is_kernel(self, kernels.camera_shake(13, seed=1), 13)


class LoadTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.dir)
    rng = np.random.default_rng(0)
    self.k = rng.random((7, 7))
    self.stack = rng.random((3, 5, 5))

  def test_npy_single_and_stack(self):
    p = os.path.join(self.dir, 'blur.npy')
    np.save(p, self.k)
    (name, k), = kernels.load_kernels(p)
    self.assertEqual(name, 'blur')
    self.assertEqual(k.dtype, np.float32)
    np.testing.assert_allclose(k, self.k / self.k.sum(), rtol=1e-6)
    p = os.path.join(self.dir, 'many.npy')
    np.save(p, self.stack)
    got = kernels.load_kernels(p)
    self.assertEqual([n for n, _ in got], ['many_0', 'many_1', 'many_2'])
    for (_, k), want in zip(got, self.stack):
      np.testing.assert_allclose(k, want / want.sum(), rtol=1e-6)

  def test_mat_kernel_key_and_fallback(self):
    p = os.path.join(self.dir, 'kernel_3.mat')
    scipy.io.savemat(p, {'other': np.ones((2, 2)), 'Kernel': self.k})
    (name, k), = kernels.load_kernels(p)
    self.assertEqual(name, 'kernel_3')
    np.testing.assert_allclose(k, self.k / self.k.sum(), rtol=1e-6)
    p = os.path.join(self.dir, 'anon.mat')
    scipy.io.savemat(p, {'label': 'x', 'k': self.k})
    (_, k), = kernels.load_kernels(p)
    np.testing.assert_allclose(k, self.k / self.k.sum(), rtol=1e-6)

  def test_mat_stack_matlab_order(self):
    p = os.path.join(self.dir, 'stack.mat')
    scipy.io.savemat(p, {'Kernel': np.moveaxis(self.stack, 0, 2)})   # (K, K, N)
    got = kernels.load_kernels(p)
    self.assertLen(got, 3)
    for (_, k), want in zip(got, self.stack):
      np.testing.assert_allclose(k, want / want.sum(), rtol=1e-6)

  def test_non_square_is_padded(self):
    p = os.path.join(self.dir, 'wide.npy')
    np.save(p, np.ones((3, 5)))
    (_, k), = kernels.load_kernels(p)
    self.assertEqual(k.shape, (5, 5))
    self.assertAlmostEqual(float(k.sum()), 1.0, places=6)

  def test_errors_name_the_file(self):
    bad = {'missing.npy': None, 'zero.npy': np.zeros((3, 3)), 'four.npy': np.ones((2, 2, 2, 2)),
           'kernel.txt': 'x'}
    for fname, content in bad.items():
      p = os.path.join(self.dir, fname)
      if isinstance(content, np.ndarray):
        np.save(p, content)
      elif content is not None:
        with open(p, 'w') as f:
          f.write(content)
      with self.assertRaisesRegex(ValueError, fname):
        kernels.load_kernels(p)
    p = os.path.join(self.dir, 'junk.npy')
    with open(p, 'wb') as f:
      f.write(b'not a numpy file')
    with self.assertRaisesRegex(ValueError, 'junk.npy'):
      kernels.load_kernels(p)
    p = os.path.join(self.dir, 'strings.mat')
    scipy.io.savemat(p, {'label': 'nothing numeric'})
    with self.assertRaisesRegex(ValueError, 'strings.mat'):
      kernels.load_kernels(p)


class ResizeAlignTest(parameterized.TestCase):

  @parameterized.parameters(13, 24, 27)
  def test_resize(self, size_in):
    k = kernels.camera_shake(size_in, seed=size_in)
    r = kernels.resize_kernel(k, 24)
    _is_kernel(self, r, 24)
    if size_in == 24:
      np.testing.assert_allclose(r, k, atol=1e-7)
    # The geometry scales by 24/size_in about the support's centre.
    c_in, c_out = (size_in - 1) / 2, 23 / 2
    want = [(c - c_in) * 24 / size_in + c_out for c in degradation.center_of_mass(k)]
    np.testing.assert_allclose(degradation.center_of_mass(r), want, atol=0.3)

  @parameterized.parameters(1, 2, 3, 4)
  def test_align_target(self, scale):
    for _, k in kernels.synthetic_kernels():
      a = kernels.align_for_scale(k, 33, scale)
      _is_kernel(self, a, 33)
      target = 33 // 2 + (scale - 1) / 2
      for c in degradation.center_of_mass(a):
        self.assertLessEqual(abs(c - target), 0.5 + 1e-6)
      self.assertLess(metrics.kernel_metrics(a, k)['kernel_nerr'], 1e-6)   # shape kept

  def test_symmetric_kernel_shift(self):
    k = kernels.filled_square(15, side=5)
    self.assertEqual(degradation.center_of_mass(kernels.align_for_scale(k, 15, 4)), (9.0, 9.0))
    self.assertEqual(degradation.center_of_mass(kernels.align_for_scale(k, 15, 2)), (8.0, 8.0))
    self.assertEqual(degradation.center_of_mass(kernels.align_for_scale(k, 15, 3)), (8.0, 8.0))

  def test_align_refuses_to_drop_mass(self):
    k = kernels.filled_square(9, side=9)
    with self.assertRaisesRegex(ValueError, 'drops'):
      kernels.align_for_scale(k, 9, 4)
    size = kernels.aligned_support(k, 4)
    self.assertEqual(size, 13)   # the canvas grows on both sides; the shift is +2
    _is_kernel(self, kernels.align_for_scale(k, None, 4), 13)
    got = kernels.align_all([('a', k), ('b', kernels.filled_square(5, side=3))], 4)
    self.assertEqual({g.shape for _, g in got}, {(13, 13)})

  def test_principal_spread_and_scale(self):
    """The spread of an anisotropic Gaussian is its σs; scaling stretches each axis."""
    k = kernels.anisotropic_gaussian(41, sigmas=(4.0, 1.5), theta=30.0)
    sigmas, axes = kernels.principal_spread(k)
    np.testing.assert_allclose(sigmas, [1.5, 4.0], rtol=0.02)
    # the major axis points 30° up from the horizontal: (row, col) ∝ (−sin, cos)
    t = np.deg2rad(30.0)
    self.assertAlmostEqual(abs(axes[:, 1] @ [-np.sin(t), np.cos(t)]), 1.0, places=3)
    for minor, major in [(0.5, 1.0), (1.3, 0.8), (1.2, None)]:
      scaled = kernels.scale_kernel(k, minor, major)
      _is_kernel(self, scaled, 41)
      got, _ = kernels.principal_spread(scaled)
      np.testing.assert_allclose(got, [1.5 * minor, 4.0 * (major or minor)], rtol=0.06)
      np.testing.assert_allclose(degradation.center_of_mass(scaled),
                                 degradation.center_of_mass(k), atol=0.02)


  def test_blend(self):
    """blend is the normalised mixture: the ends are the inputs, the middle their mean."""
    a = kernels.anisotropic_gaussian(15, sigmas=(3.0, 1.0))
    b = 2.0 * kernels.filled_square(15, side=5)           # unnormalised on purpose
    np.testing.assert_allclose(kernels.blend(a, b, 0.0), a, atol=1e-7)
    np.testing.assert_allclose(kernels.blend(a, b, 1.0), b / b.sum(), atol=1e-7)
    mid = kernels.blend(a, b, 0.25)
    _is_kernel(self, mid, 15)
    np.testing.assert_allclose(mid, 0.75 * a + 0.25 * b / b.sum(), atol=1e-7)
    with self.assertRaisesRegex(ValueError, 'weight'):
      kernels.blend(a, b, 1.5)
    with self.assertRaisesRegex(ValueError, 'supports'):
      kernels.blend(a, b[1:, 1:], 0.5)

  def test_lr_scale_round_trip_and_downscale(self):
    """lift_lr_kernel spreads each LR tap over its s×s block (to_lr_scale undoes it), and
    downscaling with it is the LR kernel applied to the HR image's block means."""
    k_lr = np.random.default_rng(0).random((5, 5))
    k_lr /= k_lr.sum()
    lifted = kernels.lift_lr_kernel(k_lr, 4)
    self.assertEqual(lifted.shape, (20, 20))
    np.testing.assert_allclose(kernels.to_lr_scale(lifted, 4), k_lr, atol=1e-12)
    np.testing.assert_allclose(kernels.to_lr_scale(np.ones((6, 6)), 4), [[16, 8], [8, 4]])
    x = np.random.default_rng(1).random((64, 64))
    lr = np.asarray(degradation.downscale(x[..., None], lifted, 4, method='direct'))[..., 0]
    # LR pixel i: Σ_b k_lr[b] · mean of x over rows 4(i + b − 2) − 2 … 4(i + b − 2) + 1.
    means = x[2:-2].reshape(15, 4, 64).mean(1)[:, 2:-2].reshape(15, 15, 4).mean(2)
    want = sparse_kernel.patch_matrix(means, 5, 1, (15, 15)) @ k_lr.ravel()
    np.testing.assert_allclose(lr[3:13, 3:13], want[2:12, 2:12], atol=1e-6)

  def test_sharper_lift_keeps_the_block_sums_and_thins_a_path(self):
    """lift_lr_kernel(power > 0) keeps every s×s block sum, and on a 1-px diagonal path
    (whose block sums fill the diagonal blocks) puts the mass nearer the path than the even
    spread: higher cosine with the truth (0.59 against 0.50), a narrower minor axis."""
    true = np.zeros((32, 32))
    for i in range(4, 28):
      true[i, i] = 1.0
    true /= true.sum()
    k_lr = kernels.to_lr_scale(true, 4)
    even = kernels.lift_lr_kernel(k_lr, 4)
    np.testing.assert_array_equal(kernels.lift_lr_kernel(k_lr, 4, power=0.0), even)
    sharp = kernels.lift_lr_kernel(k_lr, 4, power=2.0)
    self.assertEqual(sharp.shape, (32, 32))
    self.assertGreaterEqual(sharp.min(), 0.0)
    np.testing.assert_allclose(kernels.to_lr_scale(sharp, 4), k_lr, atol=1e-12)
    self.assertGreater(kernels.cosine(sharp, true), kernels.cosine(even, true) + 0.05)
    minor = lambda k: kernels.principal_spread(k)[0][0]
    self.assertLess(minor(sharp), minor(even) - 0.15)
    self.assertGreater(minor(sharp), minor(true))       # it cannot know the path's width

  def test_alignment_helps_bicubic(self):
    """A GT kernel aligned for s puts the LR where bicubic expects it."""
    hr = skimage.data.astronaut()[200:296, 160:256].astype(np.float32) / 255.0
    k = kernels.anisotropic_gaussian(17, sigmas=(1.6, 1.6))
    psnr = {}
    for name, kk in [('centred', k), ('aligned', kernels.align_for_scale(k, None, 4))]:
      lr = degradation.downscale(jnp.asarray(hr), jnp.asarray(kk), 4)
      up = np.asarray(degradation.bicubic_upscale(lr, 4))
      psnr[name] = metrics.image_metrics(up, hr, 4)['psnr_y']
    self.assertGreater(psnr['aligned'], psnr['centred'] + 0.5)


@absltest.skipUnless(HAVE_LEVIN, 'shared data (../shared/data) not present')
class SharedDataTest(absltest.TestCase):

  def test_levin(self):
    ks = kernels.levin_kernels(DATA)
    self.assertEqual([n for n, _ in ks], [f'levin09_k{i}' for i in range(1, 9)])
    self.assertEqual([k.shape[0] for _, k in ks], [19, 17, 15, 27, 13, 21, 23, 23])
    for _, k in ks:
      self.assertAlmostEqual(float(k.sum()), 1.0, places=5)
    self.assertLen(kernels.levin_kernels(os.path.join(DATA, 'levin09_kernels')), 8)

  def test_blind144_kernels(self):
    ks = kernels.blind144_kernels(DATA, 4)
    self.assertLen(ks, 12)
    self.assertLen({n for n, _ in ks}, 12)
    for _, k in ks:
      _is_kernel(self, k, 33)
      for c in degradation.center_of_mass(k):
        self.assertLessEqual(abs(c - 17.5), 0.5 + 1e-6)

  def test_missing_folder(self):
    with self.assertRaisesRegex(ValueError, 'nowhere'):
      kernels.levin_kernels(os.path.join(tempfile.gettempdir(), 'nowhere'))


class MomentsTest(absltest.TestCase):

  def test_geometric_blend(self):
    a = kernels.anisotropic_gaussian(15, sigmas=(3.0, 1.0), theta=20.0)
    np.testing.assert_allclose(kernels.geometric_blend(a, a), a, rtol=1e-5, atol=1e-7)
    b = np.zeros((15, 15))
    b[5:10, 5:10] = 1.0
    g = kernels.geometric_blend(a, b)
    self.assertAlmostEqual(float(g.sum()), 1.0, places=5)
    self.assertEqual(float(np.abs(g[b == 0]).max()), 0.0)      # only where both are non-zero
    inside = np.sqrt(a[5:10, 5:10])                           # b is flat there
    np.testing.assert_allclose(g[5:10, 5:10], inside / inside.sum(), rtol=1e-5)
    with self.assertRaisesRegex(ValueError, 'share no support'):
      kernels.geometric_blend(b, np.roll(b, 7, 0))

  def test_unblend_inverts_blend(self):
    a = kernels.anisotropic_gaussian(15, sigmas=(3.0, 1.0), theta=20.0)
    b = kernels.anisotropic_gaussian(15, sigmas=(1.5, 1.5), theta=0.0)
    for w in (0.25, 0.5):
      np.testing.assert_allclose(kernels.unblend(kernels.blend(a, b, w), b, w), a, atol=1e-6)
    with self.assertRaisesRegex(ValueError, r'unblend weight must be in \[0, 1\), got 1'):
      kernels.unblend(a, b, 1.0)

  def test_shift_to_moves_the_centre_of_mass(self):
    k = kernels.anisotropic_gaussian(21, sigmas=(3.0, 1.0), theta=20.0)
    moved = kernels.shift_to(k, (11.3, 9.6))
    np.testing.assert_allclose(degradation.center_of_mass(moved), (11.3, 9.6), atol=1e-3)
    self.assertAlmostEqual(moved.sum(), 1.0, places=6)

  def test_moment_gaussian(self):
    g = kernels.anisotropic_gaussian(25, sigmas=(3.0, 1.2), theta=30.0)
    np.testing.assert_allclose(kernels.moment_gaussian(g), g, atol=1e-4)
    # A box's moment-matched Gaussian keeps its centre and spread, not its shape.
    box = np.zeros((25, 25))
    box[8:17, 10:15] = 1.0
    m = kernels.moment_gaussian(box)
    np.testing.assert_allclose(degradation.center_of_mass(m), degradation.center_of_mass(box),
                               atol=1e-3)
    self.assertGreater(np.abs(m - box / box.sum()).sum(), 0.2)
    np.testing.assert_allclose(kernels.second_moments(m)[1], kernels.second_moments(box)[1],
                               rtol=0.05, atol=1e-9)


if __name__ == '__main__':
  absltest.main()
