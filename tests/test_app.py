"""In-process tests of kfjax.app (what main.py runs), with a fake super_resolve.

The fake returns the bicubic upscale of the LR and a delta kernel at once, so
these tests cover the result folders, skipping, summary.csv, input kinds,
size checks and failures in folder runs without training anything. The real
pipeline is exercised through main.py in tests/test_cli.py.
"""

import csv
import json
import os
import re
import tempfile
from pathlib import Path

from absl.testing import absltest, parameterized
import imageio.v3 as iio
import jax.numpy as jnp
import numpy as np
from PIL import Image
import scipy.io
import tifffile

from configs import x4
from kfjax import app, degradation, io, pipeline

LR_SIZE = 32
OUTPUTS = ('hr.png', 'kernel.npy', 'kernel.mat', 'kernel.png', 'config.json', 'metrics.json',
           'report.png', 'hr_diffusion.png')


def _tiny():
  return x4.get_config('tiny')


def _rgb(size=LR_SIZE, seed=0):
  """A smooth-ish (size, size, 3) uint8 test image."""
  rng = np.random.RandomState(seed)
  y, x = np.mgrid[0:size, 0:size] / size
  img = np.stack([np.sin(6 * x + 2 * y), np.cos(5 * y - 3 * x), x * y], -1)
  img = (img - img.min()) / (img.max() - img.min())
  img = 0.9 * img + 0.1 * rng.rand(size, size, 3)
  return np.round(img * 255).astype(np.uint8)


def _png_kind(path):
  """(bit depth, channels) from a PNG's IHDR (imageio/Pillow reduce 16-bit RGB to 8 bits)."""
  head = Path(path).read_bytes()[:26]
  assert head[:8] == b'\x89PNG\r\n\x1a\n' and head[12:16] == b'IHDR', path
  return head[24], {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}[head[25]]


def _save_png(path, array):
  Image.fromarray(array).save(path, format='PNG')
  return str(path)


