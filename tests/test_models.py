"""Tests for kfjax.models: the PD receptive field, the U-Net shapes, the kernel INR."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from kfjax import models


def _key(seed):
  # The 'rbg' PRNG compiles much faster than threefry on XLA:CPU.
  return jax.random.key(seed, impl='rbg')


def _normal(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


class PatchDiffusionTest(parameterized.TestCase):

  @parameterized.parameters(5, 2)
  def test_receptive_field_is_exact(self, num_blocks):
    pd = models.PatchDiffusion(width=8, num_blocks=num_blocks)
    rf = pd.receptive_field
    self.assertEqual(rf, 1 + 2 * (2 + num_blocks))
    size, c = 41, 20
    x = _normal(0, (1, size, size, 3))
    t = jnp.array([123])

    @jax.jit
    def init(key):
      # Params do not depend on the image size; perturb every leaf (biases are
      # zero at init) so that no unit is dead by construction.
      params = pd.init(key, jnp.zeros((1, 8, 8, 3)), t)
      leaves, tree = jax.tree.flatten(params)
      keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
      return jax.tree.unflatten(tree, [p + 0.1 * jax.random.normal(k, p.shape)
                                       for p, k in zip(leaves, keys)])

    params = init(_key(1))
    g = jax.jit(jax.grad(lambda z: pd.apply(params, z, t)[0, c, c, 0]))(x)
    nz = np.asarray(jnp.any(g[0] != 0, axis=-1))
    rows, cols = np.nonzero(nz)
    half = rf // 2
    expected = np.zeros((size, size), bool)
    expected[c - half: c + half + 1, c - half: c + half + 1] = True
    self.assertEqual((rows.min(), rows.max(), cols.min(), cols.max()),
                     (c - half, c + half, c - half, c + half))
    np.testing.assert_array_equal(nz, expected)
    self.assertEqual(int(nz.sum()), rf * rf)

  def test_default_receptive_field_is_15(self):
    self.assertEqual(models.PatchDiffusion().receptive_field, 15)
    self.assertEqual(models.PatchDiffusion(width=8).receptive_field, 15)

  def test_any_image_size_and_timestep_dependence(self):
    pd = models.PatchDiffusion(width=8, num_blocks=1)
    params = jax.jit(pd.init)(_key(0), jnp.zeros((1, 16, 16, 3)),
                              jnp.zeros((1,), jnp.int32))
    self.assertEqual(pd.receptive_field, 7)
    apply = jax.jit(pd.apply)
    x = _normal(1, (2, 20, 28, 3))
    out = apply(params, x, jnp.array([5, 900]))
    self.assertEqual(out.shape, (2, 20, 28, 3))
    self.assertTrue(np.all(np.isfinite(out)))
    # The same weights on a patch far from any border: translation-equivariant
    # (outputs more than rf//2 = 3 pixels inside the crop see no padding).
    crop = apply(params, x[:, 4:16, 6:22], jnp.array([5, 900]))
    np.testing.assert_allclose(crop[:, 3:-3, 3:-3], out[:, 7:13, 9:19], atol=1e-5)
    # The timestep matters.
    other = apply(params, x, jnp.array([900, 5]))
    self.assertGreater(float(jnp.abs(other - out).max()), 1e-6)

  def test_timestep_embedding(self):
    e = models.timestep_embedding(jnp.array([0, 10]), 8)
    self.assertEqual(e.shape, (2, 8))
    np.testing.assert_allclose(e[0], [1, 1, 1, 1, 0, 0, 0, 0], atol=1e-7)


class UNetTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # U-Net params do not depend on the image size: initialise once (init compiles slowly).
    cls.unet = models.UNet(features=(8, 8, 8), skip=2)
    cls.params = jax.jit(cls.unet.init)(_key(1), jnp.zeros((1, 16, 16, 3)))
    cls.apply = staticmethod(jax.jit(cls.unet.apply))

  @parameterized.parameters(((37, 50),), ((16, 16),), ((9, 23),))
  def test_shape_and_identity_at_init(self, hw):
    x = _normal(0, (1, *hw, 3))
    out = self.apply(self.params, x)
    self.assertEqual(out.shape, x.shape)
    np.testing.assert_array_equal(out, x)       # residual: starts as the identity

  def test_params_do_not_depend_on_the_input_size(self):
    """phase2.init_state initialises on a small tile: the params equal an init at HR size."""
    big = jax.jit(self.unet.init)(_key(1), jnp.zeros((1, 37, 50, 3)))
    jax.tree.map(np.testing.assert_array_equal, big, self.params)

  def test_not_identity_after_perturbation(self):
    x = _normal(0, (2, 37, 50, 3))
    params = jax.tree.map(lambda p: p + 0.05, self.params)
    out = self.apply(params, x)
    self.assertEqual(out.shape, x.shape)
    self.assertGreater(float(jnp.abs(out - x).max()), 1e-3)

  def test_upsample2_equals_nearest_resize_with_the_same_gradient(self):
    x = _normal(3, (2, 5, 7, 4))
    nearest = lambda z: jax.image.resize(z, (2, 10, 14, 4), method='nearest')
    np.testing.assert_array_equal(models.upsample2(x), nearest(x))
    w = _normal(4, (2, 10, 14, 4))
    grad = lambda f: jax.grad(lambda z: jnp.sum(w * f(z)))(x)
    np.testing.assert_allclose(grad(models.upsample2), grad(nearest), rtol=1e-6, atol=1e-6)
    # Each input pixel's gradient is the sum over its 2×2 copies.
    np.testing.assert_allclose(grad(models.upsample2),
                               w.reshape(2, 5, 2, 7, 2, 4).sum((2, 4)), rtol=1e-6, atol=1e-6)

  def test_non_residual(self):
    unet = models.UNet(features=(8, 8, 8), skip=2, residual=False, out_channels=2)
    # The same layers as the residual U-Net, except the 2-channel output conv.
    params = jax.tree.map(lambda p: p + 0.05, self.params)
    params['params']['out']['kernel'] = 0.1 * jnp.ones((1, 1, 8, 2))
    params['params']['out']['bias'] = jnp.zeros((2,))
    x = _normal(0, (2, 37, 50, 3))
    out = jax.jit(unet.apply)(params, x)
    self.assertEqual(out.shape, (2, 37, 50, 2))
    self.assertGreater(float(jnp.abs(out).max()), 0.0)


class KernelINRTest(parameterized.TestCase):

  @parameterized.parameters((0, 9, 0.3), (1, 13, 0.3), (2, 13, 0.0), (3, 8, 0.3))
  def test_render_kernel(self, seed, size, prior_sigma):
    inr = models.KernelINR(width=32, num_layers=3, prior_sigma=prior_sigma)
    params = jax.jit(inr.init)(_key(seed), jnp.zeros((1, 2)))
    render = jax.jit(models.render_kernel, static_argnums=(0, 2, 3))
    k = np.asarray(render(inr, params, size, 1))
    self.assertEqual(k.shape, (size, size))
    self.assertAlmostEqual(float(k.sum()), 1.0, places=5)
    self.assertGreaterEqual(float(k.min()), -1e-4)
    k3 = np.asarray(render(inr, params, size, 3))
    self.assertEqual(k3.shape, (3 * size, 3 * size))
    self.assertAlmostEqual(float(k3.sum()), 1.0, places=5)
    self.assertGreaterEqual(float(k3.min()), -1e-4)
    if prior_sigma > 0:     # the prior makes the first kernel a centred blob
      com = np.array(np.unravel_index(np.argmax(k), k.shape))
      self.assertLessEqual(np.abs(com - (size - 1) / 2).max(), 2.0)

  def test_prior_floor_sets_where_the_first_kernel_mass_is(self):
    """A low floor makes the first kernel a centred blob; floor −3 leaves a box-like halo."""
    grid = models.kernel_grid(33)
    radius = 16 * np.sqrt(np.sum(np.asarray(grid) ** 2, axis=-1))   # in pixels
    mass_far = {}
    for floor in (-3.0, -8.0):
      inr = models.KernelINR(width=32, num_layers=3, prior_sigma=0.1, prior_floor=floor)
      params = jax.jit(inr.init)(_key(0), jnp.zeros((1, 2)))
      k = np.asarray(models.render_kernel(inr, params, 33))
      mass_far[floor] = float(k[radius > 6].sum())
    self.assertLess(mass_far[-8.0], 0.1)
    self.assertGreater(mass_far[-3.0], 0.5)

  def test_raw_output_range(self):
    inr = models.KernelINR(width=16, num_layers=2, prior_sigma=0.0)
    params = jax.jit(inr.init)(_key(0), jnp.zeros((1, 2)))
    params = jax.tree.map(lambda p: 50.0 * p, params)   # push the sigmoid to saturate
    z = np.asarray(jax.jit(inr.apply)(params, models.kernel_grid(17)))
    self.assertGreaterEqual(float(z.min()), -1e-4)
    self.assertLessEqual(float(z.max()), 1.0)

  @parameterized.parameters(1, 3)
  def test_kernel_grid(self, oversample):
    g = np.asarray(models.kernel_grid(5, oversample))
    n = 5 * oversample
    self.assertEqual(g.shape, (n, n, 2))
    # Pixel centres of the K×K support map to −1 … 1, the centre pixel to 0.
    if oversample == 1:
      np.testing.assert_allclose(g[:, 0, 0], [-1, -0.5, 0, 0.5, 1], atol=1e-7)
      np.testing.assert_allclose(g[0, :, 1], [-1, -0.5, 0, 0.5, 1], atol=1e-7)
    else:
      # Sub-pixel j of pixel p sits at p + (j + 0.5)/m − 0.5; the middle one at p.
      np.testing.assert_allclose(g[1::3, 0, 0], [-1, -0.5, 0, 0.5, 1], atol=1e-6)
    np.testing.assert_allclose(g[..., 0], g[..., 1].T, atol=0)


class JitInitTest(absltest.TestCase):

  def test_same_params_as_eager_init_and_one_program_per_config(self):
    unet = models.UNet(features=(8, 8), skip=2)
    x = _normal(0, (1, 16, 24, 3))
    eager = unet.init(_key(3), x)
    jitted = models.jit_init(unet)(_key(3), x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 eager, jitted)
    # An equal module config (a new object, as each run builds) reuses the compiled init.
    # (The cache is process-wide: other tests may have compiled this config at other shapes.)
    again = models.jit_init(models.UNet(features=(8, 8), skip=2))
    self.assertIs(again, models.jit_init(unet))
    compiled = again._cache_size()
    again(_key(4), x)
    self.assertEqual(again._cache_size(), compiled)
    self.assertIsNot(models.jit_init(models.UNet(features=(8, 4), skip=2)), again)


if __name__ == '__main__':
  absltest.main()
