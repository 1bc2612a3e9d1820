"""Tests for the engine: Phase-1/2 steps compile once, scan == loop, kernel recovery,
a tiny end-to-end run of pipeline.super_resolve, and the NaN guard."""

from unittest import mock

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import skimage.data

from configs import x4
from kfjax import (degradation, diffusion, dip_kernel, edge_kernel, kernels, metrics, phase1,
                   phase2, pipeline, sparse_kernel, spectral_kernel)
from kfjax.models import KernelINR, PatchDiffusion, UNet, render_kernel


def _key(seed):
  # The 'rbg' PRNG compiles much faster than threefry on XLA:CPU; the engine
  # code is agnostic to the key implementation.
  return jax.random.key(seed, impl='rbg')


def _astronaut(size=64):
  """A (size, size, 3) float crop of skimage's astronaut in [0, 1]."""
  img = skimage.data.astronaut()
  y0, x0 = 180, 200
  return (img[y0: y0 + size, x0: x0 + size] / 255.0).astype(np.float32)


def _copy(tree):
  return jax.tree.map(jnp.copy, tree)


def _assert_trees_close(test, a, b, atol):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  test.assertEqual(len(la), len(lb))
  for x, y in zip(la, lb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=atol)


class Phase1Test(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.pd = PatchDiffusion(width=8, num_blocks=1)
    cls.opt = phase1.make_optimizer(1e-3)
    cls.image = jnp.asarray(_astronaut(16) * 2 - 1)
    cls.schedule = diffusion.linear_schedule()
    cls.state0 = phase1.init_state(cls.pd, cls.opt, _key(0), 16)

  def _step(self):
    return phase1.make_train_step(self.pd, self.opt, self.schedule, crop=16, batch=2,
                                  t_max=200, ema_decay=0.9)

  def test_step_compiles_once(self):
    step = jax.jit(chex.assert_max_traces(self._step(), n=1))
    state = _copy(self.state0)
    losses, states = [], []
    for i in range(3):
      # The image is an argument: a different image of the same size reuses the trace.
      image = self.image if i < 2 else -self.image[::-1]
      state, m = step(state, _key(10 + i), image)
      losses.append(float(m['loss']))
      states.append(state)
    self.assertEqual(int(state.step), 3)
    self.assertTrue(np.all(np.isfinite(losses)))
    self.assertLen(set(losses), 3)                 # different crops/timesteps/noise
    # EMA with decay 0.9: ema_n = 0.9·ema_{n−1} + 0.1·params_n.
    ema = self.state0.ema_params
    for st in states:
      ema = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, ema, st.params)
      _assert_trees_close(self, st.ema_params, ema, atol=1e-6)
    p0 = jax.tree.leaves(self.state0.params)[0]
    self.assertGreater(float(jnp.abs(jax.tree.leaves(state.params)[0] - p0).max()), 1e-4)

  def test_scan_equals_loop(self):
    step = self._step()
    out = {}
    for driver in ('scan', 'loop'):
      run = phase1.make_chunk_runner(step, chunk=3, driver=driver)
      state, loss = run(_copy(self.state0), _key(5), self.image)
      state, loss2 = run(state, _key(5), self.image)
      out[driver] = (state, loss, loss2)
    self.assertEqual(int(out['scan'][0].step), 6)
    self.assertEqual(int(out['loop'][0].step), 6)
    _assert_trees_close(self, out['scan'], out['loop'], atol=1e-5)

  def test_eval_loss_is_fixed_and_falls_with_training(self):
    make = lambda key: phase1.make_eval_loss(self.pd, self.schedule, self.image, key, crop=8,
                                             n=16, t_max=200)
    ev = make(_key(4))
    p0 = self.state0.params
    self.assertEqual(float(ev(p0)), float(ev(p0)))                      # no fresh draws
    self.assertEqual(float(ev(p0)), float(make(_key(4))(p0)))           # same key, same set
    self.assertNotEqual(float(ev(p0)), float(make(_key(5))(p0)))
    # It is the training objective on its fixed draws: timesteps 0, 12, …, 187 (evenly spaced).
    k_crop, k_eps = jax.random.split(_key(4))
    x0 = phase1.random_crops(k_crop, self.image, crop=8, batch=16, augment=False)
    t = jnp.asarray([i * 200 // 16 for i in range(16)])
    want = phase1.v_loss(self.pd, self.schedule, p0, x0, t, jax.random.normal(k_eps, x0.shape))
    np.testing.assert_allclose(float(ev(p0)), float(want), rtol=1e-6)
    # Training lowers it.
    opt = phase1.make_optimizer(1e-2)
    step = phase1.make_train_step(self.pd, opt, self.schedule, crop=16, batch=4, t_max=200,
                                  ema_decay=0.9)
    run = phase1.make_chunk_runner(step, chunk=60, driver='scan')
    state, _ = run(phase1.init_state(self.pd, opt, _key(0), 16), _key(6), self.image)
    self.assertLess(float(ev(state.params)), 0.8 * float(ev(p0)))

  def test_random_crops_dihedral(self):
    # A crop the size of the image with augmentation is one of its 8 flips/rotations.
    img = jnp.arange(4 * 4 * 1, dtype=jnp.float32).reshape(4, 4, 1)
    crops = np.asarray(phase1.random_crops(_key(3), img, crop=4, batch=16))
    base = np.asarray(img)
    variants = [np.rot90(b, r) for b in (base, base[:, ::-1]) for r in range(4)]
    for c in crops:
      self.assertTrue(any(np.array_equal(c, v) for v in variants))


  def test_random_crops_stay_in_the_valid_region(self):
    # A padded image (NaN padding): crops come from the real 16×16 pixels only, and are
    # the same crops as from the unpadded image with the same key.
    img = self.image
    padded = jnp.pad(img, ((0, 8), (0, 5), (0, 0)), constant_values=jnp.nan)
    valid = jnp.asarray([16, 16], jnp.int32)
    crops = phase1.random_crops(_key(7), padded, crop=8, batch=64, valid_hw=valid)
    self.assertFalse(bool(jnp.isnan(crops).any()))
    np.testing.assert_array_equal(crops, phase1.random_crops(_key(7), img, crop=8, batch=64))


class Phase2Test(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.unet = UNet(features=(8, 8), skip=2)
    cls.inr = KernelINR(width=16, num_layers=2)
    cls.pd = PatchDiffusion(width=8, num_blocks=1)
    cls.pd_params = cls.pd.init(_key(1), jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,), jnp.int32))
    cls.opt = phase2.make_optimizer(1e-3, 1e-3)
    cls.schedule = diffusion.linear_schedule()
    cls.lr = jnp.asarray(degradation.downscale(_astronaut(24), kernels.filled_square(5, side=3),
                                               2) * 2 - 1)
    cls.state0 = phase2.init_state(cls.unet, cls.inr, cls.opt, _key(2), cls.lr, scale=2,
                                   mode='full')
    cls.data = phase2.Data(lr=cls.lr, pd_params=cls.pd_params)

  def _inner(self, renoise='fixed'):
    return phase2.make_inner_step(self.unet, self.inr, self.pd, self.opt, self.schedule,
                                  scale=2, kernel_size=9, renoise=renoise)

  def test_inner_step_compiles_once(self):
    self.assertEqual(self.state0.x0_prev.shape, (1, 24, 24, 3))
    inner = jax.jit(chex.assert_max_traces(self._inner('posterior'), n=1))
    state = _copy(self.state0)
    eps = jax.random.normal(_key(4), state.x0_prev.shape)
    losses = []
    for t, t_prev, first in ((39, 39, True), (26, 39, False), (0, 13, False)):
      ts = phase2.Timestep(jnp.int32(t), jnp.int32(t_prev), jnp.bool_(first))
      # The LR target is data, not a constant: another LR reuses the trace.
      data = self.data if t else self.data._replace(lr=-self.data.lr)
      state, (loss, x0_hat, x_t) = inner(state, ts, eps, data)
      self.assertEqual(x0_hat.shape, (1, 24, 24, 3))
      self.assertEqual(x_t.shape, (1, 24, 24, 3))
      losses.append(float(loss))
    self.assertEqual(int(state.step), 3)
    self.assertTrue(np.all(np.isfinite(losses)))
    # Both parameter sets are trained by the one loss.
    for name in ('unet_params', 'inr_params'):
      moved = jax.tree.map(lambda a, b: jnp.abs(a - b).max(), getattr(state, name),
                           getattr(self.state0, name))
      self.assertGreater(max(float(m) for m in jax.tree.leaves(moved)), 0.0, name)

  def test_scan_equals_loop(self):
    inner = self._inner()
    plan = phase2.timestep_plan(t_start=40, stride=20)
    np.testing.assert_array_equal(plan.t, [39, 0])
    np.testing.assert_array_equal(plan.t_prev, [39, 39])
    np.testing.assert_array_equal(plan.first, [True, False])
    ts = phase2.Timestep(*(jnp.asarray(a) for a in plan))
    out = {}
    for driver in ('scan', 'loop'):
      run = phase2.make_timestep_runner(inner, self.inr, 9, driver=driver)
      out[driver] = run(_copy(self.state0), _key(6), ts, 2, self.data)
    state, trace = out['scan']
    self.assertEqual(int(state.t_index), 2)
    self.assertEqual(int(state.step), 4)
    self.assertEqual(trace['kernel'].shape, (2, 9, 9))
    self.assertEqual(trace['loss_last'].shape, (2,))
    _assert_trees_close(self, out['scan'], out['loop'], atol=1e-5)

  def test_scan_compiles_once_for_any_n_iter(self):
    """The first timestep's n_iter_first and the later n_iter share one program."""
    run = phase2.make_timestep_runner(self._inner(), self.inr, 9, driver='scan')
    state = _copy(self.state0)
    for t, n_iter in ((39, 3), (26, 2), (13, 2)):
      ts = phase2.Timestep(jnp.array([t]), jnp.array([39]), jnp.array([t == 39]))
      state, trace = run(state, _key(6), ts, n_iter, self.data)
    self.assertEqual(int(state.step), 7)
    self.assertEqual(run._cache_size(), 1)

  def test_unet_pd_mode_returns_the_pd_estimate(self):
    """'unet_pd': x̂0 is x0_from_v(x_t, PD(x_t, t)) itself, with no second U-Net."""
    ts = phase2.Timestep(jnp.int32(20), jnp.int32(20), jnp.bool_(True))
    eps = jax.random.normal(_key(4), self.state0.x0_prev.shape)
    # The U-Net starts as the identity; perturb it so that a second application shows.
    leaves, tree = jax.tree.flatten(self.state0.unet_params)
    noisy = [a + 0.05 * jax.random.normal(_key(10 + i), a.shape) for i, a in enumerate(leaves)]
    state = self.state0.replace(unet_params=jax.tree.unflatten(tree, noisy))
    out = {}
    for mode in ('unet_pd', 'full'):
      inner = phase2.make_inner_step(self.unet, self.inr, self.pd, self.opt, self.schedule,
                                     scale=2, kernel_size=9, mode=mode)
      out[mode] = jax.jit(inner)(_copy(state), ts, eps, self.data)[1]
    _, x0_hat, x_t = out['unet_pd']
    v = self.pd.apply(self.pd_params, x_t, jnp.full((1,), 20))
    np.testing.assert_allclose(
        x0_hat, diffusion.x0_from_v(x_t=x_t, v=v, alpha_bar=self.schedule.alpha_bars[20]),
        atol=1e-5)
    # The same x_t (the first U-Net is shared), but 'full' applies the U-Net once more.
    np.testing.assert_allclose(out['full'][2], x_t, atol=0)
    self.assertGreater(float(jnp.abs(out['full'][1] - x0_hat).max()), 1e-3)
    with self.assertRaisesRegex(ValueError, 'needs the PD'):
      phase2.make_inner_step(self.unet, self.inr, None, self.opt, self.schedule, scale=2,
                             kernel_size=9, mode='unet_pd')

  def test_loss_ignores_masked_lr_pixels(self):
    """With an lr_mask the loss (and so the step) ignores the padded LR pixels."""
    mask = jnp.ones((12, 12, 1)).at[9:].set(0.0).at[:, 10:].set(0.0)
    ts = phase2.Timestep(jnp.int32(20), jnp.int32(20), jnp.bool_(True))
    eps = jax.random.normal(_key(4), self.state0.x0_prev.shape)
    inner = jax.jit(self._inner())
    out = []
    for lr in (self.lr, self.lr.at[10:].set(0.7).at[:, 11:].set(-0.3)):
      data = self.data._replace(lr=lr, lr_mask=mask)
      out.append(inner(_copy(self.state0), ts, eps, data))
    _assert_trees_close(self, out[0], out[1], atol=0)
    (_, (loss, x0_hat, _)) = out[0]
    sq = (degradation.downscale(x0_hat[0], render_kernel(self.inr, self.state0.inr_params, 9), 2)
          - self.lr) ** 2
    self.assertAlmostEqual(float(loss), float(jnp.mean(sq[:9, :10])), places=6)
    # An all-ones mask is the plain mean.
    full = inner(_copy(self.state0), ts, eps, self.data._replace(lr_mask=jnp.ones((12, 12, 1))))
    self.assertAlmostEqual(float(full[1][0]), float(jnp.mean(sq)), places=6)

  def test_known_kernel_is_used_and_inr_frozen(self):
    """Non-blind Phase 2: the loss uses the given kernel; the INR gets no update."""
    known = pipeline.known_kernel(kernels.filled_square(5, side=3), 9)
    self.assertEqual(known.shape, (9, 9))
    self.assertAlmostEqual(float(known.sum()), 1.0, places=5)
    data = self.data._replace(kernel=known)
    ts = phase2.Timestep(jnp.int32(20), jnp.int32(20), jnp.bool_(True))
    eps = jax.random.normal(_key(4), self.state0.x0_prev.shape)
    state, (loss, x0_hat, _) = jax.jit(self._inner())(_copy(self.state0), ts, eps, data)
    by_hand = jnp.mean((degradation.downscale(x0_hat[0], known, 2) - self.lr) ** 2)
    self.assertAlmostEqual(float(loss), float(by_hand), places=6)
    _assert_trees_close(self, state.inr_params, self.state0.inr_params, atol=0)
    moved = jax.tree.map(lambda a, b: jnp.abs(a - b).max(), state.unet_params,
                         self.state0.unet_params)
    self.assertGreater(max(float(m) for m in jax.tree.leaves(moved)), 0.0)
    with self.assertRaisesRegex(ValueError, 'larger than config.kernel.size'):
      pipeline.known_kernel(np.ones((11, 11)), 9)
    with self.assertRaisesRegex(ValueError, 'positive sum'):
      pipeline.known_kernel(-np.ones((3, 3)), 9)


class KernelRecoveryTest(absltest.TestCase):

  def test_inr_recovers_l_shape_from_known_hr(self):
    ksize, scale = 13, 4
    k_gt = kernels.l_shape(ksize, arm=7, thickness=2)      # non-Gaussian, 24 px
    self.assertAlmostEqual(float(k_gt.sum()), 1.0, places=5)
    hr = jnp.asarray(_astronaut(64))
    lr = degradation.downscale(hr, k_gt, scale)
    inr = KernelINR(width=64, num_layers=3)
    params = inr.init(_key(0), jnp.zeros((1, 2)))
    opt = optax.adam(3e-3)

    def loss_fn(p):
      return jnp.mean((degradation.downscale(hr, render_kernel(inr, p, ksize), scale) - lr) ** 2)

    @jax.jit
    def steps(p, s):
      def body(carry, _):
        p, s = carry
        loss, g = jax.value_and_grad(loss_fn)(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), loss
      return jax.lax.scan(body, (p, s), None, length=100)

    state = (params, opt.init(params))
    first = metrics.kernel_metrics(render_kernel(inr, params, ksize), k_gt)['kernel_nerr']
    losses = []
    for _ in range(6):
      state, ls = steps(*state)
      losses.append(np.asarray(ls))
    k_est = np.asarray(render_kernel(inr, state[0], ksize))
    nerr = metrics.kernel_metrics(k_est, k_gt)['kernel_nerr']
    self.assertGreater(first, 0.5)                       # the initial blob is far off
    self.assertLess(nerr, 0.1)
    self.assertLess(losses[-1][-1], 1e-3 * losses[0][0])


class PipelineTest(absltest.TestCase):

  def test_tiny_end_to_end_and_determinism(self):
    config = x4.get_config('tiny')
    config.pd.steps = 10
    config.pd.chunk = 5
    config.phase2.n_iter = 6       # tiny's 3 is too few for a reliable fall of the loss
    hr_gt = _astronaut(64)
    lr = np.asarray(degradation.downscale(hr_gt, kernels.anisotropic_gaussian(9, sigmas=(2.0, 1.0)),
                                          4))
    self.assertEqual(lr.shape, (16, 16, 3))
    runs = [pipeline.super_resolve(lr, config, log=lambda msg: None) for _ in range(2)]
    hr, kernel, info = runs[0]
    self.assertEqual(hr.shape, (64, 64, 3))
    self.assertEqual(kernel.shape, (config.kernel.size, config.kernel.size))
    self.assertTrue(np.all(np.isfinite(hr)))
    self.assertTrue(np.all(np.isfinite(kernel)))
    self.assertTrue(0.0 <= hr.min() and hr.max() <= 1.0)
    self.assertAlmostEqual(float(kernel.sum()), 1.0, places=5)
    p1, p2 = info['phase1'], info['phase2']
    self.assertEqual(p1['steps'], 10)
    self.assertLen(p1['losses'], 2)
    self.assertEqual(p2['timesteps'], 4)                   # t = 39, 26, 13, 0
    self.assertEqual(p2['t'], [39, 26, 13, 0])
    self.assertEqual(p2['inner_steps'], 5 + 3 * 6)          # n_iter_first + 3·n_iter
    self.assertLen(p2['loss_last'], 4)
    self.assertEqual(np.shape(p2['kernel_trace']), (4, 13, 13))
    self.assertTrue(np.all(np.isfinite(p2['loss_mean'])))
    # LR consistency improves (measured: loss_last 8.3e-3 → 4.6e-3).
    self.assertLess(p2['loss_last'][-1], 0.8 * p2['loss_last'][0])
    self.assertLess(p2['loss_mean'][-1], p2['loss_mean'][0])
    # Same seed and config → bit-identical outputs.
    hr2, kernel2, info2 = runs[1]
    self.assertTrue(np.array_equal(hr, hr2))
    self.assertTrue(np.array_equal(kernel, kernel2))
    self.assertEqual(p2['loss_last'], info2['phase2']['loss_last'])
    # Reusing the previous call's Phase 1 (same input and config) gives the same result.
    hr3, _, info3 = pipeline.super_resolve(lr, config, reuse_phase1=True, log=lambda m: None)
    self.assertTrue(info3['phase1']['reused'])
    self.assertTrue(np.array_equal(hr, hr3))
    config.seed = 1
    _, _, info4 = pipeline.super_resolve(lr, config, reuse_phase1=True, log=lambda m: None)
    self.assertNotIn('reused', info4['phase1'])


  def test_size_bucket_compiles_once_and_crops_back(self):
    """io.size_bucket: two LR sizes in one bucket share the compiled Phase-1 and Phase-2
    programs; Phase 1 equals the unpadded run; the outputs have the real size."""
    np.testing.assert_array_equal(pipeline.pad_to_bucket(np.zeros((24, 48, 3)), 24)[0],
                                  np.zeros((24, 48, 3)))
    self.assertIsNone(pipeline.pad_to_bucket(np.zeros((20, 21, 3)), 0)[1])
    padded, valid = pipeline.pad_to_bucket(np.arange(20 * 21 * 3.).reshape(20, 21, 3), 24)
    self.assertEqual((padded.shape, valid), ((24, 24, 3), (20, 21)))
    np.testing.assert_array_equal(padded[20:22], padded[19:17:-1])      # mirrored
    config = x4.get_config('tiny')
    config.update_from_flattened_dict({'pd.steps': 10, 'pd.chunk': 5, 'pd.crop': 16,
                                       'pd.driver': 'scan', 'phase2.driver': 'scan',
                                       'io.size_bucket': 24})
    kernel = kernels.anisotropic_gaussian(9, sigmas=(2.0, 1.0))
    hr_gt = _astronaut(96)
    for h, w in ((20, 20), (22, 23)):
      lr = np.asarray(degradation.downscale(hr_gt[:4 * h, :4 * w], kernel, 4))
      hr, k, info = pipeline.super_resolve(lr, config, log=lambda m: None)
      self.assertEqual(hr.shape, (4 * h, 4 * w, 3))
      self.assertEqual(info['phase2']['hr_diffusion'].shape, (4 * h, 4 * w, 3))
      self.assertEqual(info['phase2']['padded_lr_shape'], [24, 24])
      self.assertAlmostEqual(float(k.sum()), 1.0, places=5)
    p1 = pipeline._phase1_fns(pipeline._sections_json(config, pipeline.PHASE1_SECTIONS), 16)
    p2 = pipeline._phase2_fns(pipeline._sections_json(config, pipeline.PHASE2_SECTIONS))
    self.assertEqual(p1[2]._cache_size(), 1)
    self.assertEqual(p2[2]._cache_size(), 2)       # chunk lengths 1 and 2, for both sizes
    # Phase 1 on the padded image draws the same crops: the same PD as unpadded.
    lr = jnp.asarray(np.asarray(degradation.downscale(hr_gt[:80, :84], kernel, 4)) * 2 - 1)
    padded, valid = pipeline.pad_to_bucket(np.asarray(lr), 24)
    key = jax.random.PRNGKey(3)
    a, _ = pipeline.run_phase1(lr, config, key, log=lambda m: None)
    b, _ = pipeline.run_phase1(jnp.asarray(padded), config, key, valid_hw=valid,
                               log=lambda m: None)
    _assert_trees_close(self, a, b, atol=0)


  def test_phase2_precompiled_beside_phase1_is_not_compiled_again(self):
    """phase2.precompile (scan driver): the programs compiled ahead (and the initialisers) are
    the ones Phase 2 then calls; the output equals a run without it (the default)."""
    config = x4.get_config('tiny')
    config.update_from_flattened_dict({'pd.steps': 10, 'pd.chunk': 5, 'pd.crop': 16,
                                       'phase2.driver': 'scan', 'phase2.n_iter': 2,
                                       'phase2.precompile': True})
    hr_gt = _astronaut(96)
    lr = np.asarray(degradation.downscale(hr_gt[:72, :76], kernels.anisotropic_gaussian(
        9, sigmas=(2.0, 1.0)), 4))                        # 18×19: a size no other test uses
    compiled = []
    def listener(event, duration, **kw):
      del duration
      if event == '/jax/core/compile/backend_compile_duration':
        compiled.append(kw.get('fun_name'))
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
      lr_pm = jnp.asarray(lr * 2 - 1)
      self.assertGreater(pipeline.precompile_phase2(lr_pm, config), 0)
      self.assertEqual(compiled.count('jit(run)'), 2)     # chunk lengths 1 and 2
      del compiled[:]
      hr, kernel, info = pipeline.super_resolve(lr, config, log=lambda m: None)
      self.assertNotIn('jit(run)', compiled)              # nothing compiled again
      # nor the U-Net's and INR's initialisers (at most Phase 1's PD init compiles here)
      self.assertLessEqual(compiled.count('jit(init)'), 1)
      self.assertGreaterEqual(info['phase2_precompile']['seconds'], 0)
    finally:
      jax.monitoring.unregister_event_duration_listener(listener)
    config.phase2.precompile = False
    hr2, kernel2, info2 = pipeline.super_resolve(lr, config, log=lambda m: None)
    self.assertNotIn('phase2_precompile', info2)
    np.testing.assert_array_equal(hr, hr2)
    np.testing.assert_array_equal(kernel, kernel2)
    # The loop driver (the CPU default) has no whole-chunk program: nothing to do.
    config.phase2.driver = 'loop'
    self.assertEqual(pipeline.precompile_phase2(lr_pm, config), 0.0)

  def test_kernel_crop_estimates_on_the_window_and_projects_the_whole_image(self):
    """io.kernel_crop: both phases see the centre window only (the same kernel as a run on
    that window), and the whole image is back-projected with the kernel."""
    config = x4.get_config('tiny')
    config.update_from_flattened_dict({'pd.steps': 10, 'pd.chunk': 5, 'io.kernel_crop': 16})
    hr_gt = _astronaut(96)[:, :80]
    lr = np.asarray(degradation.downscale(hr_gt, kernels.anisotropic_gaussian(9, sigmas=(2.0, 1.0)),
                                          4))
    self.assertEqual(lr.shape, (24, 20, 3))
    hr, k, info = pipeline.super_resolve(lr, config, log=lambda m: None)
    self.assertEqual(hr.shape, (96, 80, 3))
    self.assertEqual(info['kernel_window'], [4, 2, 16, 16])
    self.assertEqual(info['phase2']['hr_diffusion'].shape, (64, 64, 3))
    np.testing.assert_allclose(hr, np.clip(degradation.back_projection(
        lr, k, 4, reg=config.phase2.final_bp_reg), 0, 1), atol=1e-6)
    config.io.kernel_crop = 0
    _, k_window, info_window = pipeline.super_resolve(lr[4:20, 2:18], config, log=lambda m: None)
    np.testing.assert_array_equal(k, k_window)
    self.assertNotIn('kernel_window', info_window)
    config.phase2.final_bp_from = 'x0'
    config.io.kernel_crop = 16
    with self.assertRaisesRegex(ValueError, 'kernel_crop'):
      pipeline.super_resolve(lr, config, log=lambda m: None)


  def test_gaussian_switch_end_to_end_with_a_kernel_window(self):
    """phase2.gaussian_test in a run: the test sees the whole image, not the kernel window;
    when it says Gaussian, no phase runs, the returned kernel is the spectral fit and the
    output the whole image's TV SR with it."""
    config = x4.get_config('tiny')
    config.update_from_flattened_dict({'pd.steps': 10, 'pd.chunk': 5, 'io.kernel_crop': 16,
                                       'phase2.gaussian_test': -0.01})
    lr = np.asarray(degradation.downscale(
        _astronaut(96)[:, :80], kernels.anisotropic_gaussian(9, sigmas=(2.0, 1.0)), 4))
    hr, k, info = pipeline.super_resolve(lr, config, log=lambda m: None)
    test = info['phase2']['gaussian_test']
    self.assertTrue(test['gaussian'])
    self.assertTrue(info['phase1']['skipped'])       # decided first: no phase ran
    self.assertEqual(info['phase2']['inner_steps'], 0)
    self.assertEqual(info['kernel_window'], [4, 2, 16, 16])
    fit, fit_info = spectral_kernel.fit_gaussian(lr, 4, config.kernel.size)
    self.assertAlmostEqual(test['evidence_gain'], fit_info['evidence_gain'], places=6)
    np.testing.assert_allclose(k, fit, atol=1e-7)
    np.testing.assert_allclose(hr, np.clip(np.asarray(degradation.sparse_gradient_restore(
        lr, k, 4, degradation.bicubic_upscale(lr, 4), lam=config.phase2.gaussian_tv)), 0, 1),
                               atol=1e-6)
    config.phase2.gaussian_test = fit_info['evidence_gain'] - 0.01   # just misses: phases run
    _, k2, info2 = pipeline.super_resolve(lr, config, log=lambda m: None)
    self.assertFalse(info2['phase2']['gaussian_test']['gaussian'])
    self.assertEqual(info2['phase1']['steps'], 10)
    self.assertGreater(info2['phase2']['inner_steps'], 0)
    self.assertGreater(np.abs(k2 - fit).max(), 1e-3)

  def test_gaussian_switch_overruled_by_the_edge_kernel(self):
    """edges.min_agreement: where the Gaussian test fires on an image the edge kernel takes,
    the switch stands only if the edge kernel's cosine with the spectral fit reaches the
    setting; otherwise the run is the edge kernel's, estimated once."""
    config = x4.get_config('tiny')
    config.update_from_flattened_dict({'kernel_source': 'edges', 'edges.n_iter': 2,
                                       'edges.ensemble': (),
                                       'phase2.gaussian_test': -0.01, 'phase2.final_tv': 1e-3})
    lr = np.asarray(degradation.downscale(
        _astronaut(96)[:, :80], kernels.anisotropic_gaussian(9, sigmas=(2.0, 1.0)), 4))
    fit = spectral_kernel.fit_gaussian(lr, 4, config.kernel.size)[0]
    edge = pipeline.edges_kernel(lr, config)
    agreement = kernels.cosine(edge, fit)
    self.assertGreater(agreement, 0.05)
    self.assertLess(agreement, 0.99)
    quiet = lambda m: None
    _, k, info = pipeline.super_resolve(lr, config, log=quiet)      # off (0): the switch stands
    np.testing.assert_allclose(k, fit, atol=1e-7)
    self.assertNotIn('agreement', info['phase2']['gaussian_test'])
    config.edges.min_agreement = agreement - 0.01                    # agrees: the switch stands
    _, k, info = pipeline.super_resolve(lr, config, log=quiet)
    np.testing.assert_allclose(k, fit, atol=1e-7)
    test = info['phase2']['gaussian_test']
    self.assertTrue(test['gaussian'])
    self.assertFalse(test['vetoed'])
    self.assertAlmostEqual(test['agreement'], agreement, places=6)
    config.edges.min_agreement = agreement + 0.01                    # disagrees: overruled
    calls = []
    estimate = edge_kernel.estimate_lr_kernel
    with mock.patch.object(edge_kernel, 'estimate_lr_kernel',
                           lambda *a, **kw: calls.append(1) or estimate(*a, **kw)):
      pipeline._EDGES_MEMO.clear()
      hr, k, info = pipeline.super_resolve(lr, config, log=quiet)
      self.assertEqual(len(calls), 1)                                # once for both uses
      config.edges.lift_power = 2.0          # the veto compares the evenly lifted kernel
      _, k2, info2 = pipeline.super_resolve(lr, config, log=quiet)
      config.edges.lift_power = 0.0
    self.assertEqual(len(calls), 1)                                  # and the same LR kernel
    self.assertAlmostEqual(info2['phase2']['gaussian_test']['agreement'], agreement, places=6)
    self.assertGreater(np.abs(k2 - edge).max(), 1e-4)                # lifted along the path
    np.testing.assert_array_equal(k, edge)
    self.assertEqual(info['phase2']['kernel_source'], 'edges')
    test = info['phase2']['gaussian_test']
    self.assertTrue(test['vetoed'])
    self.assertFalse(test['gaussian'])
    np.testing.assert_allclose(hr, pipeline.final_projection(None, lr, edge, config,
                                                             source='edges'), atol=1e-6)
    config.edges.min_pixels = lr.shape[0] * lr.shape[1] + 1          # edges do not apply
    _, k, info = pipeline.super_resolve(lr, config, log=quiet)
    np.testing.assert_allclose(k, fit, atol=1e-7)
    self.assertNotIn('agreement', info['phase2']['gaussian_test'])

  def test_lrdip_kernel_source(self):
    """kernel_source 'lrdip': where the LR-scale kernel narrowed, no phase runs, the kernel is
    pipeline.lrdip_kernel of the whole LR and the output the whole image's final step with it;
    where it did not (spread ratio > lrdip.max_spread), the run is kernel_source 'inr''s."""
    config = x4.get_config('tiny')
    config.update_from_flattened_dict({'kernel_source': 'lrdip', 'lrdip.steps': 8,
                                       'lrdip.width': 8, 'lrdip.levels': 2, 'lrdip.window': 24,
                                       'lrdip.max_spread': 10.0, 'pd.steps': 10, 'pd.chunk': 5,
                                       'io.kernel_crop': 16, 'phase2.final_tv': 1e-3})
    lr = np.asarray(degradation.downscale(_astronaut(96)[:, :80], kernels.l_shape(9), 4))
    hr, k, info = pipeline.super_resolve(lr, config, log=lambda m: None)
    self.assertTrue(info['phase1']['skipped'])
    self.assertEqual(info['phase2']['inner_steps'], 0)
    self.assertEqual(info['phase2']['kernel_source'], 'lrdip')
    want = pipeline.lrdip_kernel(lr, config)
    np.testing.assert_array_equal(k, want)
    np.testing.assert_allclose(hr, pipeline.final_projection(None, lr, want, config), atol=1e-6)
    self.assertEqual(hr.shape, (96, 80, 3))
    ratio = info['phase2']['lrdip']['spread_ratio']
    self.assertAlmostEqual(ratio, dip_kernel.spread_ratio(want))
    config.lrdip.max_spread = ratio - 1e-3            # just misses: the phases run, as 'inr'
    hr2, k2, info2 = pipeline.super_resolve(lr, config, log=lambda m: None)
    self.assertFalse(info2['phase2']['lrdip']['used'])
    self.assertEqual(info2['phase1']['steps'], 10)
    config.kernel_source = 'inr'
    hr3, k3, _ = pipeline.super_resolve(lr, config, log=lambda m: None)
    np.testing.assert_array_equal(k2, k3)
    np.testing.assert_array_equal(hr2, hr3)
    config.update_from_flattened_dict({'kernel_source': 'lrdip', 'phase2.final_bp_from': 'x0',
                                       'io.kernel_crop': 0})
    with self.assertRaisesRegex(ValueError, 'lrdip'):   # no x̂0 to start from: a clear error
      pipeline.super_resolve(lr, config, log=lambda m: None)

  def test_edges_kernel_source(self):
    """kernel_source 'edges': no phase runs, the kernel is pipeline.edges_kernel of the whole
    LR (not of io.kernel_crop's window) and the output the whole image's final step with it;
    on an LR of fewer than edges.min_pixels the phases run."""
    config = x4.get_config('tiny')
    config.update_from_flattened_dict({'kernel_source': 'edges', 'edges.n_iter': 2,
                                       'edges.ensemble': (),
                                       'io.kernel_crop': 16, 'phase2.final_tv': 1e-3})
    lr = np.asarray(degradation.downscale(_astronaut(96)[:, :80], kernels.l_shape(9), 4))
    hr, k, info = pipeline.super_resolve(lr, config, log=lambda m: None)
    self.assertTrue(info['phase1']['skipped'])
    self.assertEqual(info['phase2']['inner_steps'], 0)
    self.assertEqual(info['phase2']['kernel_source'], 'edges')
    self.assertTrue(info['phase2']['edges']['used'])
    want = pipeline.edges_kernel(lr, config)
    np.testing.assert_array_equal(k, want)
    # The final step is the back-projection mixed with the TV SR at the edge kernel's own
    # weight and share (edges.final_tv, final_tv_mix), not phase2's.
    config.update_from_flattened_dict({'edges.final_tv': 3e-3, 'edges.final_tv_mix': 0.25})
    hr = pipeline.super_resolve(lr, config, log=lambda m: None)[0]
    bp = degradation.back_projection(lr, want, 4, reg=config.phase2.final_bp_reg)
    tv = degradation.sparse_gradient_restore(lr, want, 4, degradation.bicubic_upscale(lr, 4),
                                             lam=3e-3)
    np.testing.assert_allclose(hr, np.clip(0.75 * bp + 0.25 * tv, 0, 1), atol=1e-5)
    self.assertGreater(np.abs(hr - pipeline.final_projection(None, lr, want, config)).max(), 1e-3)
    # One pixel too few: no shortcut, so super_resolve runs the phases (the path of lrdip's
    # fallback, tested above).
    config.edges.min_pixels = 24 * 20 + 1
    result, test = pipeline.source_shortcut(lr, None, config, log=lambda m: None)
    self.assertIsNone(result)
    self.assertFalse(test['used'])
    config.edges.window = 8                            # the window is the edges' own setting
    self.assertGreater(np.abs(pipeline.edges_kernel(lr, config) - want).max(), 1e-4)
    config.update_from_flattened_dict({'edges.window': 0, 'edges.soften': 0.5,
                                       'edges.threshold': 0.02})   # and so are these
    got = pipeline.edges_kernel(lr, config)
    np.testing.assert_array_equal(got, edge_kernel.estimate_kernel(
        lr, 4, config.kernel.size, n_iter=2, soften=0.5, threshold=0.02))
    self.assertGreater(np.abs(got - want).max(), 1e-4)
    config.edges.lift_power = 2.0                      # and the lift
    np.testing.assert_array_equal(pipeline.edges_kernel(lr, config), edge_kernel.estimate_kernel(
        lr, 4, config.kernel.size, n_iter=2, soften=0.5, threshold=0.02, lift_power=2.0))
    config.update_from_flattened_dict({'edges.hr_edges': 4, 'edges.hr_levels': 1})  # and these
    np.testing.assert_array_equal(pipeline.edges_kernel(lr, config), edge_kernel.estimate_kernel(
        lr, 4, config.kernel.size, n_iter=2, soften=0.5, threshold=0.02, lift_power=2.0,
        hr_edges=4, hr_levels=1))
    config.update_from_flattened_dict({'phase2.final_bp_from': 'x0', 'io.kernel_crop': 0})
    with self.assertRaisesRegex(ValueError, 'edges'):   # no x̂0 to start from: a clear error
      pipeline.super_resolve(lr, config, log=lambda m: None)

  def test_edges_ensemble(self):
    """edges.ensemble: each entry is the edges settings with some replaced; the output is the
    mean of the final steps with the plain kernel and each member's, the kernel their mean;
    an entry with a field that is not an edge kernel setting is a clear error."""
    config = x4.get_config('tiny')
    config.update_from_flattened_dict({'kernel_source': 'edges', 'edges.n_iter': 2,
                                       'edges.final_tv': 3e-3, 'edges.final_tv_mix': 0.5})
    self.assertEqual(len(config.edges.ensemble), 1)     # the committed default: one more
    config.edges.ensemble = ({'soften': 0.5, 'threshold': 0.02}, {'r': 1.0})
    lr = np.asarray(degradation.downscale(_astronaut(96)[:, :80], kernels.l_shape(9), 4))
    hr, k, info = pipeline.super_resolve(lr, config, log=lambda m: None)
    self.assertEqual(info['phase2']['edges']['members'], 3)
    members = [edge_kernel.estimate_kernel(lr, 4, config.kernel.size, n_iter=2),
               edge_kernel.estimate_kernel(lr, 4, config.kernel.size, n_iter=2, soften=0.5,
                                           threshold=0.02),
               edge_kernel.estimate_kernel(lr, 4, config.kernel.size, n_iter=2, r=1.0)]
    for a, b in ((0, 1), (0, 2), (1, 2)):               # three different kernels
      self.assertGreater(np.abs(members[a] - members[b]).max(), 1e-4)
    np.testing.assert_allclose(k, np.mean(members, axis=0), atol=1e-7)
    self.assertAlmostEqual(float(k.sum()), 1.0, places=5)
    outputs = [pipeline.final_projection(None, lr, m, config, source='edges') for m in members]
    np.testing.assert_allclose(hr, np.mean(outputs, axis=0), atol=1e-6)
    for one in outputs:                                  # the mean, not one of them
      self.assertGreater(np.abs(hr - one).max(), 1e-3)
    config.edges.ensemble = ({'soften': 0.5, 'sigma': 1.0},)
    with self.assertRaisesRegex(ValueError, r'edges.ensemble\[0\]: sigma is not'):
      pipeline.super_resolve(lr, config, log=lambda m: None)

  def test_kernel_blend_mixes_the_inr_and_l0_kernels(self):
    """phase2.kernel_blend: the returned kernel is the mixture of the INR's (the diffusion is
    unchanged: the same INR kernel as without the blend) and the L0 estimate of the same LR;
    the output is the back-projection with the mixture; a known kernel is not blended."""
    config = x4.get_config('tiny')
    config.update_from_flattened_dict({'pd.steps': 10, 'pd.chunk': 5, 'phase2.kernel_blend': 0.5})
    gt = kernels.anisotropic_gaussian(9, sigmas=(2.0, 1.0))
    lr = np.asarray(degradation.downscale(_astronaut(64), gt, 4))
    hr, k, info = pipeline.super_resolve(lr, config, log=lambda m: None)
    inr = info['phase2']['kernel_inr']
    l0 = sparse_kernel.estimate_kernel(lr, 4, config.kernel.size)
    self.assertGreater(np.abs(inr - l0).sum(), 0.1)       # the two estimates differ
    np.testing.assert_allclose(k, 0.5 * inr + 0.5 * l0, atol=1e-6)
    np.testing.assert_allclose(hr, np.clip(degradation.back_projection(
        lr, k, 4, reg=config.phase2.final_bp_reg), 0, 1), atol=1e-6)
    config.phase2.kernel_blend = 0.0
    _, k_inr, info_inr = pipeline.super_resolve(lr, config, reuse_phase1=True, log=lambda m: None)
    np.testing.assert_array_equal(k_inr, inr)
    self.assertNotIn('kernel_inr', info_inr['phase2'])
    config.phase2.kernel_blend = 1.0
    _, k_known, info_known = pipeline.super_resolve(lr, config, kernel=gt, reuse_phase1=True,
                                                    log=lambda m: None)
    np.testing.assert_allclose(k_known, pipeline.known_kernel(gt, config.kernel.size), atol=1e-7)
    self.assertNotIn('kernel_inr', info_known['phase2'])


class FinalProjectionTest(absltest.TestCase):

  def test_projection_removes_the_lr_residual(self):
    config = x4.get_config('tiny')
    kernel = kernels.anisotropic_gaussian(9, sigmas=(2.0, 1.0))
    hr_gt = _astronaut(64)
    lr = np.asarray(degradation.downscale(hr_gt, kernel, 4))
    start = np.asarray(degradation.bicubic_upscale(jnp.asarray(lr), 4))
    residual = lambda hr: float(np.abs(np.asarray(degradation.downscale(hr, kernel, 4)) - lr).mean())
    config.phase2.final_bp_reg = 0.0
    np.testing.assert_array_equal(pipeline.final_projection(start, lr, kernel, config),
                                  np.clip(start, 0, 1))
    config.phase2.final_bp_reg = 1e-3
    out = pipeline.final_projection(start, lr, kernel, config)
    self.assertEqual(out.shape, start.shape)
    self.assertLess(residual(out), 0.2 * residual(start))
    self.assertGreater(metrics.psnr_y(out, hr_gt, border=8), metrics.psnr_y(start, hr_gt, border=8))
    # From 'bicubic' it is the non-blind back-projection, whatever x̂0 was.
    config.phase2.final_bp_from = 'bicubic'
    np.testing.assert_allclose(pipeline.final_projection(np.zeros_like(start), lr, kernel, config),
                               np.clip(degradation.back_projection(lr, kernel, 4), 0, 1),
                               atol=1e-6)
    config.phase2.final_bp_from = 'nope'
    with self.assertRaisesRegex(ValueError, 'final_bp_from'):
      pipeline.final_projection(start, lr, kernel, config)

  def test_tv_mix(self):
    # phase2.final_tv: the output is (1 − share)·BP + share·TV, both from the bicubic upscale.
    config = x4.get_config('tiny')
    config.phase2.final_bp_from = 'bicubic'
    kernel = kernels.anisotropic_gaussian(9, sigmas=(2.0, 1.0))
    hr_gt = _astronaut(64)
    lr = np.asarray(degradation.downscale(hr_gt, kernel, 4))
    bp = np.asarray(degradation.back_projection(lr, kernel, 4, reg=config.phase2.final_bp_reg))
    tv = np.asarray(degradation.sparse_gradient_restore(
        lr, kernel, 4, degradation.bicubic_upscale(lr, 4), lam=1e-3))
    config.phase2.final_tv = 1e-3
    for share in (0.0, 0.3, 1.0):
      config.phase2.final_tv_mix = share
      np.testing.assert_allclose(pipeline.final_projection(None, lr, kernel, config),
                                 np.clip((1 - share) * bp + share * tv, 0, 1), atol=1e-5)
    self.assertGreater(float(np.abs(tv - bp).max()), 0.05)   # the two really differ


  def test_gaussian_switch(self):
    """phase2.gaussian_test: a Gaussian-blurred LR switches to its spectral kernel's TV SR;
    a barely blurred one does not; τ = 0 is off."""
    config = x4.get_config('tiny')
    hr_gt = _astronaut(256)
    gt = kernels.align_for_scale(kernels.anisotropic_gaussian(33, sigmas=(4.0, 2.5)), 33, 4,
                                 max_loss=1.0)
    sharp = kernels.align_for_scale(kernels.anisotropic_gaussian(33, sigmas=(0.6, 0.6)), 33, 4,
                                    max_loss=1.0)
    blurred, crisp = (np.asarray(degradation.downscale(hr_gt, k, 4)) for k in (gt, sharp))
    config.kernel.size = 33
    self.assertEqual(pipeline.gaussian_switch(blurred, config), (None, {}))   # off
    config.phase2.gaussian_test = -1.5
    k, info = pipeline.gaussian_switch(blurred, config)
    self.assertTrue(info['gaussian'])
    self.assertLess(info['evidence_gain'], -1.5)
    self.assertEqual(k.shape, (33, 33))
    self.assertLess(metrics.kernel_metrics(k, gt)['kernel_nerr'], 0.4)
    k2, info2 = pipeline.gaussian_switch(crisp, config)
    self.assertIsNone(k2)
    self.assertFalse(info2['gaussian'])
    self.assertGreater(info2['evidence_gain'], -1.5)
    # The switched output is the TV SR at phase2.gaussian_tv alone, from the bicubic upscale.
    tv = degradation.sparse_gradient_restore(blurred, k, 4, degradation.bicubic_upscale(blurred, 4),
                                             lam=config.phase2.gaussian_tv)
    np.testing.assert_allclose(pipeline.final_projection(None, blurred, k, config, gaussian=True),
                               np.clip(np.asarray(tv), 0, 1), atol=1e-6)


class GuardedTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    params = {'w': jnp.arange(3.0)}
    self.opt = optax.inject_hyperparams(phase1.make_optimizer)(lr=1e-3, grad_clip=1.0)
    self.state = phase1.PDState(step=jnp.zeros((), jnp.int32), params=params,
                                ema_params=_copy(params), opt_state=self.opt.init(params))

  def test_retries_from_backup_with_half_lr(self):
    seen, logs = [], []

    def run(state, x):
      seen.append((float(state.opt_state.hyperparams['lr']), np.asarray(state.params['w'])))
      bad = len(seen) == 1
      # The first attempt returns a NaN *state* (finite output): that must be caught too.
      w = state.params['w'] * (jnp.nan if bad else 2.0)
      return state.replace(step=state.step + 1, params={'w': w}), jnp.asarray(x)

    new, out = pipeline.guarded(run, self.state, 7.0, what='test', log=logs.append)
    self.assertLen(seen, 2)
    self.assertAlmostEqual(seen[0][0], 1e-3, places=9)
    self.assertAlmostEqual(seen[1][0], 5e-4, places=9)
    np.testing.assert_array_equal(seen[1][1], [0.0, 1.0, 2.0])   # retried from the backup
    np.testing.assert_array_equal(new.params['w'], [0.0, 2.0, 4.0])
    self.assertEqual(int(new.step), 1)
    self.assertEqual(float(out), 7.0)
    self.assertLen(logs, 1)
    self.assertIn('retry 1/2', logs[0])
    # The returned state keeps the halved learning rate, and the optimiser uses it.
    self.assertAlmostEqual(float(new.opt_state.hyperparams['lr']), 5e-4, places=9)
    updates, _ = self.opt.update({'w': jnp.ones(3)}, new.opt_state, new.params)
    np.testing.assert_allclose(updates['w'], -5e-4, rtol=1e-4)

  def test_nan_output_then_finite(self):
    calls = []

    def run(state, x):
      calls.append(float(state.opt_state.hyperparams['lr']))
      return state, jnp.asarray(jnp.nan if len(calls) == 1 else x)

    _, out = pipeline.guarded(run, self.state, 1.5, what='test', log=lambda m: None)
    self.assertEqual(float(out), 1.5)
    np.testing.assert_allclose(calls, [1e-3, 5e-4], rtol=1e-6)

  def test_always_nan_raises_after_two_retries(self):
    calls = []

    def run(state):
      calls.append(float(state.opt_state.hyperparams['lr']))
      return state, jnp.asarray(jnp.inf)

    with self.assertRaises(pipeline.DivergenceError):
      pipeline.guarded(run, self.state, what='test', log=lambda m: None)
    np.testing.assert_allclose(calls, [1e-3, 5e-4, 2.5e-4], rtol=1e-6)

  def test_phase2_learning_rates_are_both_scaled(self):
    opt = optax.inject_hyperparams(phase2.make_optimizer)(lr_unet=1e-3, lr_kernel=4e-3)
    params = {'unet': {'a': jnp.ones(2)}, 'inr': {'b': jnp.ones(2)}}
    zeros = jnp.zeros((1, 2, 2, 3))
    state = phase2.P2State(step=jnp.zeros((), jnp.int32), t_index=jnp.zeros((), jnp.int32),
                           unet_params=params['unet'], inr_params=params['inr'],
                           opt_state=opt.init(params), x0_prev=zeros, x_t=zeros,
                           noise_input=zeros)
    hp = pipeline._scale_lr(state, 0.5).opt_state.hyperparams
    self.assertAlmostEqual(float(hp['lr_unet']), 5e-4, places=9)
    self.assertAlmostEqual(float(hp['lr_kernel']), 2e-3, places=9)


if __name__ == '__main__':
  absltest.main()
