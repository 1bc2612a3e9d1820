"""tools/bench_speed.py: the plateau runs, the conv forms, the Phase-2 parts (small CPU runs)."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, 'tools', 'bench_speed.py')


def run_tool(*args) -> tuple[subprocess.CompletedProcess, str]:
  """Runs bench_speed on the CPU with only the given parts; (process, output folder)."""
  out = tempfile.mkdtemp()
  r = subprocess.run(
      [sys.executable, TOOL, f'--out={out}', '--phase1=false', '--phase2_sizes=none',
       '--end_to_end=false', *args],
      capture_output=True, text=True, timeout=600, check=False,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  return r, out


class PlateauTest(absltest.TestCase):

  def test_plateau_runs(self):
    r, out = run_tool('--plateau_batches=1,4', '--plateau_variant=cpu', '--plateau_steps=30',
                      '--plateau_every=10', '--plateau_tol=0.02')
    self.assertEqual(r.returncode, 0, r.stderr[-3000:])
    with open(os.path.join(out, 'speed.json')) as f:
      res = json.load(f)
    rows = res['plateau']
    self.assertEqual([row['batch'] for row in rows], [1, 4])
    best = min(row['best_loss'] for row in rows)
    for row in rows:
      self.assertLen(row['curve'], 3)                    # one fixed loss per 10-step call
      self.assertEqual(row['best_loss'], min(row['curve']))
      self.assertAlmostEqual(row['plateau_loss'], 1.02 * best, places=6)
      self.assertGreater(row['ms_per_step'], 0)
      hit = [i for i, v in enumerate(row['curve']) if v <= row['plateau_loss']]
      if hit:
        self.assertEqual(row['steps_to_plateau'], 10 * (hit[0] + 1))
        self.assertAlmostEqual(row['seconds_to_plateau'],
                               row['steps_to_plateau'] * row['ms_per_step'] / 1e3, places=6)
      else:
        self.assertIsNone(row['steps_to_plateau'])
    # The run that holds the best loss reaches the plateau; the PD learns within 30 steps.
    self.assertTrue(any(row['steps_to_plateau'] for row in rows if row['best_loss'] == best))
    self.assertTrue(all(row['curve'][-1] < row['curve'][0] for row in rows))
    with open(os.path.join(out, 'speed.md')) as f:
      self.assertIn('Phase 1 to the loss plateau (LR: embedded demo)', f.read())


class ConvFormsTest(absltest.TestCase):

  def test_conv_forms_agree(self):
    r, out = run_tool('--conv_forms=1,3', '--conv_forms_size=12', '--conv_forms_width=8')
    self.assertEqual(r.returncode, 0, r.stderr[-3000:])
    with open(os.path.join(out, 'speed.json')) as f:
      rows = json.load(f)['conv_forms']
    self.assertEqual([row['cases'] for row in rows], [1, 3])
    for row in rows:
      # The im2col form computes the same gradients as XLA's convolution.
      self.assertLess(row['im2col_max_abs_diff'], 1e-5)
      self.assertAlmostEqual(row['gflop'], 3 * 2 * row['cases'] * 12 * 12 * 9 * 8 * 8 * 4 / 1e9)
      for form in ('grouped', 'im2col'):
        self.assertAlmostEqual(row[f'{form}_speedup'], row['sequential_ms'] / row[f'{form}_ms'])
    with open(os.path.join(out, 'speed.md')) as f:
      self.assertIn('## Batched conv forms', f.read())


class Phase2PartsTest(absltest.TestCase):

  def test_parts_and_gemm_share(self):
    r, out = run_tool('--phase2_sizes=32x32', '--phase2_parts', '--profile')
    self.assertEqual(r.returncode, 0, r.stderr[-3000:])
    with open(os.path.join(out, 'speed.json')) as f:
      (row,) = json.load(f)['phase2']
    self.assertGreater(row['wide_gemm_share'], 0.0)
    self.assertLessEqual(row['wide_gemm_share'], 1.0)
    # The step holds the PD part once and the U-Net at least once (twice, the first
    # without its input gradient), plus the kernel INR and the downscale.
    self.assertLess(row['pd_gflop'] + row['unet_gflop'], row['gflop_per_step'])
    self.assertGreater(row['pd_gflop'] + 2 * row['unet_gflop'], 0.5 * row['gflop_per_step'])
    for part in ('pd', 'unet'):
      self.assertAlmostEqual(row[f'{part}_tflops'] * row[f'{part}_ms'],
                             row[f'{part}_gflop'], places=6)
    # --profile: the traced calls' kernel summary, per inner step, and its table in speed.md.
    self.assertAlmostEqual(row['kernel_ms_per_step'], row['profile']['kernel_ms'] / row['n_iter'])
    self.assertNotEmpty(row['profile']['kernels'])
    with open(os.path.join(out, 'speed.md')) as f:
      self.assertIn('### Kernels of the Phase-2 step, 32x32', f.read())


if __name__ == '__main__':
  absltest.main()
