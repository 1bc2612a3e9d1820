"""Tests for kfjax.diffusion: the schedule, v/x0/ε conversions, the posterior, the timesteps."""

from absl.testing import absltest
from absl.testing import parameterized
import jax.numpy as jnp
import numpy as np

from kfjax import diffusion

SCHEDULE = diffusion.linear_schedule()


def _pair(seed, shape=(2, 8, 8, 3)):
  """A random (x0, ε) pair: x0 uniform in [−1, 1], ε standard normal (float32)."""
  rng = np.random.default_rng(seed)
  x0 = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
  return jnp.asarray(x0), jnp.asarray(rng.standard_normal(shape), jnp.float32)


class ScheduleTest(absltest.TestCase):

  def test_linear_schedule(self):
    s = SCHEDULE
    self.assertEqual(s.num_steps, 1000)
    self.assertEqual(s.betas.shape, (1000,))
    self.assertEqual(s.alpha_bars.shape, (1000,))
    self.assertAlmostEqual(float(s.betas[0]), 1e-4, places=9)
    self.assertAlmostEqual(float(s.betas[-1]), 0.02, places=9)
    np.testing.assert_allclose(np.diff(np.asarray(s.betas, np.float64)), 0.0199 / 999,
                               rtol=1e-3)
    ab = np.asarray(s.alpha_bars)
    self.assertTrue(np.all(np.diff(ab) < 0))
    self.assertTrue(0 < ab[-1] < ab[0] < 1)
    expected = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
    np.testing.assert_allclose(ab, expected, rtol=1e-6, atol=0)
    self.assertAlmostEqual(float(ab[0]), 1 - 1e-4, places=7)

  def test_custom_schedule(self):
    s = diffusion.linear_schedule(num_steps=10, beta_start=0.1, beta_end=0.5)
    self.assertEqual(s.num_steps, 10)
    np.testing.assert_allclose(s.alpha_bars, np.cumprod(1 - np.linspace(0.1, 0.5, 10)),
                               rtol=1e-6)


class ConversionTest(parameterized.TestCase):

  @parameterized.parameters(0, 1, 50, 250, 500, 999)
  def test_round_trips(self, t):
    x0, eps = _pair(t)
    ab = SCHEDULE.alpha_bars[t]
    x_t = diffusion.q_sample(x0=x0, eps=eps, alpha_bar=ab)
    v = diffusion.v_from_x0_eps(x0=x0, eps=eps, alpha_bar=ab)
    np.testing.assert_allclose(diffusion.x0_from_v(x_t=x_t, v=v, alpha_bar=ab), x0, atol=1e-5)
    np.testing.assert_allclose(diffusion.eps_from_v(x_t=x_t, v=v, alpha_bar=ab), eps, atol=1e-5)
    if t >= 50:    # ε from x0 divides by √(1−ᾱ), so float32 loses digits at tiny t
      np.testing.assert_allclose(diffusion.eps_from_x0(x_t=x_t, x0=x0, alpha_bar=ab), eps,
                                 atol=1e-5)
    else:
      np.testing.assert_allclose(diffusion.eps_from_x0(x_t=x_t, x0=x0, alpha_bar=ab), eps,
                                 atol=2e-3)
    # Hand formulas, and ‖(x_t, v)‖ is a rotation of ‖(x0, ε)‖.
    a, b = np.sqrt(float(ab)), np.sqrt(1 - float(ab))
    np.testing.assert_allclose(x_t, a * np.asarray(x0) + b * np.asarray(eps), atol=1e-5)
    np.testing.assert_allclose(v, a * np.asarray(eps) - b * np.asarray(x0), atol=1e-5)
    np.testing.assert_allclose(np.sum(np.square(x_t)) + np.sum(np.square(v)),
                               np.sum(np.square(x0)) + np.sum(np.square(eps)), rtol=1e-5)

  def test_per_sample_alpha_bar_broadcasts(self):
    x0, eps = _pair(7)
    t = np.array([3, 700])
    ab = SCHEDULE.alpha_bars[t][:, None, None, None]
    x_t = diffusion.q_sample(x0=x0, eps=eps, alpha_bar=ab)
    for i in range(2):
      one = diffusion.q_sample(x0=x0[i], eps=eps[i], alpha_bar=SCHEDULE.alpha_bars[t[i]])
      np.testing.assert_allclose(x_t[i], one, atol=1e-6)


