"""Tests for kfjax.benchmark and tools/make_benchmark.py."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
import imageio.v3 as iio
import jax.numpy as jnp
import numpy as np
import scipy.io
import scipy.ndimage

from kfjax import benchmark
from kfjax import degradation
from kfjax import kernels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, 'tools', 'make_benchmark.py')
DATA = os.path.normpath(os.path.join(REPO, '..', 'shared', 'data'))
HAVE_DATA = (os.path.isdir(os.path.join(DATA, 'div2krk', 'gt'))
             and os.path.isdir(os.path.join(DATA, 'levin09_kernels')))


def _smooth_image(seed, h, w):
  rng = np.random.default_rng(seed)
  x = scipy.ndimage.gaussian_filter(rng.random((h, w, 3)), (2, 2, 0))
  x = (x - x.min()) / (x.max() - x.min())
  return np.round(255 * x).astype(np.uint8)


def _tree_bytes(root):
  out = {}
  for sub in ('lr', 'hr', 'kernels'):
    for f in sorted(os.listdir(os.path.join(root, sub))):
      with open(os.path.join(root, sub, f), 'rb') as fh:
        out[f'{sub}/{f}'] = fh.read()
  return out


def _run_tool(*args):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True,
                        env=env, cwd=REPO, timeout=120, check=False)


class GenericBenchmarkTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.hr_dir = os.path.join(cls.root, 'hr_in')
    os.makedirs(cls.hr_dir)
    iio.imwrite(os.path.join(cls.hr_dir, 'img10.png'), _smooth_image(0, 51, 62))
    iio.imwrite(os.path.join(cls.hr_dir, 'img2.png'), _smooth_image(1, 48, 40))
    cls.k_npy = os.path.join(cls.root, 'shake.npy')
    np.save(cls.k_npy, kernels.camera_shake(9, seed=0))
    cls.k_mat = os.path.join(cls.root, 'box.mat')
    scipy.io.savemat(cls.k_mat, {'Kernel': np.ones((3, 5))})
    cls.out = os.path.join(cls.root, 'bench')
    cls.cases = benchmark.generic_cases(cls.hr_dir, [cls.k_npy, cls.k_mat], scale=2)
    cls.manifest = benchmark.build(cls.cases, cls.out, scale=2,
                                   meta={'name': 'tiny', 'seed': 0, 'command': 'test'})

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root)
    super().tearDownClass()

  def test_manifest(self):
    with open(os.path.join(self.out, 'manifest.json')) as f:
      m = json.load(f)
    self.assertEqual(m, self.manifest)
    for key in ('name', 'scale', 'size', 'seed', 'command', 'cases'):
      self.assertIn(key, m)
    self.assertEqual((m['name'], m['scale'], m['size']), ('tiny', 2, 'full'))
    self.assertEqual([c['id'] for c in m['cases']],
                     ['img2__shake', 'img2__box', 'img10__shake', 'img10__box'])
    for c in m['cases']:
      self.assertEqual(set(c), {'id', 'image', 'kernel', 'scale', 'lr', 'hr', 'kernel_path'})
      for key in ('lr', 'hr', 'kernel_path'):
        self.assertFalse(os.path.isabs(c[key]))
        self.assertTrue(os.path.isfile(os.path.join(self.out, c[key])), c[key])
    self.assertLen(os.listdir(os.path.join(self.out, 'hr')), 2)
    self.assertLen(os.listdir(os.path.join(self.out, 'kernels')), 2)

  def test_lr_is_quantised_downscale(self):
    m = benchmark.read_manifest(self.out)
    shapes = {'img10': (50, 62), 'img2': (48, 40)}
    for c in m['cases']:
      hr = iio.imread(c['hr'])
      lr = iio.imread(c['lr'])
      k = np.load(c['kernel_path'])
      self.assertEqual(hr.shape[:2], shapes[c['image']])
      self.assertEqual(lr.shape, (hr.shape[0] // 2, hr.shape[1] // 2, 3))
      self.assertEqual(lr.dtype, np.uint8)
      self.assertAlmostEqual(float(k.sum()), 1.0, places=5)
      want = np.asarray(degradation.downscale(jnp.asarray(hr / 255.0, jnp.float32),
                                              jnp.asarray(k), 2))
      np.testing.assert_array_less(np.abs(lr / 255.0 - want), 0.5 / 255 + 1e-6)
    src = iio.imread(os.path.join(self.hr_dir, 'img10.png'))
    np.testing.assert_array_equal(iio.imread(os.path.join(self.out, 'hr', 'img10.png')),
                                  src[:50])

  def test_kernels_are_aligned(self):
    k = np.load(os.path.join(self.out, 'kernels', 'shake.npy'))
    box = np.load(os.path.join(self.out, 'kernels', 'box.npy'))
    self.assertEqual(k.shape, box.shape)             # one common support
    target = k.shape[0] // 2 + 0.5
    for kk in (k, box):
      for c in degradation.center_of_mass(kk):
        self.assertLessEqual(abs(c - target), 0.5 + 1e-6)

  def test_bit_for_bit_reproducible(self):
    out2 = os.path.join(self.root, 'bench2')
    cases = benchmark.generic_cases(self.hr_dir, [self.k_npy, self.k_mat], scale=2)
    m2 = benchmark.build(cases, out2, scale=2, meta={'name': 'tiny', 'seed': 0,
                                                     'command': 'test'})
    self.assertEqual(m2, self.manifest)
    self.assertEqual(_tree_bytes(out2), _tree_bytes(self.out))

  def test_refuses_non_empty_and_overwrites(self):
    out = os.path.join(self.root, 'bench3')
    cases = benchmark.generic_cases(self.hr_dir, [self.k_npy], scale=4, pairing='diagonal')
    benchmark.build(cases, out, scale=4, size='crop', crop=32)
    with self.assertRaisesRegex(benchmark.BenchmarkError, 'not empty'):
      benchmark.build(cases, out, scale=4, size='crop', crop=32)
    stale = os.path.join(out, 'lr', 'old.png')
    shutil.copy(os.path.join(out, 'lr', os.listdir(os.path.join(out, 'lr'))[0]), stale)
    m = benchmark.build(cases, out, scale=4, size='crop', crop=32, overwrite=True)
    self.assertFalse(os.path.exists(stale))
    self.assertLen(m['cases'], 1)
    c = benchmark.read_manifest(out)['cases'][0]
    self.assertEqual(iio.imread(c['hr']).shape, (32, 32, 3))
    self.assertEqual(iio.imread(c['lr']).shape, (8, 8, 3))

  def test_too_small_image_writes_nothing(self):
    out = os.path.join(self.root, 'too_small')
    cases = benchmark.generic_cases(self.hr_dir, [self.k_npy], scale=4)
    # img10 is 51x62 and fits a 48x48 crop; img2 (48x40) does not, and it comes first in
    # natural order, so the check must run before any case is written.
    with self.assertRaisesRegex(benchmark.BenchmarkError,
                                r'img2\.png: 48x40 is smaller than the 48x48 crop; nothing'):
      benchmark.build(cases, out, scale=4, size='crop', crop=48)
    self.assertFalse(os.path.exists(out))
    with self.assertRaisesRegex(benchmark.BenchmarkError, r'and 1 more too-small images'):
      benchmark.build(cases, out, scale=4, size='crop', crop=64)
    self.assertFalse(os.path.exists(out))

  def test_pairings(self):
    self.assertEqual(benchmark.pair(2, 3, 'all', 0),
                     [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)])
    self.assertEqual(benchmark.pair(2, 3, 'diagonal', 0), [(0, 0), (1, 1)])
    seeded = benchmark.pair(16, 8, 'seeded', 0)
    self.assertEqual(seeded, benchmark.pair(16, 8, 'seeded', 0))
    self.assertNotEqual(seeded, benchmark.pair(16, 8, 'seeded', 1))
    self.assertEqual([i for i, _ in seeded], list(range(16)))

  def test_cli(self):
    out = os.path.join(self.root, 'cli')
    r = _run_tool(f'--hr_dir={self.hr_dir}', f'--kernels={self.k_npy},{self.k_mat}',
                  '--pairing=diagonal', '--scale=2', f'--out={out}', '--quiet')
    self.assertEqual(r.returncode, 0, r.stderr)
    with open(os.path.join(out, 'manifest.json')) as f:
      m = json.load(f)
    self.assertEqual([c['id'] for c in m['cases']], ['img2__shake', 'img10__box'])
    self.assertIn('--pairing=diagonal', m['command'])
    # The same cases as the in-process build, byte for byte.
    for c in m['cases']:
      for key in ('lr', 'hr', 'kernel_path'):
        with open(os.path.join(out, c[key]), 'rb') as a, \
             open(os.path.join(self.out, c[key]), 'rb') as b:
          self.assertEqual(a.read(), b.read(), c[key])
    # --cases keeps only the named cases, byte for byte the same.
    sub = os.path.join(self.root, 'sub')
    r = _run_tool(f'--hr_dir={self.hr_dir}', f'--kernels={self.k_npy},{self.k_mat}',
                  '--pairing=diagonal', '--scale=2', f'--out={sub}', '--quiet',
                  '--cases=img10__box')
    self.assertEqual(r.returncode, 0, r.stderr)
    with open(os.path.join(sub, 'manifest.json')) as f:
      m = json.load(f)
    self.assertEqual([c['id'] for c in m['cases']], ['img10__box'])
    with open(os.path.join(sub, m['cases'][0]['lr']), 'rb') as a, \
         open(os.path.join(out, m['cases'][0]['lr']), 'rb') as b:
      self.assertEqual(a.read(), b.read())
    # Errors: one line on stderr, exit status 2, no traceback.
    for args in ([f'--out={self.root}/c', f'--hr_dir={self.hr_dir}', f'--kernels={self.k_npy}',
                  '--cases=nope__box'],
                 [f'--out={out}', f'--hr_dir={self.hr_dir}', f'--kernels={self.k_npy}'],
                 [f'--out={self.root}/x', '--hr_dir=/no/such/dir', f'--kernels={self.k_npy}'],
                 [f'--out={self.root}/y', f'--hr_dir={self.hr_dir}', '--kernels=/no/k.npy'],
                 [f'--out={self.root}/z', f'--hr_dir={self.hr_dir}', f'--kernels={self.k_npy}',
                  '--size=crop', '--crop=64']):
      r = _run_tool(*args)
      self.assertEqual(r.returncode, 2, r.stderr)
      lines = [l for l in r.stderr.splitlines() if l.strip()]
      self.assertLen(lines, 1, r.stderr)
      self.assertStartsWith(lines[0], 'make_benchmark: error:')


@absltest.skipUnless(HAVE_DATA, 'shared data (../shared/data) not present')
class SharedDataBenchmarkTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root)

  def test_blind144_crop_mini(self):
    cases = benchmark.named_cases('blind144', DATA, scale=4, subset='mini')
    out = os.path.join(self.root, 'mini')
    m = benchmark.build(cases, out, scale=4, size='crop')
    self.assertLen(m['cases'], 12)
    self.assertEqual(m['cases'][0]['id'], 'im_2__levin09_k1')
    self.assertEqual(m['cases'][-1]['id'], 'im_38__aniso_gaussian')
    m = benchmark.read_manifest(out)
    for c in m['cases']:
      self.assertEqual(iio.imread(c['lr']).shape, (64, 64, 3))
      self.assertEqual(iio.imread(c['hr']).shape, (256, 256, 3))
      self.assertEqual(np.load(c['kernel_path']).shape, (33, 33))
    c = m['cases'][8]
    want = degradation.downscale(jnp.asarray(iio.imread(c['hr']) / 255.0, jnp.float32),
                                 jnp.asarray(np.load(c['kernel_path'])), 4)
    np.testing.assert_array_less(np.abs(iio.imread(c['lr']) / 255.0 - np.asarray(want)),
                                 0.5 / 255 + 1e-6)

  def test_div2krk_crop_is_aligned(self):
    cases = benchmark.named_cases('div2krk', DATA, scale=4)
    self.assertLen(cases, 16)
    out = os.path.join(self.root, 'rk')
    benchmark.build(cases[:2], out, scale=4, size='crop')
    m = benchmark.read_manifest(out)
    for c in m['cases']:
      hr = iio.imread(c['hr']) / 255.0
      lr = iio.imread(c['lr']) / 255.0
      self.assertEqual(lr.shape, (64, 64, 3))
      self.assertEqual(hr.shape, (256, 256, 3))
      y = np.asarray(degradation.downscale(jnp.asarray(hr, jnp.float32),
                                           jnp.asarray(np.load(c['kernel_path'])), 4))
      psnr = 10 * np.log10(1.0 / np.mean((y - lr)[4:-4, 4:-4] ** 2))
      self.assertGreater(psnr, 40.0, c['id'])        # provided LR explained by HR ⊛ k

  def test_named_errors(self):
    with self.assertRaisesRegex(benchmark.BenchmarkError, 'mini'):
      benchmark.named_cases('div2kfk', DATA, subset='mini')
    with self.assertRaisesRegex(benchmark.BenchmarkError, 'x3'):
      benchmark.named_cases('div2krk', DATA, scale=3)
    a = benchmark.named_cases('div2kfk', DATA, seed=0)
    b = benchmark.named_cases('div2kfk', DATA, seed=0)
    self.assertLen(a, 16)
    self.assertEqual([c.id for c in a], [c.id for c in b])


if __name__ == '__main__':
  absltest.main()