class FakePipeline:
  """Stands in for pipeline.super_resolve: bicubic HR, delta kernel; records calls."""

  def __init__(self):
    self.calls = []

  def __call__(self, lr01, config, *, ckpt_dir=None, log=None):
    self.calls.append({'shape': np.shape(lr01), 'ckpt_dir': ckpt_dir})
    s, k = config.scale, config.kernel.size
    hr = np.clip(np.asarray(degradation.bicubic_upscale(jnp.asarray(lr01, jnp.float32), s)),
                 0.0, 1.0)
    kernel = np.zeros((k, k), np.float32)
    kernel[k // 2, k // 2] = 1.0
    info = {'backend': 'cpu', 'device': 'fake',
            'phase1': {'steps': 0, 'seconds': 0.0, 'resumed': False},
            'phase2': {'seconds': 0.0, 'timesteps': 0, 'loss_last': [0.5],
                       'hr_diffusion': hr}}
    return hr, kernel, info


class AppTestCase(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.fake = FakePipeline()
    patcher = absltest.mock.patch.object(pipeline, 'super_resolve', self.fake)
    patcher.start()
    self.addCleanup(patcher.stop)
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.tmp = Path(tmp.name)
    self.inp = self.tmp / 'in'
    self.inp.mkdir()
    self.out = self.tmp / 'out'

  def run_app(self, input_path, config=None, **kw):
    return app.run(config or _tiny(), input_path=str(input_path), output_dir=str(self.out),
                   **kw)

  def assert_result_folder(self, folder, lr_shape, scale=4):
    for name in OUTPUTS:
      self.assertTrue((folder / name).is_file(), f'{folder / name} missing')
    hr = iio.imread(folder / 'hr.png')
    self.assertEqual(hr.shape[:2], (lr_shape[0] * scale, lr_shape[1] * scale))
    k = np.load(folder / 'kernel.npy')
    self.assertAlmostEqual(float(k.sum()), 1.0, places=5)
    np.testing.assert_allclose(scipy.io.loadmat(folder / 'kernel.mat')['Kernel'], k, atol=1e-7)
    json.loads((folder / 'config.json').read_text())
    return hr


class ResultFolderTest(AppTestCase):

  def test_single_image(self):
    path = _save_png(self.inp / 'photo.png', _rgb())
    rows, status = self.run_app(path)
    self.assertEqual(status, 0)
    self.assertEqual([r['status'] for r in rows], ['ok'])
    hr = self.assert_result_folder(self.out / 'photo', (LR_SIZE, LR_SIZE))
    self.assertEqual((hr.dtype, hr.ndim), (np.uint8, 3))
    self.assertLen(self.fake.calls, 1)
    self.assertEqual(self.fake.calls[0]['ckpt_dir'], str(self.out / 'photo' / 'checkpoints'))
    self.assertFalse((self.out / 'summary.csv').exists())   # only folder runs write one
    metrics = json.loads((self.out / 'photo' / 'metrics.json').read_text())
    self.assertEqual(metrics['hr_shape'], [LR_SIZE * 4, LR_SIZE * 4, 3])
    config = json.loads((self.out / 'photo' / 'config.json').read_text())
    self.assertEqual(config['variant'], 'tiny')

  def test_folder_of_two(self):
    _save_png(self.inp / 'a.png', _rgb(seed=1))
    _save_png(self.inp / 'b.png', _rgb(seed=2))
    rows, status = self.run_app(self.inp)
    self.assertEqual(status, 0)
    for name in ('a', 'b'):
      self.assert_result_folder(self.out / name, (LR_SIZE, LR_SIZE))
    with open(self.out / 'summary.csv', newline='') as f:
      summary = list(csv.DictReader(f))
    self.assertEqual([(r['image'], r['status']) for r in summary], [('a', 'ok'), ('b', 'ok')])
    self.assertEqual(summary[0]['hr_shape'], str([LR_SIZE * 4, LR_SIZE * 4, 3]))
    self.assertEqual([r['image'] for r in rows], ['a', 'b'])

  def test_skip_then_overwrite(self):
    path = _save_png(self.inp / 'photo.png', _rgb())
    self.run_app(path)
    folder = self.out / 'photo'
    before = {n: ((folder / n).stat().st_mtime_ns, (folder / n).read_bytes()) for n in OUTPUTS}
    rows, status = self.run_app(path)                      # no overwrite: skipped
    self.assertEqual((rows[0]['status'], status), ('skipped', 0))
    self.assertLen(self.fake.calls, 1)
    after = {n: ((folder / n).stat().st_mtime_ns, (folder / n).read_bytes()) for n in OUTPUTS}
    self.assertEqual(before, after)
    rows, status = self.run_app(path, overwrite=True)      # recomputed
    self.assertEqual((rows[0]['status'], status), ('ok', 0))
    self.assertLen(self.fake.calls, 2)
    for n in OUTPUTS:
      self.assertGreater((folder / n).stat().st_mtime_ns, before[n][0], n)

  def test_unfinished_folder_is_not_skipped(self):
    path = _save_png(self.inp / 'photo.png', _rgb())
    self.run_app(path)
    (self.out / 'photo' / 'metrics.json').unlink()         # as if killed before the end
    rows, _ = self.run_app(path)
    self.assertEqual(rows[0]['status'], 'ok')
    self.assertLen(self.fake.calls, 2)

  def test_folder_with_a_bad_image(self):
    _save_png(self.inp / 'a.png', _rgb(seed=1))
    (self.inp / 'bad.png').write_text('this is not an image\n')
    _save_png(self.inp / 'c.png', _rgb(seed=2))
    rows, status = self.run_app(self.inp)
    self.assertEqual(status, 1)
    self.assertEqual([(r['image'], r['status']) for r in rows],
                     [('a', 'ok'), ('bad', 'failed'), ('c', 'ok')])
    with open(self.out / 'summary.csv', newline='') as f:
      summary = {r['image']: r for r in csv.DictReader(f)}
    self.assertLen(summary, 3)
    self.assertEqual(summary['bad']['status'], 'failed')
    self.assertIn('bad.png', summary['bad']['error'])
    self.assertIn('not a PNG', summary['bad']['error'])
    self.assertEqual((summary['a']['status'], summary['a']['error']), ('ok', ''))
    self.assertEqual((summary['c']['status'], summary['c']['error']), ('ok', ''))
    self.assertFalse((self.out / 'bad').exists())
    self.assert_result_folder(self.out / 'c', (LR_SIZE, LR_SIZE))

  def test_folder_with_a_too_small_image(self):
    _save_png(self.inp / 'a.png', _rgb(seed=1))
    _save_png(self.inp / 'small.png', _rgb(size=8))
    rows, status = self.run_app(self.inp)
    self.assertEqual(status, 1)
    self.assertEqual([r['status'] for r in rows], ['ok', 'failed'])
    self.assertIn('16×16', rows[1]['error'])
    self.assertFalse((self.out / 'small').exists())
    self.assertLen(self.fake.calls, 1)


class InputKindsTest(AppTestCase):
  """Accepted image kinds are processed and hr.png keeps the input's kind where sensible."""

  def _run_one(self, path):
    rows, status = self.run_app(path)
    self.assertEqual((status, rows[0]['status']), (0, 'ok'))
    lr01 = self.fake.calls[-1]
    self.assertEqual(lr01['shape'], (LR_SIZE, LR_SIZE, 3))
    self.assert_result_folder(self.out / Path(path).stem, (LR_SIZE, LR_SIZE))
    return _png_kind(self.out / Path(path).stem / 'hr.png')

  def test_grey(self):
    grey = _rgb()[..., 0]
    self.assertEqual(self._run_one(_save_png(self.inp / 'grey.png', grey)), (8, 1))

  def test_rgba(self):
    rgba = np.dstack([_rgb(), np.full((LR_SIZE, LR_SIZE), 200, np.uint8)])
    self.assertEqual(self._run_one(_save_png(self.inp / 'rgba.png', rgba)), (8, 3))

  def test_palette(self):
    path = self.inp / 'pal.png'
    Image.fromarray(_rgb()).convert('P', palette=Image.Palette.ADAPTIVE, colors=64).save(path)
    self.assertEqual(Image.open(path).mode, 'P')
    self.assertEqual(self._run_one(path), (8, 3))

  def test_png16_grey(self):
    grey16 = (_rgb()[..., 1].astype(np.uint16) * 257 + 3)
    path = self.inp / 'grey16.png'
    Image.fromarray(grey16).save(path)
    self.assertEqual(self._run_one(path), (16, 1))

  def test_png16_rgb(self):
    path = self.inp / 'rgb16.png'
    io.write_image(path, _rgb().astype(np.uint16) * 257)
    self.assertEqual(self._run_one(path), (16, 3))

  def test_float32_tiff(self):
    path = self.inp / 'float.tif'
    tifffile.imwrite(path, _rgb().astype(np.float32) / 255.0, photometric='rgb')
    self.assertEqual(self._run_one(path), (16, 3))
    # The HR matches what the fake computed from the float input (no 8-bit detour).
    hr, info = io.read_image(self.out / 'float' / 'hr.png')
    self.assertEqual((info.dtype, info.grey), ('uint16', False))
    lr = tifffile.imread(path)
    expect = np.clip(np.asarray(degradation.bicubic_upscale(jnp.asarray(lr), 4)), 0, 1)
    np.testing.assert_allclose(hr, expect, atol=0.51 / 65535 + 1e-6)


class SizeChecksTest(AppTestCase):

  def test_too_small(self):
    path = _save_png(self.inp / 'small.png', _rgb(size=8))
    with self.assertRaises(io.InputError) as cm:
      self.run_app(path)
    msg = str(cm.exception)
    self.assertIn('small.png', msg)
    self.assertIn('8×8', msg)
    self.assertIn(f'at least {app.min_lr_side(_tiny())}×{app.min_lr_side(_tiny())}', msg)
    self.assertFalse((self.out / 'small').exists())
    self.assertEmpty(self.fake.calls)

  def test_min_size_is_accepted(self):
    side = app.min_lr_side(_tiny())
    path = _save_png(self.inp / 'edge.png', _rgb(size=side))
    rows, _ = self.run_app(path)
    self.assertEqual(rows[0]['status'], 'ok')

  def test_too_large_then_center_crop(self):
    path = _save_png(self.inp / 'big.png', _rgb(size=40))
    config = _tiny()
    config.io.max_hr_pixels = 100 * 100          # 40×40 at ×4 is 160×160
    with self.assertRaises(io.InputError) as cm:
      self.run_app(path, config)
    msg = str(cm.exception)
    self.assertIn('big.png', msg)
    self.assertIn('max_hr_pixels', msg)
    crop = int(re.search(r'--config\.io\.center_crop=(\d+)', msg).group(1))
    self.assertFalse((self.out / 'big').exists())
    config.io.center_crop = crop                 # the suggested crop must then run
    rows, status = self.run_app(path, config)
    self.assertEqual((status, rows[0]['status']), (0, 'ok'))
    hr = iio.imread(self.out / 'big' / 'hr.png')
    self.assertEqual(hr.shape[:2], (4 * crop, 4 * crop))
    self.assertLessEqual(hr.shape[0] * hr.shape[1], config.io.max_hr_pixels)
    self.assertEqual(self.fake.calls[-1]['shape'], (crop, crop, 3))

  def test_device_memory_guard_then_center_crop(self):
    path = _save_png(self.inp / 'wide.png', _rgb(size=40))
    config = _tiny()
    need = app.phase2_memory_bytes(config, 160, 160)
    with absltest.mock.patch.object(app, 'device_memory_bytes', return_value=need / 2):
      with self.assertRaises(io.InputError) as cm:
        self.run_app(path, config)
      msg = str(cm.exception)
      self.assertIn('wide.png', msg)
      self.assertIn('GiB', msg)
      crop = int(re.search(r'--config\.io\.center_crop=(\d+)', msg).group(1))
      self.assertLess(crop, 40)
      self.assertFalse((self.out / 'wide').exists())
      config.io.center_crop = crop                 # the suggested crop fits
      rows, status = self.run_app(path, config)
    self.assertEqual((status, rows[0]['status']), (0, 'ok'))
    self.assertLessEqual(app.phase2_memory_bytes(config, 4 * crop, 4 * crop), 0.9 * need / 2)

  def test_device_memory_guard_counts_the_size_bucket_padding(self):
    path = _save_png(self.inp / 'pad.png', _rgb(size=40))
    config = _tiny()
    have = 2 * app.phase2_memory_bytes(config, 160, 160)   # fits 40² LR, not its 64² padding
    with absltest.mock.patch.object(app, 'device_memory_bytes', return_value=have):
      config.io.size_bucket = 64
      with self.assertRaisesRegex(io.InputError, 'GiB'):
        self.run_app(path, config)
      config.io.size_bucket = 0
      rows, status = self.run_app(path, config)
    self.assertEqual((status, rows[0]['status']), (0, 'ok'))

  def test_memory_estimate_scales_with_pixels_and_dtype(self):
    config = _tiny()
    small, big = app.phase2_memory_bytes(config, 64, 64), app.phase2_memory_bytes(config, 128, 128)
    self.assertAlmostEqual(big / small, 4.0)
    config.compute_dtype = 'bfloat16'
    self.assertAlmostEqual(app.phase2_memory_bytes(config, 64, 64) / small, 0.5)

  def test_center_crop_larger_than_image_keeps_it(self):
    path = _save_png(self.inp / 'photo.png', _rgb())
    config = _tiny()
    config.io.center_crop = 1000
    self.run_app(path, config)
    hr = iio.imread(self.out / 'photo' / 'hr.png')
    self.assertEqual(hr.shape[:2], (4 * LR_SIZE, 4 * LR_SIZE))


class ConfigAndPathErrorsTest(AppTestCase):

  @parameterized.named_parameters(
      ('scale', 'scale', 1, 'scale'),
      ('kernel_size', 'kernel.size', 3, 'kernel.size'),
      ('mode', 'phase2.mode', 'bogus', 'phase2.mode'),
      ('t_start', 'phase2.t_start', 0, 't_start'),
      ('steps', 'pd.steps', 0, 'pd.steps'),
      ('final_bp_from', 'phase2.final_bp_from', 'x1', 'final_bp_from'),
      ('final_bp_reg', 'phase2.final_bp_reg', -1.0, 'final_bp_reg'),
      ('kernel_blend', 'phase2.kernel_blend', 1.5, 'kernel_blend must be in [0, 1]'),
      ('final_tv', 'phase2.final_tv', -1e-3, 'final_tv must be ≥ 0'),
      ('final_tv_mix', 'phase2.final_tv_mix', 1.5, 'final_tv_mix must be in [0, 1]'),
      ('gaussian_test', 'phase2.gaussian_test', 2.0, 'gaussian_test must be ≤ 0'),
      ('gaussian_tv', 'phase2.gaussian_tv', 0.0, 'gaussian_tv must be > 0'),
      ('kernel_crop', 'io.kernel_crop', -1, 'kernel_crop'),
      ('kernel_crop_too_small', 'io.kernel_crop', 8, 'kernel_crop must be 0 or ≥ 16'))
  def test_invalid_config(self, field, value, words):
    config = _tiny()
    sec, _, name = field.rpartition('.')
    (config[sec] if sec else config)[name] = value
    path = _save_png(self.inp / 'photo.png', _rgb())
    with self.assertRaises(app.ConfigError) as cm:
      self.run_app(path, config)
    self.assertIn(words, str(cm.exception))
    self.assertNotIn('\n', str(cm.exception))
    self.assertFalse(self.out.exists())

  def test_kernel_crop_needs_the_bicubic_projection(self):
    config = _tiny()
    config.io.kernel_crop = 32
    config.phase2.final_bp_from = 'x0'
    path = _save_png(self.inp / 'photo.png', _rgb())
    with self.assertRaisesRegex(app.ConfigError, "kernel_crop > 0 needs .*'bicubic'"):
      self.run_app(path, config)
    self.assertFalse(self.out.exists())

  def test_tv_needs_the_back_projection(self):
    config = _tiny()
    config.phase2.final_tv = 1e-3
    config.phase2.final_bp_reg = 0.0
    path = _save_png(self.inp / 'photo.png', _rgb())
    with self.assertRaisesRegex(app.ConfigError, 'final_tv > 0 needs phase2.final_bp_reg > 0'):
      self.run_app(path, config)
    self.assertFalse(self.out.exists())

  def test_output_inside_input_folder(self):
    _save_png(self.inp / 'photo.png', _rgb())
    with self.assertRaises(io.InputError):
      app.run(_tiny(), input_path=str(self.inp), output_dir=str(self.inp / 'results'))
    self.assertFalse((self.inp / 'results').exists())

  def test_output_under_a_file(self):
    path = _save_png(self.inp / 'photo.png', _rgb())
    blocker = self.tmp / 'file'
    blocker.write_text('x')
    with self.assertRaises(io.InputError) as cm:
      app.run(_tiny(), input_path=path, output_dir=str(blocker / 'out'))
    self.assertIn(str(blocker / 'out'), str(cm.exception))
    self.assertEmpty(self.fake.calls)


class SummaryTest(absltest.TestCase):

  def test_write_summary(self):
    with tempfile.TemporaryDirectory() as tmp:
      path = Path(tmp) / 'summary.csv'
      app.write_summary(path, [
          {'image': 'a', 'status': 'ok', 'seconds': 1.23456789, 'hr_shape': [4, 4, 3]},
          {'image': 'b', 'status': 'failed', 'error': 'b.png: bad, "quoted"\nsecond'}])
      with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
      self.assertEqual(list(rows[0]), list(app.SUMMARY_FIELDS))
      self.assertEqual(rows[0]['seconds'], '1.23457')
      self.assertEqual(rows[1]['error'], 'b.png: bad, "quoted"\nsecond')
      self.assertEqual([p for p in os.listdir(tmp)], ['summary.csv'])   # no temp file left


if __name__ == '__main__':
  absltest.main()
