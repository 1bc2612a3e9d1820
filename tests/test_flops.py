"""Tests for kfjax.flops: hand-counted FLOPs and GEMM shapes of tiny convolutions."""

from absl.testing import absltest
import jax
import jax.numpy as jnp

from kfjax import flops


def _conv(x, w, groups=1):
  return jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', feature_group_count=groups,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


class FlopsTest(absltest.TestCase):

  def test_conv_and_its_gradients_by_hand(self):
    x, w = jnp.zeros((2, 16, 16, 3)), jnp.zeros((3, 3, 3, 8))
    loss = lambda x, w: jnp.sum(_conv(x, w) ** 2)
    pixels = 2 * 16 * 16
    # Forward: 512 outputs × 8 features, each a 3·3·3 = 27-term dot product.
    self.assertEqual(flops.conv_gemm_shapes(loss, x, w), {(pixels, 8, 27): 2 * pixels * 8 * 27})
    shapes = flops.conv_gemm_shapes(jax.grad(loss, (0, 1)), x, w)
    # The input gradient maps 8 features back to 3 over the 9 taps; the weight gradient
    # contracts over the 512 pixels for each of the 27 × 8 weights. Same FLOPs, three shapes.
    self.assertEqual(set(shapes), {(pixels, 8, 27), (pixels, 3, 72), (27, 8, pixels)})
    self.assertEqual(set(shapes.values()), {2 * pixels * 8 * 27})
    self.assertEqual(flops.count_flops(jax.grad(loss, (0, 1)), x, w), sum(shapes.values()))

  def test_grouped_conv_counts_features_per_group(self):
    x, w = jnp.zeros((1, 8, 8, 12)), jnp.zeros((3, 3, 4, 12))      # 3 groups of 4 → 4
    self.assertEqual(flops.conv_gemm_shapes(lambda x, w: _conv(x, w, 3), x, w),
                     {(64, 4, 36): 2 * 64 * 12 * 36})

  def test_scan_multiplies_its_body(self):
    x, w = jnp.zeros((1, 8, 8, 4)), jnp.zeros((3, 3, 4, 4))
    f = lambda x, w: jax.lax.scan(lambda c, _: (_conv(c, w), None), x, None, length=5)[0]
    one = 2 * 64 * 4 * 36
    self.assertEqual(flops.conv_gemm_shapes(f, x, w), {(64, 4, 36): 5 * one})
    self.assertEqual(flops.count_flops(f, x, w), 5 * one)


if __name__ == '__main__':
  absltest.main()
