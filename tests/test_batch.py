"""Batched (vmap) and sharded runs equal the one-by-one runs."""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import skimage.data
from absl.testing import absltest

from configs import x4
from kfjax import degradation, dip_kernel, kernels, pipeline, spectral_kernel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SHARDED = r'''
import json, sys
import numpy as np
import jax
from configs import x4
from kfjax import pipeline
c = x4.get_config('tiny'); c.update_from_flattened_dict(json.loads(sys.argv[2]))
hrs, ks, info = pipeline.super_resolve_batch(np.load(sys.argv[1]), c, log=lambda m: None)
np.savez(sys.argv[1] + '.out.npz', hrs=hrs, ks=ks, devices=info['devices'])
'''


def _config():
  c = x4.get_config('tiny')
  overrides = {'pd.steps': 10, 'pd.chunk': 5, 'pd.driver': 'loop', 'phase2.driver': 'loop',
               'phase2.kernel_blend': 0.5}          # the blend is applied per case too
  c.update_from_flattened_dict(overrides)
  return c, overrides


class BatchTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # 4 cases: the sharded test splits them over 4 forced host devices (one case each).
    cls.lrs = np.random.default_rng(0).random((4, 20, 20, 3)).astype(np.float32)
    cls.config, cls.overrides = _config()
    cls.hrs, cls.kernels, cls.info = pipeline.super_resolve_batch(cls.lrs, cls.config,
                                                                  log=lambda m: None)

  def test_batched_equals_one_by_one(self):
    self.assertEqual(self.hrs.shape, (4, 80, 80, 3))
    for i in range(2):
      hr, kernel, _ = pipeline.super_resolve(self.lrs[i], self.config, log=lambda m: None)
      np.testing.assert_allclose(self.hrs[i], hr, atol=1e-5)
      np.testing.assert_allclose(self.kernels[i], kernel, atol=1e-6)
    self.assertFalse(np.allclose(self.hrs[0], self.hrs[1]))   # the cases really differ

  def test_gaussian_cases_skip_the_phases(self):
    """With phase2.gaussian_test, the cases it calls Gaussian get their TV SR, as one by one,
    and the phases run batched on the others only, with their one-by-one outputs."""
    hr_gt = skimage.data.astronaut()[180:260, 200:280] / 255.0
    blurred = np.asarray(degradation.downscale(
        hr_gt.astype(np.float32), kernels.anisotropic_gaussian(9, sigmas=(2.0, 1.0)), 4))
    lrs = np.stack([blurred, *self.lrs])   # the class's 4 cases: the phases reuse its programs
    gains = [spectral_kernel.fit_gaussian(lr, 4, self.config.kernel.size)[1]['evidence_gain']
             for lr in lrs]
    self.assertLess(gains[0] + 0.01, min(0.0, *gains[1:]))     # τ below only the first
    config = _config()[0]
    config.phase2.gaussian_test = gains[0] + 0.01
    hrs, ks, info = pipeline.super_resolve_batch(lrs, config, log=lambda m: None)
    self.assertEqual(info['gaussian_cases'], [0])
    hr, k, one = pipeline.super_resolve(blurred, config, log=lambda m: None)
    self.assertTrue(one['phase1']['skipped'])
    np.testing.assert_allclose(hrs[0], hr, atol=1e-6)
    np.testing.assert_allclose(ks[0], k, atol=1e-7)
    np.testing.assert_allclose(hrs[1:], self.hrs, atol=1e-5)        # the phases, on 4 cases
    np.testing.assert_allclose(ks[1:], self.kernels, atol=1e-6)
    _, _, only = pipeline.super_resolve_batch(lrs[:1], config, log=lambda m: None)
    self.assertEqual((only['gaussian_cases'], only['phase1_seconds']), ([0], 0.0))

  def test_lrdip_cases_one_by_one(self):
    """kernel_source 'lrdip': each case gets its one-by-one lrdip output; the phases run
    batched on the cases whose estimate it rejects only, with their one-by-one outputs."""
    config = _config()[0]
    config.update_from_flattened_dict({'kernel_source': 'lrdip', 'lrdip.steps': 4,
                                       'lrdip.width': 8, 'lrdip.levels': 2,
                                       'lrdip.max_spread': 10.0})
    hrs, ks, info = pipeline.super_resolve_batch(self.lrs[:2], config, log=lambda m: None)
    self.assertEqual(info['phase1_seconds'], 0.0)
    for i in range(2):
      hr, k, _ = pipeline.super_resolve(self.lrs[i], config, log=lambda m: None)
      np.testing.assert_array_equal(hrs[i], hr)
      np.testing.assert_array_equal(ks[i], k)
    ratios = [dip_kernel.spread_ratio(pipeline.lrdip_kernel(lr, config)) for lr in self.lrs[:2]]
    config.lrdip.max_spread = (ratios[0] + ratios[1]) / 2   # one case kept, one rejected
    keep, drop = np.argsort(ratios)
    self.assertLess(ratios[keep], ratios[drop])
    hrs, ks, info = pipeline.super_resolve_batch(self.lrs[:2], config, log=lambda m: None)
    self.assertGreater(info['phase1_seconds'], 0.0)
    np.testing.assert_allclose(hrs[drop], self.hrs[drop], atol=1e-5)   # the phases' output
    np.testing.assert_allclose(ks[drop], self.kernels[drop], atol=1e-6)
    hr, _, _ = pipeline.super_resolve(self.lrs[keep], config, log=lambda m: None)
    np.testing.assert_array_equal(hrs[keep], hr)

  def test_edges_cases_one_by_one(self):
    """kernel_source 'edges': each case gets its one-by-one output; no phase runs."""
    config = _config()[0]
    config.update_from_flattened_dict({'kernel_source': 'edges', 'edges.n_iter': 2})
    hrs, ks, info = pipeline.super_resolve_batch(self.lrs[:2], config, log=lambda m: None)
    self.assertEqual(info['phase1_seconds'], 0.0)
    self.assertGreater(info['source_seconds'], 0.0)
    for i in range(2):
      hr, k, _ = pipeline.super_resolve(self.lrs[i], config, log=lambda m: None)
      np.testing.assert_array_equal(hrs[i], hr)
      np.testing.assert_array_equal(ks[i], k)

  def test_sharded_over_four_devices_equals_one_device(self):
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, 'lrs.npy')
      np.save(path, self.lrs)
      env = dict(os.environ, JAX_PLATFORMS='cpu',
                 XLA_FLAGS='--xla_force_host_platform_device_count=4',
                 PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
      subprocess.run([sys.executable, '-c', _SHARDED, path, json.dumps(self.overrides)],
                     check=True, cwd=REPO, env=env, capture_output=True, timeout=300)
      out = np.load(path + '.out.npz')
      self.assertEqual(int(out['devices']), 4)
      np.testing.assert_allclose(out['hrs'], self.hrs, atol=1e-5)
      np.testing.assert_allclose(out['ks'], self.kernels, atol=1e-6)
    self.assertEqual(self.info['devices'], 1)


if __name__ == '__main__':
  absltest.main()
