"""Tests for kfjax.degradation: the forward model, bicubic, back-projection, kernel helpers."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage

from kfjax import degradation


def _scipy_downscale(hr, kernel, scale):
  """Independent reference: per-channel scipy correlation ('reflect' = symmetric), then ::s."""
  hr = np.asarray(hr, np.float64)
  kernel = np.asarray(kernel, np.float64)
  out = np.stack([scipy.ndimage.correlate(hr[..., c], kernel, mode='reflect')
                  for c in range(hr.shape[-1])], -1)
  return out[::scale, ::scale]


def _smooth_image(seed, shape=(48, 48, 3)):
  rng = np.random.default_rng(seed)
  x = scipy.ndimage.gaussian_filter(rng.random(shape), (2, 2, 0))
  return ((x - x.min()) / (x.max() - x.min())).astype(np.float32)


class DownscaleByHandTest(absltest.TestCase):

  def test_docstring_example_k2(self):
    hr = np.arange(36, dtype=np.float32).reshape(6, 6, 1)   # hr[r, c] = 6r + c
    k = np.array([[0, 1], [0, 0]], np.float32)
    # The only tap k[0, 1] reads pad(hr)[2i, 2j+1] = hr[2i-1, 2j]; row -1 reflects to 0.
    expected = np.array([[0, 2, 4],         # hr[0, ::2]
                         [6, 8, 10],        # hr[1, ::2]
                         [18, 20, 22]],     # hr[3, ::2]
                        np.float32)
    for method in ('direct', 'polyphase'):
      lr = degradation.downscale(jnp.asarray(hr), jnp.asarray(k), 2, method=method)
      self.assertEqual(lr.shape, (3, 3, 1))
      np.testing.assert_array_equal(np.asarray(lr)[..., 0], expected)

  def test_6x6_to_3x3_k3(self):
    hr = np.arange(36, dtype=np.float32).reshape(6, 6, 1)   # hr[r, c] = 6r + c
    k = np.zeros((3, 3), np.float32)
    k[0, 0], k[1, 2], k[2, 1] = 1.0, 2.0, 3.0
    # K = 3: 1 leading / 1 trailing padded pixel, so tap k[p, q] of LR (i, j)
    # reads hr[R(2i + p - 1), R(2j + q - 1)] with R(-1) = 0 (symmetric).
    #   k[0,0]=1: rows a = R(2i-1) = [0, 1, 3], cols a_j = [0, 1, 3]
    #   k[1,2]=2: rows b = R(2i)   = [0, 2, 4], cols c_j = R(2j+1) = [1, 3, 5]
    #   k[2,1]=3: rows c = R(2i+1) = [1, 3, 5], cols b_j = R(2j) = [0, 2, 4]
    # lr[i, j] = 1(6a_i + a_j) + 2(6b_i + c_j) + 3(6c_i + b_j)
    #          = (6a_i + 12b_i + 18c_i) + (a_j + 2c_j + 3b_j)
    # row part: i=0: 0+0+18 = 18;  i=1: 6+24+54 = 84;  i=2: 18+48+90 = 156
    # col part: j=0: 0+2+0 = 2;    j=1: 1+6+6 = 13;    j=2: 3+10+12 = 25
    expected = np.array([[20, 31, 43],
                         [86, 97, 109],
                         [158, 169, 181]], np.float32)
    for method in ('direct', 'polyphase'):
      lr = degradation.downscale(jnp.asarray(hr), jnp.asarray(k), 2, method=method)
      np.testing.assert_array_equal(np.asarray(lr)[..., 0], expected)

  def test_trailing_reflection_k5(self):
    # K = 5: 2 leading and 2 trailing padded pixels; R(-1) = 0, R(-2) = 1, R(6) = 5.
    hr = np.arange(36, dtype=np.float32).reshape(6, 6, 1)   # hr[r, c] = 6r + c
    # Tap k[4, 4] reads hr[R(2i + 2), R(2j + 2)]: rows = cols = [2, 4, R(6) = 5].
    k_last = np.zeros((5, 5), np.float32)
    k_last[4, 4] = 1.0
    exp_last = np.array([[14, 16, 17], [26, 28, 29], [32, 34, 35]], np.float32)
    # Tap k[0, 0] reads hr[R(2i - 2), R(2j - 2)]: rows = cols = [R(-2) = 1, 0, 2].
    k_first = np.zeros((5, 5), np.float32)
    k_first[0, 0] = 1.0
    exp_first = np.array([[7, 6, 8], [1, 0, 2], [13, 12, 14]], np.float32)
    for method in ('direct', 'polyphase'):
      for kern, exp in ((k_last, exp_last), (k_first, exp_first)):
        lr = degradation.downscale(jnp.asarray(hr), jnp.asarray(kern), 2, method=method)
        np.testing.assert_array_equal(np.asarray(lr)[..., 0], exp)

  def test_crops_to_multiple_and_rejects_non_square(self):
    hr = jnp.ones((13, 14, 2))
    self.assertEqual(degradation.downscale(hr, jnp.ones((3, 3)) / 9, 4).shape, (3, 3, 2))
    with self.assertRaises(ValueError):
      degradation.downscale(hr, jnp.ones((3, 4)), 2)


class DownscaleReferenceTest(parameterized.TestCase):

  @parameterized.product(scale=(2, 3, 4), ksize=(4, 5, 12, 13))
  def test_matches_scipy_and_methods_agree(self, scale, ksize):
    rng = np.random.default_rng(100 * scale + ksize)
    hr = rng.random((24, 36, 3)).astype(np.float32)
    k = rng.random((ksize, ksize)).astype(np.float32)
    k /= k.sum()
    ref = _scipy_downscale(hr, k, scale)
    direct = np.asarray(degradation.downscale(hr, k, scale, method='direct'))
    poly = np.asarray(degradation.downscale(hr, k, scale, method='polyphase'))
    self.assertEqual(direct.shape, (24 // scale, 36 // scale, 3))
    np.testing.assert_allclose(direct, ref, atol=1e-5)
    np.testing.assert_allclose(poly, ref, atol=1e-5)
    np.testing.assert_allclose(poly, direct, atol=1e-5)

  def test_batched_equals_per_image(self):
    rng = np.random.default_rng(1)
    hr = rng.random((3, 20, 24, 3)).astype(np.float32)
    k = rng.random((7, 7)).astype(np.float32)
    for method in ('direct', 'polyphase'):
      batched = np.asarray(degradation.downscale(hr, k, 4, method=method))
      self.assertEqual(batched.shape, (3, 5, 6, 3))
      for n in range(3):
        single = np.asarray(degradation.downscale(hr[n], k, 4, method=method))
        np.testing.assert_allclose(batched[n], single, atol=1e-6)
      # Each image's channels are independent: permuting them permutes the output.
      perm = np.asarray(degradation.downscale(hr[..., ::-1], k, 4, method=method))
      np.testing.assert_allclose(perm, batched[..., ::-1], atol=1e-6)

  @parameterized.parameters((2, 5), (3, 8), (4, 13))
  def test_gradients_agree(self, scale, ksize):
    rng = np.random.default_rng(scale)
    hr = jnp.asarray(rng.random((24, 24, 3)), jnp.float32)
    k = jnp.asarray(rng.random((ksize, ksize)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((24 // scale, 24 // scale, 3)), jnp.float32)

    def grads(method):
      f = lambda x, kk: jnp.sum(w * degradation.downscale(x, kk, scale, method=method))
      return jax.grad(f, argnums=(0, 1))(hr, k)

    (gx_d, gk_d), (gx_p, gk_p) = grads('direct'), grads('polyphase')
    for a, b in ((gx_d, gx_p), (gk_d, gk_p)):
      a, b = np.asarray(a), np.asarray(b)
      self.assertGreater(np.abs(a).max(), 0.0)
      self.assertLess(np.abs(a - b).max() / np.abs(a).max(), 1e-4)
    # The input gradient is the exact adjoint: <A x, w> = <x, Aᵀ w>.
    lhs = float(jnp.sum(w * degradation.downscale(hr, k, scale)))
    np.testing.assert_allclose(float(jnp.sum(hr * gx_p)), lhs, rtol=1e-4)


class BicubicTest(absltest.TestCase):

  def test_constant_stays_constant(self):
    lr = jnp.full((7, 9, 3), 0.37, jnp.float32)
    for s in (2, 3, 4):
      hr = np.asarray(degradation.bicubic_upscale(lr, s))
      self.assertEqual(hr.shape, (7 * s, 9 * s, 3))
      np.testing.assert_allclose(hr, 0.37, atol=1e-6)

  def test_linear_ramp_in_interior(self):
    h, w = 10, 12
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
    ramp = lambda y, x: 0.05 * y - 0.03 * x + 0.2
    lr = np.stack([ramp(ii, jj), 2 * ramp(ii, jj), -ramp(ii, jj)], -1).astype(np.float32)
    for s in (2, 3, 4):
      hr = np.asarray(degradation.bicubic_upscale(jnp.asarray(lr), s))
      self.assertEqual(hr.shape, (h * s, w * s, 3))
      # HR pixel centre y lies at LR coordinate (y + 0.5)/s − 0.5.
      yy, xx = np.meshgrid((np.arange(h * s) + 0.5) / s - 0.5,
                           (np.arange(w * s) + 0.5) / s - 0.5, indexing='ij')
      exp = ramp(yy, xx)
      exp = np.stack([exp, 2 * exp, -exp], -1)
      m = 2 * s                                   # two LR pixels from every border
      np.testing.assert_allclose(hr[m:-m, m:-m], exp[m:-m, m:-m], atol=1e-5)

  def test_batched(self):
    lr = np.random.default_rng(0).random((2, 5, 6, 3)).astype(np.float32)
    hr = np.asarray(degradation.bicubic_upscale(lr, 3))
    self.assertEqual(hr.shape, (2, 15, 18, 3))
    np.testing.assert_allclose(hr[1], degradation.bicubic_upscale(lr[1], 3), atol=1e-6)


class BackProjectionTest(absltest.TestCase):

  def test_lr_consistent_with_true_kernel(self):
    hr = _smooth_image(0)
    yy, xx = np.mgrid[-4:5, -4:5]
    k = np.exp(-(xx ** 2 / (2 * 2.0 ** 2) + yy ** 2 / (2 * 1.0 ** 2)))
    k = (k / k.sum()).astype(np.float32)
    s = 2
    lr = degradation.downscale(hr, k, s)
    bp = degradation.back_projection(lr, k, s)
    bic = degradation.bicubic_upscale(lr, s)
    self.assertEqual(bp.shape, hr.shape)
    mse = lambda x: float(jnp.mean((degradation.downscale(x, k, s) - lr) ** 2))
    self.assertLess(mse(bp), mse(bic) / 10)
    # And it is a better HR estimate than bicubic.
    self.assertLess(float(jnp.mean((bp - hr) ** 2)), float(jnp.mean((bic - hr) ** 2)))


def _blocks(shape, seed=0):
  """A piecewise-constant image: a few random rectangles on a grey ground."""
  rng = np.random.default_rng(seed)
  x = np.full(shape, 0.5, np.float32)
  for _ in range(6):
    top, left = rng.integers(0, shape[0] - 16, size=2)
    h, w = rng.integers(8, 24, size=2)
    x[top:top + h, left:left + w] = rng.random(shape[-1])
  return x


class SparseGradientRestoreTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    yy, xx = np.mgrid[-4:5, -4:5]
    k = np.exp(-(xx ** 2 / (2 * 1.5 ** 2) + yy ** 2 / (2 * 1.0 ** 2)))
    self.k = (k / k.sum()).astype(np.float32)

  @parameterized.parameters('tv', 'l0')
  def test_weak_prior_fits_the_lr(self, prior):
    hr = _smooth_image(1)
    lr = degradation.downscale(hr, self.k, 2)
    bic = degradation.bicubic_upscale(lr, 2)
    x = degradation.sparse_gradient_restore(lr, self.k, 2, bic, lam=1e-6, prior=prior)
    self.assertEqual(x.shape, hr.shape)
    mse = lambda z: float(jnp.mean((degradation.downscale(z, self.k, 2) - lr) ** 2))
    self.assertLess(mse(x), mse(bic) / 100)

  def test_tv_beats_back_projection_on_edges(self):
    # With the true kernel, TV fills what the LR does not say with sharp edges, where
    # back-projection keeps the bicubic upscale's blur: a piecewise-constant HR is much closer.
    hr = _blocks((96, 96, 3))
    lr = degradation.downscale(hr, self.k, 4)
    bic = degradation.bicubic_upscale(lr, 4)
    err = lambda z: float(jnp.mean((jnp.clip(z, 0, 1) - hr)[8:-8, 8:-8] ** 2))
    tv = degradation.sparse_gradient_restore(lr, self.k, 4, bic, lam=1e-4)
    bp = degradation.back_projection(lr, self.k, 4)
    self.assertLess(err(tv), 0.85 * err(bp))                  # measured 0.74
    # A stronger prior flattens more: fewer distinct gradients, a worse fit to the LR.
    strong = degradation.sparse_gradient_restore(lr, self.k, 4, bic, lam=1e-1)
    tv_norm = lambda z: float(sum(jnp.abs(g).sum() for g in degradation.image_gradient(z)))
    self.assertLess(tv_norm(strong), tv_norm(tv))

  @parameterized.parameters(((12, 16), 2, 5), ((16, 16), 4, 33), ((20, 12), 4, 7))
  def test_periodic_normal_inverse_is_exact(self, hw, s, size):
    # The Fourier-space inverse against the periodic normal operator written out with rolls:
    # blur (taps read x[m + p − K//2], wrapped), keep every s-th pixel, the adjoints, β∇ᵀ∇ + δβ.
    # Kernels as large as the image (33 taps on 16 px) wrap around it.
    rng = np.random.default_rng(size)
    k = rng.random((size, size)).astype(np.float32)
    k /= k.sum()
    c, beta = size // 2, 0.05
    taps = [(p, q) for p in range(size) for q in range(size)]
    blur = lambda x: sum(k[p, q] * jnp.roll(x, (c - p, c - q), (0, 1)) for p, q in taps)
    blur_t = lambda y: sum(k[p, q] * jnp.roll(y, (p - c, q - c), (0, 1)) for p, q in taps)

    def normal(x):
      y = blur(x)
      kept = jnp.zeros_like(y).at[::s, ::s].set(y[::s, ::s])
      return (blur_t(kept) + beta * degradation.image_gradient_adjoint(
          *degradation.image_gradient(x)) + 1e-3 * beta * x)

    inverse = degradation._periodic_normal_inverse(jnp.asarray(k), hw, s, beta, delta=1e-3)
    v = jnp.asarray(rng.standard_normal(hw + (2,)), jnp.float32)
    np.testing.assert_allclose(inverse(normal(v)), v, atol=5e-4)     # measured ≤ 1e-4
    np.testing.assert_allclose(normal(inverse(v)), v, atol=5e-4)

  def test_preconditioner_reaches_the_solution_in_few_iterations(self):
    # Away from the borders, the default solve (preconditioned, to a residual of 1e-4) is
    # within 0.005 of a converged one (200 plain iterations), and so are 4 preconditioned
    # iterations per round; 4 plain ones are far from it.
    hr = _blocks((96, 96, 3))
    lr = degradation.downscale(hr, self.k, 4)
    bic = degradation.bicubic_upscale(lr, 4)
    solve = lambda **kw: degradation.sparse_gradient_restore(lr, self.k, 4, bic, lam=1e-4, **kw)
    ref = solve(cg_iter=200, cg_tol=1e-7, precondition=False)
    err = lambda z: float(jnp.abs(z - ref)[8:-8, 8:-8].max())
    self.assertLess(err(solve()), 0.005)                                  # measured 0.0019
    self.assertLess(err(solve(cg_iter=4)), 0.01)                          # measured 0.0041
    self.assertGreater(err(solve(cg_iter=4, precondition=False)), 0.05)   # measured 0.13

  def test_gradient_adjoint(self):
    rng = np.random.default_rng(0)
    x, gx, gy = (jnp.asarray(rng.standard_normal((12, 10, 2)), jnp.float32) for _ in range(3))
    dx, dy = degradation.image_gradient(x)
    lhs = float(jnp.sum(dx * gx) + jnp.sum(dy * gy))
    rhs = float(jnp.sum(x * degradation.image_gradient_adjoint(gx, gy)))
    self.assertAlmostEqual(lhs, rhs, places=3)

  def test_init_of_the_wrong_size(self):
    with self.assertRaisesRegex(ValueError, 'init must be the LR size times 2, 16x16, got 15x16'):
      degradation.sparse_gradient_restore(jnp.zeros((8, 8, 1)), self.k, 2,
                                          jnp.zeros((15, 16, 1)), lam=1e-3)

  def test_unknown_prior(self):
    lr = jnp.zeros((8, 8, 1))
    with self.assertRaisesRegex(ValueError, 'prior'):
      degradation.sparse_gradient_restore(lr, self.k, 2, jnp.zeros((16, 16, 1)), lam=1e-3,
                                          prior='l2')


class FitKernelTest(absltest.TestCase):

  def test_recovers_an_anisotropic_kernel_from_the_true_hr(self):
    # A textured HR (blurred noise, σ 0.7 px): a smooth one leaves the kernel ill-determined.
    x = scipy.ndimage.gaussian_filter(np.random.default_rng(1).random((64, 64, 3)), (0.7, 0.7, 0))
    hr = ((x - x.min()) / (x.max() - x.min())).astype(np.float32)
    yy, xx = np.mgrid[-4:5, -4:5]
    k = np.exp(-((xx + yy) ** 2 / (2 * 2.5 ** 2) + (xx - yy) ** 2 / (2 * 0.8 ** 2)))
    k = np.pad((k / k.sum()).astype(np.float32), 2)        # 13×13 support
    lr = degradation.downscale(hr, k, 2)
    fit = degradation.fit_kernel(hr, lr, 2, 13, steps=400)
    self.assertEqual(fit.shape, (13, 13))
    self.assertAlmostEqual(float(fit.sum()), 1.0, places=5)
    self.assertGreaterEqual(float(fit.min()), 0.0)
    self.assertLess(np.abs(fit - k).sum(), 0.2)            # L1 of 2 at most; measured 0.09
    self.assertGreater(fit[4, 4], fit[4, 8])                 # the diagonal orientation


class KernelHelpersTest(parameterized.TestCase):

  @parameterized.parameters((5, 11), (4, 9), (4, 10), (5, 8), (7, 7))
  def test_pad_or_crop_round_trip(self, k, size):
    kern = np.random.default_rng(k * size).random((k, k))
    big = degradation.pad_or_crop(kern, size)
    self.assertEqual(big.shape, (size, size))
    if size >= k:
      self.assertAlmostEqual(big.sum(), kern.sum())
      self.assertEqual(big[size // 2, size // 2], kern[k // 2, k // 2])
      np.testing.assert_array_equal(degradation.pad_or_crop(big, k), kern)

  def test_pad_or_crop_crops_centre(self):
    kern = np.arange(49.0).reshape(7, 7)
    np.testing.assert_array_equal(degradation.pad_or_crop(kern, 3), kern[2:5, 2:5])

  def test_center_kernel(self):
    rng = np.random.default_rng(3)
    for size, k in ((15, 9), (16, 9), (21, 13)):
      kern = np.zeros((k, k))
      kern[: k // 2, : k // 3] = rng.random((k // 2, k // 3))   # off-centre mass
      out = degradation.center_kernel(kern, size)
      self.assertEqual(out.shape, (size, size))
      self.assertAlmostEqual(out.sum(), kern.sum())             # nothing cropped
      cy, cx = degradation.center_of_mass(out)
      self.assertLessEqual(abs(cy - size // 2), 0.5)
      self.assertLessEqual(abs(cx - size // 2), 0.5)
      # A whole-pixel shift: the same multiset of values.
      np.testing.assert_allclose(np.sort(out[out > 0]), np.sort(kern[kern > 0]))

  def test_center_kernel_target(self):
    kern = np.zeros((9, 9))
    kern[4, 4] = 1.0
    out = degradation.center_kernel(kern, 9, target=(2, 6))
    self.assertEqual(out[2, 6], 1.0)


if __name__ == '__main__':
  absltest.main()
