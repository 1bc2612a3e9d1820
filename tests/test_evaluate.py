"""Tests for kfjax.evaluation and tools/evaluate.py (a tiny 2-case x4 benchmark)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
import imageio.v3 as iio
import jax.numpy as jnp
import numpy as np
import scipy.ndimage

from configs import x4
from kfjax import benchmark
from kfjax import degradation
from kfjax import evaluation
from kfjax import io as kio
from kfjax import kernels
from kfjax import pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, 'tools', 'evaluate.py')
METHODS = ['kernelfusion', 'bicubic', 'bp_gt', 'bp_est']


def _textured_image(seed, size=64):
  rng = np.random.default_rng(seed)
  x = scipy.ndimage.gaussian_filter(rng.random((size, size, 3)), (1.5, 1.5, 0))
  x = (x - x.min()) / (x.max() - x.min())
  return np.round(255 * x).astype(np.uint8)


def _small_config():
  """The 'tiny' config shrunk further: one Phase-2 timestep, a few steps, K = 11."""
  c = x4.get_config('tiny')
  c.pd.width, c.pd.num_blocks, c.pd.batch, c.pd.steps, c.pd.chunk = 8, 1, 1, 2, 2
  c.unet.features = (8, 8)
  c.kernel.size, c.kernel.width, c.kernel.num_layers = 11, 16, 2   # GT kernel is 13×13
  c.phase2.t_start, c.phase2.n_iter_first, c.phase2.n_iter = 10, 2, 1
  return c


def _fake_super_resolve(fail_lr=None):
  """A stand-in for pipeline.super_resolve: bicubic + a Gaussian kernel; raises on ``fail_lr``."""
  def fake(lr01, config, *, kernel=None, ckpt_dir=None, reuse_phase1=False, log=None):
    del kernel, ckpt_dir, reuse_phase1, log
    if fail_lr is not None and np.array_equal(np.asarray(lr01), fail_lr):
      raise RuntimeError('boom\nsecond line')
    hr = np.asarray(degradation.bicubic_upscale(jnp.asarray(lr01), config.scale))
    g = np.exp(-0.5 * ((np.arange(config.kernel.size) - config.kernel.size // 2) / 1.5) ** 2)
    k = np.outer(g, g)
    return hr, (k / k.sum()).astype(np.float32), {'phase1': {'seconds': 0.5},
                                                  'phase2': {'seconds': 1.5}}
  return fake


def _mtimes(out_dir):
  out = {}
  for root, _, files in os.walk(os.path.join(out_dir, 'cases')):
    for f in files:
      out[os.path.join(root, f)] = os.stat(os.path.join(root, f)).st_mtime_ns
  return out


class EvaluateTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    hr_dir = os.path.join(cls.root, 'hr_in')
    os.makedirs(hr_dir)
    for i in range(2):
      iio.imwrite(os.path.join(hr_dir, f'img{i}.png'), _textured_image(i))
    k_path = os.path.join(cls.root, 'shake.npy')
    np.save(k_path, kernels.camera_shake(9, seed=0))
    cls.bench = os.path.join(cls.root, 'bench')
    cls.manifest = benchmark.build(benchmark.generic_cases(hr_dir, [k_path], scale=4),
                                   cls.bench, scale=4, meta={'name': 'unit', 'seed': 0})
    cls.config = _small_config()
    cls.out = os.path.join(cls.root, 'out')
    with mock.patch.object(pipeline, 'super_resolve', wraps=pipeline.super_resolve) as sr:
      cls.results = evaluation.evaluate(cls.bench, cls.config, cls.out, methods=METHODS,
                                        command='unit test command')
      cls.sr_calls = sr.call_count
    with open(os.path.join(cls.out, 'results.json')) as f:
      cls.json = json.load(f)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root)
    super().tearDownClass()

  def _case_dir(self, out, cid, method):
    return os.path.join(out, 'cases', cid, method)

  def test_results_json_structure(self):
    r = self.json
    self.assertEqual(r, json.loads(json.dumps(self.results)))
    for key in ('cases', 'summary', 'command', 'git_commit', 'hardware', 'config'):
      self.assertIn(key, r)
    self.assertEqual(r['command'], 'unit test command')
    self.assertEqual(r['config']['kernel']['size'], 11)
    self.assertEqual(set(r['hardware']), {'backend', 'device_kind', 'device_count', 'cpu_count'})
    self.assertEqual(self.sr_calls, 2)
    ids = [c['id'] for c in self.manifest['cases']]
    self.assertLen(r['cases'], len(ids) * len(METHODS))
    self.assertEqual({(c['id'], c['method']) for c in r['cases']},
                     {(i, m) for i in ids for m in METHODS})
    for c in r['cases']:
      self.assertEqual(c['status'], 'ok', c)
      for k in ('id', 'image', 'kernel', 'method', 'seconds', *evaluation.IMAGE_METRICS):
        self.assertIn(k, c)
      kernel_method = c['method'] == 'kernelfusion'
      for k in ('kernel_nerr', 'kernel_psnr', 'phase1_seconds', 'phase2_seconds'):
        self.assertEqual(k in c, kernel_method, (k, c['method']))
      self.assertEqual('bp_gap_y' in c, c['method'] == 'bp_est')
      self.assertGreater(c['psnr_y'], 15.0)
      d = self._case_dir(self.out, c['id'], c['method'])
      self.assertEqual(iio.imread(os.path.join(d, 'hr.png')).shape, (64, 64, 3))
      self.assertTrue(os.path.isfile(os.path.join(d, 'metrics.json')))
      self.assertEqual(os.path.isfile(os.path.join(d, 'kernel.npy')), kernel_method)
      if kernel_method:
        self.assertEqual(np.load(os.path.join(d, 'kernel.npy')).shape, (11, 11))

  def test_summary_is_mean_of_cases(self):
    summary = self.json['summary']
    self.assertEqual(list(summary), ['bicubic', 'bp_gt', 'kernelfusion', 'bp_est'])
    for m, s in summary.items():
      rs = [c for c in self.json['cases'] if c['method'] == m]
      self.assertEqual((s['n'], s['n_failed']), (2, 0))
      for k, v in s.items():
        if k not in ('n', 'n_failed'):
          self.assertAlmostEqual(v, np.mean([c[k] for c in rs]), places=9, msg=(m, k))
    self.assertIn('kernel_nerr', summary['kernelfusion'])

  def test_bp_gap(self):
    by = {(c['id'], c['method']): c for c in self.json['cases']}
    for c in self.json['cases']:
      if c['method'] == 'bp_est':
        self.assertAlmostEqual(c['bp_gap_y'], c['psnr_y'] - by[c['id'], 'bp_gt']['psnr_y'])

  def test_bp_gt_beats_bicubic(self):
    by = {(c['id'], c['method']): c['psnr_y'] for c in self.json['cases']}
    for c in self.manifest['cases']:
      self.assertGreater(by[c['id'], 'bp_gt'], by[c['id'], 'bicubic'] + 0.3)

  def test_classical_references(self):
    for method in ('sparse_bp', 'spectral_bp', 'lrdip_bp', 'edge_bp'):
      out = os.path.join(self.root, 'out_' + method)
      r = evaluation.evaluate(self.bench, self.config, out, methods=[method])
      for c in r['cases']:
        self.assertEqual(c['status'], 'ok')
        self.assertTrue(np.isfinite(c['psnr_y']))
        self.assertIn('kernel_nerr', c)
        k = np.load(os.path.join(self._case_dir(out, c['id'], method), 'kernel.npy'))
        self.assertEqual(k.shape, (self.config.kernel.size,) * 2)
        self.assertAlmostEqual(float(k.sum()), 1.0, places=5)
      for field, value in (('final_bp_reg', 0.1), ('final_tv', 1e-3)):
        changed = self.config.copy_and_resolve_references()
        changed.phase2[field] = value
        self.assertNotEqual(evaluation.config_digest(self.config, method),
                            evaluation.config_digest(changed, method))
    changed = self.config.copy_and_resolve_references()
    changed.lrdip.steps += 1                      # lrdip_bp's settings are the config's
    self.assertNotEqual(evaluation.config_digest(self.config, 'lrdip_bp'),
                        evaluation.config_digest(changed, 'lrdip_bp'))
    self.assertEqual(evaluation.config_digest(self.config, 'sparse_bp'),
                     evaluation.config_digest(changed, 'sparse_bp'))
    changed.edges.r *= 2                          # and edge_bp's
    self.assertNotEqual(evaluation.config_digest(self.config, 'edge_bp'),
                        evaluation.config_digest(changed, 'edge_bp'))

  def test_ablations_are_of_the_diffusion(self):
    config = self.config.copy_and_resolve_references()
    config.kernel_source = 'lrdip'
    self.assertEqual(evaluation.method_config(config, 'kernelfusion').kernel_source, 'lrdip')
    for method in ('pd_unet', 'unet_only', 'dip', 'kf_gtk'):
      cfg = evaluation.method_config(config, method)
      self.assertEqual((cfg.kernel_source, cfg.phase2.mode),
                       ('inr', evaluation.KERNEL_METHODS[method]))

  def test_markdown(self):
    with open(os.path.join(self.out, 'results.md')) as f:
      md = f.read()
    for text in ('## Means per method', '## PSNR-Y per kernel', '## PSNR-Y per image',
                 'unit test command', self.json['git_commit'] or 'unknown', '| shake |',
                 '| img0 |', '| img1 |', '| kernelfusion |', 'kernel_nerr', 'cpu'):
      self.assertIn(text, md)
    self.assertNotIn('## Failed', md)
    psnr = self.json['summary']['bp_gt']['psnr_y']
    self.assertIn(f'{psnr:.3f}', md)

  def test_kernel_grid(self):
    img = iio.imread(os.path.join(self.out, 'kernels.png'))
    zoom = 96 // 13
    self.assertEqual(img.shape, (2 * (13 * zoom + 4) + 4, 2 * (13 * zoom + 4) + 4))
    grid = evaluation.kernel_grid([np.ones((3, 3))] * 3, [None, np.eye(5), None], columns=2,
                                  cell=10, gap=1)
    self.assertEqual(grid.shape, (2 * 2 * (10 + 1) + 1, 2 * (10 + 1) + 1))
    self.assertEqual(grid[1: 11, 1: 11].max(), 255)          # GT of case 1
    self.assertEqual(grid[12: 22, 1: 11].max(), 0)           # no estimate: empty cell
    three = evaluation.kernel_grid([np.ones((3, 3))] * 3, [None] * 3, [np.eye(5)] * 3,
                                   columns=2, cell=10, gap=1)
    self.assertEqual(three.shape, (2 * 3 * (10 + 1) + 1, 2 * (10 + 1) + 1))
    self.assertEqual(three[23: 33, 1: 11].max(), 255)        # third row: the second method
    self.assertEqual(evaluation.grid_methods(['sparse_bp', 'bicubic', 'kernelfusion']),
                     ['kernelfusion', 'sparse_bp'])
    self.assertEqual(evaluation.grid_methods(['bicubic']), ['kernelfusion'])

  def test_rerun_skips_finished(self):
    before = _mtimes(self.out)
    with mock.patch.object(pipeline, 'super_resolve', side_effect=AssertionError('rerun')) as sr:
      results = evaluation.evaluate(self.bench, self.config, self.out, methods=METHODS,
                                    command='unit test command')
    self.assertEqual(sr.call_count, 0)
    self.assertEqual(_mtimes(self.out), before)
    self.assertEqual(results['cases'], self.json['cases'])
    # A changed config does not recompute finished results, but warns (kernel methods only).
    changed = self.config.copy_and_resolve_references()
    changed.phase2.t_start = 20
    with mock.patch.object(pipeline, 'super_resolve', side_effect=AssertionError('rerun')), \
        self.assertLogs('absl', level='WARNING') as logs:
      evaluation.evaluate(self.bench, changed, self.out, methods=METHODS)
    warned = [line for line in logs.output if 'different config' in line]
    self.assertLen(warned, 4)                      # kernelfusion and bp_est, 2 cases
    self.assertEqual(_mtimes(self.out), before)
    # A subset re-aggregates over the selected cases only.
    one = evaluation.evaluate(self.bench, self.config, self.out, methods=['bicubic'], limit=1)
    self.assertLen(one['cases'], 1)
    self.assertEqual(one['summary']['bicubic']['n'], 1)
    evaluation.evaluate(self.bench, self.config, self.out, methods=METHODS,
                        command='unit test command')                    # restore the reports

  def test_failure_is_recorded_then_retried(self):
    out = os.path.join(self.root, 'out_fail')
    case1 = self.manifest['cases'][1]
    fail_lr, _ = kio.read_image(os.path.join(self.bench, case1["lr"]))
    with mock.patch.object(pipeline, 'super_resolve', side_effect=_fake_super_resolve(fail_lr)):
      r = evaluation.evaluate(self.bench, self.config, out, methods=METHODS)
    status = {(c['id'], c['method']): c for c in r['cases']}
    bad = case1['id']
    self.assertEqual(status[bad, 'kernelfusion']['status'], 'failed')
    self.assertEqual(status[bad, 'kernelfusion']['error'], 'RuntimeError: boom')
    self.assertEqual(status[bad, 'bp_est']['status'], 'failed')
    self.assertIn('run kernelfusion', status[bad, 'bp_est']['error'])
    good = [c for c in r['cases'] if (c['id'], c['method']) not in
            {(bad, 'kernelfusion'), (bad, 'bp_est')}]
    self.assertLen(good, 6)
    self.assertTrue(all(c['status'] == 'ok' for c in good))
    self.assertEqual((r['summary']['kernelfusion']['n'], r['summary']['kernelfusion']['n_failed']),
                     (1, 1))
    self.assertEqual(r['summary']['bicubic']['n'], 2)
    self.assertAlmostEqual(r['summary']['kernelfusion']['phase2_seconds'], 1.5)
    with open(os.path.join(out, 'results.md')) as f:
      self.assertIn(f'- {bad} / kernelfusion: RuntimeError: boom', f.read())
    # A re-run retries only the failed ones.
    before = _mtimes(out)
    with mock.patch.object(pipeline, 'super_resolve', side_effect=_fake_super_resolve()) as sr:
      r = evaluation.evaluate(self.bench, self.config, out, methods=METHODS)
    self.assertEqual(sr.call_count, 1)
    self.assertTrue(all(c['status'] == 'ok' for c in r['cases']))
    d = self._case_dir(out, bad, 'kernelfusion')
    self.assertFalse(os.path.exists(os.path.join(d, 'error.json')))
    for m in ('bicubic', 'bp_gt'):
      p = os.path.join(self._case_dir(out, bad, m), 'metrics.json')
      self.assertEqual(os.stat(p).st_mtime_ns, before[p])

  def test_usage_errors(self):
    E = evaluation.EvaluationError
    with self.assertRaisesRegex(E, 'unknown method'):
      evaluation.evaluate(self.bench, self.config, self.out, methods=['bicubic', 'srgan'])
    with self.assertRaisesRegex(E, 'benchmark folder not found'):
      evaluation.evaluate(os.path.join(self.root, 'nope'), self.config, self.out)
    with self.assertRaisesRegex(E, 'no manifest'):
      evaluation.evaluate(self.root, self.config, self.out)
    with self.assertRaisesRegex(E, 'not in the benchmark'):
      evaluation.evaluate(self.bench, self.config, self.out, case_ids=['nope'])
    c2 = self.config.copy_and_resolve_references()
    c2.scale = 2
    with self.assertRaisesRegex(E, 'x2 but the benchmark is x4'):
      evaluation.evaluate(self.bench, c2, self.out)
    self.assertEqual(evaluation.parse_methods(['bp_est', 'kernelfusion', 'bicubic']),
                     ['bicubic', 'kernelfusion', 'bp_est'])

  def test_cli(self):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
    def run(*args):
      return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=120, check=False)
    bad = run(f'--bench={self.bench}', '--config=configs/x4.py:tiny', '--config.scale=2',
              f'--out={self.root}/cli_bad')
    self.assertEqual(bad.returncode, 2, bad.stderr)
    self.assertEqual(bad.stderr.strip().splitlines()[-1],
                     'evaluate: error: the config is x2 but the benchmark is x4; use a config '
                     'with scale=4')
    cli_out = os.path.join(self.root, 'cli_ok')
    ok = run(f'--bench={self.bench}', '--config=configs/x4.py:tiny',
             '--config.phase2.t_start=30', f'--out={cli_out}', '--methods=bicubic,bp_gt',
             f'--cases={self.manifest["cases"][1]["id"]}')
    self.assertEqual(ok.returncode, 0, ok.stderr[-2000:])
    with open(os.path.join(cli_out, 'results.json')) as f:
      r = json.load(f)
    self.assertLen(r['cases'], 2)
    self.assertEqual(r['config']['phase2']['t_start'], 30)
    self.assertIn('--config.phase2.t_start=30', r['command'])


if __name__ == '__main__':
  absltest.main()