class PosteriorTest(parameterized.TestCase):

  @parameterized.parameters(1, 2, 10, 100, 500, 999)
  def test_matches_ddpm_posterior(self, t):
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    c_x0 = betas[t] * np.sqrt(abar[t - 1]) / (1 - abar[t])
    c_xt = np.sqrt(alphas[t]) * (1 - abar[t - 1]) / (1 - abar[t])
    var = betas[t] * (1 - abar[t - 1]) / (1 - abar[t])
    kw = dict(alpha_bar_t=SCHEDULE.alpha_bars[t], alpha_bar_s=SCHEDULE.alpha_bars[t - 1])
    m_x0, v1 = diffusion.posterior(x0=1.0, x_t=0.0, **kw)
    m_xt, v2 = diffusion.posterior(x0=0.0, x_t=1.0, **kw)
    # The schedule stores ᾱ in float32, so 1 − ᾱ_t/ᾱ_{t−1} = β_t carries an absolute
    # error of a few float32 ulps of 1 (6e-8): allow 2e-7/β_t relative, plus 1e-6.
    rtol = 2e-7 / betas[t] + 1e-6
    np.testing.assert_allclose(float(m_x0), c_x0, rtol=rtol)
    np.testing.assert_allclose(float(m_xt), c_xt, rtol=rtol)
    np.testing.assert_allclose(float(v1), var, rtol=rtol)
    self.assertEqual(float(v1), float(v2))

  @parameterized.parameters((10, 0), (400, 380), (999, 500))
  def test_strided_posterior_preserves_marginal(self, t, s):
    # If x_t ~ q(x_t | x0), then x_s ~ posterior must have the marginal q(x_s | x0):
    # mean c_x0 + c_xt·√ᾱ_t = √ᾱ_s and variance var + c_xt²·(1−ᾱ_t) = 1−ᾱ_s.
    ab_t, ab_s = float(SCHEDULE.alpha_bars[t]), float(SCHEDULE.alpha_bars[s])
    c_x0, var = diffusion.posterior(x0=1.0, x_t=0.0, alpha_bar_t=ab_t, alpha_bar_s=ab_s)
    c_xt, _ = diffusion.posterior(x0=0.0, x_t=1.0, alpha_bar_t=ab_t, alpha_bar_s=ab_s)
    np.testing.assert_allclose(float(c_x0) + float(c_xt) * np.sqrt(ab_t), np.sqrt(ab_s),
                               rtol=1e-5)
    np.testing.assert_allclose(float(var) + float(c_xt) ** 2 * (1 - ab_t), 1 - ab_s,
                               rtol=1e-4)

  @parameterized.parameters(0, 37, 999)
  def test_clean_limit_returns_x0(self, t):
    x0, eps = _pair(t)
    ab = SCHEDULE.alpha_bars[t]
    x_t = diffusion.q_sample(x0=x0, eps=eps, alpha_bar=ab)
    mean, var = diffusion.posterior(x0=x0, x_t=x_t, alpha_bar_t=ab, alpha_bar_s=1.0)
    np.testing.assert_allclose(mean, x0, atol=1e-6)
    self.assertEqual(float(var), 0.0)


class VisitedTimestepsTest(parameterized.TestCase):

  @parameterized.parameters((200, 4), (200, 20), (40, 10), (10, 1), (7, 3), (1000, 7),
                            (2, 1), (2, 2), (1, 1), (99, 98))
  def test_visited(self, t_start, stride):
    ts = diffusion.visited_timesteps(t_start=t_start, stride=stride)
    self.assertEqual(len(ts), -(-t_start // stride))
    self.assertEqual(int(ts[0]), t_start - 1)
    if len(ts) > 1 or t_start == 1:
      self.assertEqual(int(ts[-1]), 0)
    self.assertTrue(np.all(np.diff(ts) < 0))
    self.assertTrue(np.all(ts >= 0))

  def test_every_step(self):
    np.testing.assert_array_equal(diffusion.visited_timesteps(t_start=5, stride=1),
                                  [4, 3, 2, 1, 0])
    np.testing.assert_array_equal(diffusion.visited_timesteps(t_start=40, stride=10),
                                  [39, 26, 13, 0])

  def test_rejects_bad_arguments(self):
    for t_start, stride in ((0, 1), (5, 0)):
      with self.assertRaises(ValueError):
        diffusion.visited_timesteps(t_start=t_start, stride=stride)


if __name__ == '__main__':
  absltest.main()
