"""Tests of main.py as a program: real runs, exit codes and one-line errors, kill -9 resume.

Every real run uses the 'tiny' config (shrunk further where it helps) and one
persistent XLA compilation cache (the test session's, tests/conftest.py, else one for
this module), so that only the first run of each shape compiles. In-process tests of
the same code with a fake pipeline are in tests/test_app.py.
"""

import io as _io
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest, parameterized
import imageio.v3 as iio
import numpy as np
from PIL import Image
import scipy.io

REPO = Path(__file__).resolve().parents[1]
MAIN = str(REPO / 'main.py')
TINY = '--config=configs/x4.py:tiny'
OUTPUTS = ('hr.png', 'kernel.npy', 'kernel.mat', 'kernel.png', 'config.json', 'metrics.json',
           'report.png', 'hr_diffusion.png')

# Resume tests: Phase 1 saves every 10 of 80 steps, Phase 2 after each of its 10 timesteps.
RESUME_ARGS = ('--config.pd.steps=80', '--config.pd.chunk=10', '--config.pd.save_every=10',
               '--config.phase2.t_start=100', '--config.phase2.stride=10',
               '--config.phase2.chunk=1')

_CACHE = None


def setUpModule():
  global _CACHE
  _CACHE = tempfile.TemporaryDirectory(prefix='kfjax-xla-')


def tearDownModule():
  _CACHE.cleanup()


def _env():
  return dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu',
              KFJAX_COMPILATION_CACHE=os.environ.get('KFJAX_COMPILATION_CACHE', _CACHE.name))


def _cmd(*args):
  return [sys.executable, MAIN, TINY, *args]


def _main(*args, timeout=300):
  """Runs main.py to completion; returns the CompletedProcess."""
  return subprocess.run(_cmd(*args), capture_output=True, text=True, env=_env(), cwd=REPO,
                        timeout=timeout, check=False)


def _rgb(size=32, seed=0):
  """A (size, size, 3) uint8 image with some structure (a crop of skimage's astronaut)."""
  import skimage.data  # pylint: disable=import-outside-toplevel
  img = skimage.data.astronaut()[100:100 + 4 * size, 180:180 + 4 * size]
  small = Image.fromarray(img).resize((size, size), Image.Resampling.BOX)
  arr = np.asarray(small).copy()
  arr[0, 0] = seed % 256
  return arr


def _png_bytes(array):
  buf = _io.BytesIO()
  Image.fromarray(array).save(buf, format='PNG')
  return buf.getvalue()


def _jpeg_bytes(array):
  buf = _io.BytesIO()
  Image.fromarray(array).save(buf, format='JPEG', quality=90)
  return buf.getvalue()


def _step_folders(folder):
  """Names of complete Orbax step folders (integers; Orbax renames a tmp folder when done)."""
  try:
    return sorted(int(n) for n in os.listdir(folder) if n.isdigit())
  except FileNotFoundError:
    return []


def _error_lines(stderr):
  return [line for line in stderr.splitlines() if line.startswith('kfjax: error:')]


# ----------------------------------------------------------------------------
# Bad inputs and configs: one line on stderr, exit 2, nothing written.
# ----------------------------------------------------------------------------


class ErrorsTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.tmp = Path(tmp.name)
    self.inp = self.tmp / 'in'
    self.inp.mkdir()
    self.out = self.tmp / 'out'

  def assert_user_error(self, proc, *words):
    """Exit 2, exactly one 'kfjax: error:' line holding every word, no traceback."""
    self.assertEqual(proc.returncode, 2, proc.stderr[-3000:])
    self.assertNotIn('Traceback', proc.stderr)
    lines = _error_lines(proc.stderr)
    self.assertLen(lines, 1, proc.stderr[-3000:])
    for w in words:
      self.assertIn(w, lines[0])
    return lines[0]

  @parameterized.named_parameters(
      ('text_named_png', 'x.png', lambda: b'hello, I am not an image\n', 'not a PNG, JPEG'),
      ('truncated_png', 'cut.png', lambda: _png_bytes(_rgb())[:700], 'truncated'),
      ('truncated_jpeg', 'cut.jpg', lambda: _jpeg_bytes(_rgb())[:600], 'truncated'),
      ('empty_file', 'empty.png', lambda: b'', 'empty'))
  def test_bad_file(self, name, make, problem):
    path = self.inp / name
    path.write_bytes(make())
    proc = _main(f'--input={path}', f'--output_dir={self.out}')
    self.assert_user_error(proc, str(path), problem)
    self.assertFalse((self.out / path.stem).exists())

  def test_missing_path(self):
    path = self.tmp / 'nope.png'
    proc = _main(f'--input={path}', f'--output_dir={self.out}')
    self.assert_user_error(proc, str(path), 'no such file')
    self.assertFalse(self.out.exists())

  def test_empty_folder(self):
    proc = _main(f'--input={self.inp}', f'--output_dir={self.out}')
    self.assert_user_error(proc, str(self.inp), 'no image files')
    self.assertFalse((self.out / 'summary.csv').exists())

  def test_too_small(self):
    path = self.inp / 'small.png'
    path.write_bytes(_png_bytes(_rgb(size=8)))
    proc = _main(f'--input={path}', f'--output_dir={self.out}')
    self.assert_user_error(proc, str(path), '8×8', 'at least 16×16')
    self.assertFalse((self.out / 'small').exists())

  def test_too_large(self):
    path = self.inp / 'big.png'
    path.write_bytes(_png_bytes(_rgb()))
    proc = _main(f'--input={path}', f'--output_dir={self.out}', '--config.io.max_hr_pixels=10000')
    self.assert_user_error(proc, str(path), 'max_hr_pixels', '--config.io.center_crop=25')
    self.assertFalse((self.out / 'big').exists())

  @parameterized.named_parameters(
      ('scale', '--config.scale=1', 'scale must be'),
      ('kernel_size', '--config.kernel.size=3', 'kernel.size (3) must be ≥ scale (4)'),
      ('unknown_field', '--config.foo=1', 'foo'),
      ('unknown_nested_field', '--config.pd.nope=1', 'nope'),
      ('mode', '--config.phase2.mode=bogus', 'bogus'),
      ('wrong_type', '--config.pd.steps=many', 'many'))
  def test_invalid_config(self, flag, words):
    path = self.inp / 'photo.png'
    path.write_bytes(_png_bytes(_rgb()))
    proc = _main(f'--input={path}', f'--output_dir={self.out}', flag)
    self.assert_user_error(proc, words)
    self.assertFalse(self.out.exists())

  def test_output_under_a_file(self):
    path = self.inp / 'photo.png'
    path.write_bytes(_png_bytes(_rgb()))
    blocker = self.tmp / 'a_file'
    blocker.write_text('x')
    proc = _main(f'--input={path}', f'--output_dir={blocker / "out"}')
    self.assert_user_error(proc, str(blocker / 'out'))

  def test_output_inside_input_folder(self):
    (self.inp / 'photo.png').write_bytes(_png_bytes(_rgb()))
    proc = _main(f'--input={self.inp}', f'--output_dir={self.inp / "results"}')
    self.assert_user_error(proc, 'inside the input folder')
    self.assertFalse((self.inp / 'results').exists())
    self.assertEqual(os.listdir(self.inp), ['photo.png'])


# ----------------------------------------------------------------------------
# The embedded demo, end to end, then re-run with --overwrite and without.
# ----------------------------------------------------------------------------


class DemoTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    cls.out = Path(cls._tmp.name) / 'results'
    cls.args = (f'--output_dir={cls.out}', '--config.phase2.t_start=30')
    cls.first = _main(*cls.args)
    cls.folder = cls.out / 'demo_astronaut'
    cls.first_files = cls._snapshot()
    cls.first_metrics = json.loads(cls.first_files.get('metrics.json', (0, b'{}'))[1])
    cls.again = _main(*cls.args)                    # finished: skipped
    cls.skipped_files = cls._snapshot()
    cls.overwrite = _main(*cls.args, '--overwrite')  # recomputed from the checkpoints

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  @classmethod
  def _snapshot(cls):
    """{output name: (mtime_ns, bytes)} of the files in the demo's result folder."""
    return {n: ((cls.folder / n).stat().st_mtime_ns, (cls.folder / n).read_bytes())
            for n in OUTPUTS if (cls.folder / n).exists()}

  def _first(self, name):
    return self.first_files[name][1]

  def test_outputs(self):
    self.assertEqual(self.first.returncode, 0, self.first.stderr[-3000:])
    for name in OUTPUTS:
      self.assertIn(name, self.first_files)
    self.assertNotEmpty(_step_folders(self.folder / 'checkpoints' / 'phase1'))
    self.assertNotEmpty(_step_folders(self.folder / 'checkpoints' / 'phase2'))
    hr = iio.imread(self.folder / 'hr.png')
    lr_side = 128 // 4                              # tiny: demo.hr_size = 128 at ×4
    self.assertEqual(hr.shape, (4 * lr_side, 4 * lr_side, 3))
    self.assertEqual(self.first_metrics['hr_shape'], [128, 128, 3])
    kernel = np.load(_io.BytesIO(self._first('kernel.npy')))
    self.assertEqual(kernel.shape, (13, 13))
    self.assertAlmostEqual(float(kernel.sum()), 1.0, places=5)
    self.assertTrue(np.all(kernel >= 0))
    mat = scipy.io.loadmat(_io.BytesIO(self._first('kernel.mat')))
    np.testing.assert_array_equal(mat['Kernel'], kernel.astype(np.float64))
    config = json.loads(self._first('config.json'))
    self.assertEqual(config['phase2']['t_start'], 30)
    self.assertEqual(config['variant'], 'tiny')
    self.assertEqual(self.first_metrics['phase2']['timesteps'], 3)
    for key in ('psnr_y', 'psnr_y_bicubic', 'psnr_y_bp_gt', 'kernel_nerr'):
      self.assertTrue(np.isfinite(self.first_metrics[key]), key)
    self.assertIn(iio.imread(self.folder / 'kernel.png').ndim, (2, 3))
    self.assertEqual(iio.imread(self.folder / 'report.png').dtype, np.uint8)

  def test_demo_summary_on_stdout(self):
    lines = self.first.stdout.strip().splitlines()
    self.assertLen(lines, 3, self.first.stdout)
    self.assertStartsWith(lines[0], 'PSNR (Y, 5% border): kfjax ')
    self.assertIn(f'{self.first_metrics["psnr_y"]:.2f} dB', lines[0])
    self.assertIn('bicubic', lines[0])
    self.assertStartsWith(lines[1], 'Kernel error (normalised, after centring): ')
    self.assertEqual(lines[2], f'Outputs: {self.folder}/')

  def test_second_run_skips(self):
    self.assertEqual(self.again.returncode, 0, self.again.stderr[-3000:])
    self.assertIn('skipping (use --overwrite to recompute)', self.again.stderr)
    self.assertNotIn('Phase 1', self.again.stderr)
    self.assertLen(self.again.stdout.strip().splitlines(), 3)
    self.assertEqual(set(self.first_files), set(OUTPUTS))
    self.assertEqual(self.skipped_files, self.first_files)     # same mtimes, same bytes
    # The --overwrite run afterwards did rewrite every output.
    for name in OUTPUTS:
      self.assertGreater((self.folder / name).stat().st_mtime_ns, self.first_files[name][0],
                         name)

  def test_overwrite_reuses_phase1(self):
    proc = self.overwrite
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn('Phase 1: resumed from checkpoint step 20', proc.stderr)
    self.assertIn('Phase 2: resumed from checkpoint after 3/3 timesteps', proc.stderr)
    metrics = json.loads((self.folder / 'metrics.json').read_text())
    self.assertEqual(metrics['phase1_seconds'], 0.0)
    self.assertTrue(metrics['phase1']['resumed'])
    # The same result as the first run, from its checkpoints.
    self.assertEqual((self.folder / 'hr.png').read_bytes(), self._first('hr.png'))
    self.assertEqual((self.folder / 'kernel.npy').read_bytes(), self._first('kernel.npy'))
    self.assertAlmostEqual(metrics['psnr_y'], self.first_metrics['psnr_y'], places=6)


# ----------------------------------------------------------------------------
# kill -9 during Phase 1 or Phase 2, re-run, same result as an uninterrupted run.
# ----------------------------------------------------------------------------


class ResumeTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    cls.root = Path(cls._tmp.name)
    (cls.root / 'in').mkdir()
    cls.image = cls.root / 'in' / 'photo.png'
    cls.image.write_bytes(_png_bytes(_rgb()))
    cls.ref = cls._run_to_end('ref')

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  @classmethod
  def _args(cls, name):
    return (f'--input={cls.image}', f'--output_dir={cls.root / name}', *RESUME_ARGS)

  @classmethod
  def _run_to_end(cls, name):
    proc = _main(*cls._args(name))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc

  def _run_and_kill(self, name, phase, timeout=240):
    """Starts main.py, SIGKILLs it once a checkpoint step of ``phase`` is on disk."""
    folder = self.root / name / 'photo'
    ckpts = folder / 'checkpoints' / phase
    log = open(self.root / f'{name}.log', 'w+')
    self.addCleanup(log.close)
    proc = subprocess.Popen(_cmd(*self._args(name)), stdout=log, stderr=subprocess.STDOUT,
                            env=_env(), cwd=REPO)
    deadline = time.time() + timeout
    try:
      while not _step_folders(ckpts):
        if proc.poll() is not None:
          log.seek(0)
          self.fail(f'main.py ended (status {proc.returncode}) before a {phase} checkpoint:\n'
                    f'{log.read()[-3000:]}')
        if time.time() > deadline:
          self.fail(f'no {phase} checkpoint after {timeout} s')
        time.sleep(0.02)
      os.kill(proc.pid, signal.SIGKILL)
    finally:
      if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
      proc.wait()
    self.assertEqual(proc.returncode, -signal.SIGKILL)
    # An unfinished image: no metrics.json, and no (partial) result files.
    for n in ('metrics.json', 'hr.png', 'kernel.npy', 'kernel.mat', 'report.png'):
      self.assertFalse((folder / n).exists(), n)
    self.assertEqual([n for n in os.listdir(folder) if n.startswith('.')], [])
    return folder

  def assert_same_as_reference(self, name):
    ref, got = self.root / 'ref' / 'photo', self.root / name / 'photo'
    self.assertEqual((got / 'hr.png').read_bytes(), (ref / 'hr.png').read_bytes())
    k_ref, k_got = np.load(ref / 'kernel.npy'), np.load(got / 'kernel.npy')
    self.assertTrue(np.array_equal(k_ref, k_got), f'max diff {np.abs(k_ref - k_got).max()}')
    np.testing.assert_array_equal(scipy.io.loadmat(got / 'kernel.mat')['Kernel'],
                                  scipy.io.loadmat(ref / 'kernel.mat')['Kernel'])

  def test_reference_run(self):
    self.assertEqual(self.ref.stdout.strip(), f'kfjax: 1 processed, 0 skipped, 0 failed; '
                                              f'results in {self.root / "ref"}/')
    hr = iio.imread(self.root / 'ref' / 'photo' / 'hr.png')
    self.assertEqual(hr.shape, (128, 128, 3))                  # 32×32 LR at ×4
    metrics = json.loads((self.root / 'ref' / 'photo' / 'metrics.json').read_text())
    self.assertEqual((metrics['phase1']['steps'], metrics['phase2']['timesteps']), (80, 10))
    self.assertFalse(metrics['phase1']['resumed'])
    self.assertNotIn('resumed from checkpoint', self.ref.stderr)

  def test_kill_in_phase1_then_resume(self):
    folder = self._run_and_kill('p1', 'phase1')
    killed_at = _step_folders(folder / 'checkpoints' / 'phase1')
    self.assertLess(max(killed_at), 80, 'Phase 1 finished before the kill')
    self.assertEqual(_step_folders(folder / 'checkpoints' / 'phase2'), [])
    proc = self._run_to_end('p1')
    self.assertIn('Phase 1: resumed from checkpoint step', proc.stderr)
    self.assertNotIn('Phase 2: resumed', proc.stderr)
    self.assert_same_as_reference('p1')
    metrics = json.loads((folder / 'metrics.json').read_text())
    self.assertEqual(metrics['phase1']['steps'], 80)

  def test_kill_in_phase2_then_resume(self):
    folder = self._run_and_kill('p2', 'phase2')
    killed_at = _step_folders(folder / 'checkpoints' / 'phase2')
    self.assertLess(max(killed_at), 10, 'Phase 2 finished before the kill')
    proc = self._run_to_end('p2')
    self.assertIn('Phase 1: resumed from checkpoint step 80', proc.stderr)
    self.assertIn('Phase 2: resumed from checkpoint after', proc.stderr)
    self.assert_same_as_reference('p2')
    metrics = json.loads((folder / 'metrics.json').read_text())
    self.assertTrue(metrics['phase1']['resumed'])
    self.assertEqual(metrics['phase1_seconds'], 0.0)

  def test_same_seed_same_result(self):
    # A second, independent run (killed and resumed, in another process) with the
    # same seed and config gives the same bytes; see the two tests above.
    ref = self.root / 'ref' / 'photo'
    for name in ('p1', 'p2'):
      if not (self.root / name / 'photo' / 'metrics.json').exists():
        self.skipTest('needs the resume tests to have run')
      self.assert_same_as_reference(name)
    self.assertTrue((ref / 'hr.png').exists())


if __name__ == '__main__':
  absltest.main()
