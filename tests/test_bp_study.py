"""tools/bp_study.py --study=shrink, blend and tv on a one-case benchmark, with the GT kernel
as kernelfusion's 'estimate' (and a stretched GT as sparse_bp's)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
import imageio.v3 as iio
import numpy as np
import skimage.data

from configs import x4
from kfjax import benchmark
from kfjax import evaluation
from kfjax import kernels
from kfjax import metrics
from kfjax import pipeline
from kfjax import spectral_kernel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, 'tools', 'bp_study.py')


class ShrinkStudyTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    hr_dir = os.path.join(cls.root, 'hr')
    os.makedirs(hr_dir)
    iio.imwrite(os.path.join(hr_dir, 'img.png'), skimage.data.astronaut()[160:224, 200:264])
    k_path = os.path.join(cls.root, 'k.npy')
    np.save(k_path, kernels.anisotropic_gaussian(13, sigmas=(3.0, 1.2)))
    cls.bench = os.path.join(cls.root, 'bench')
    benchmark.build(benchmark.generic_cases(hr_dir, [k_path], scale=4), cls.bench, scale=4,
                    meta={'name': 'unit', 'seed': 0})
    case = evaluation.load_benchmark(cls.bench)['cases'][0]
    cls.case_id = case['id']
    _, _, gt_kernel = evaluation.read_case_inputs(case, 4)
    cls.eval_dir = os.path.join(cls.root, 'eval')
    d = evaluation.method_dir(cls.eval_dir, case['id'], 'kernelfusion')
    os.makedirs(d)
    np.save(os.path.join(d, 'kernel.npy'), gt_kernel)
    d = evaluation.method_dir(cls.eval_dir, case['id'], 'sparse_bp')
    os.makedirs(d)
    np.save(os.path.join(d, 'kernel.npy'), kernels.scale_kernel(gt_kernel, 2.0))

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root)
    super().tearDownClass()

  def _run(self, study, *args):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
    return subprocess.run([sys.executable, TOOL, f'--bench={self.bench}', f'--study={study}',
                           f'--eval_dir={os.path.join(self.root, "none")},{self.eval_dir}',
                           *args], capture_output=True, text=True, env=env, timeout=300)

  def _row(self, study, *args):
    """Runs a study that must succeed; its values for the one case."""
    out = os.path.join(self.root, f'{study}.json')
    proc = self._run(study, *args, f'--out={out}')
    self.assertEqual(proc.returncode, 0, proc.stderr)
    with open(out) as f:
      return json.load(f)['cases'][self.case_id]

  def test_gt_kernel_as_estimate(self):
    row = self._row('shrink', '--scales=1,0.5:1', '--regs=0.3')
    # The "estimate" is the GT: same spread, zero error, the GT's back-projection.
    self.assertAlmostEqual(row['sigma_ratio_minor'], 1.0, places=6)
    self.assertAlmostEqual(row['sigma_ratio_major'], 1.0, places=6)
    self.assertAlmostEqual(row['x1_nerr'], 0.0, places=6)
    self.assertAlmostEqual(row['x1_reg_0.3'], row['bp_gt_reg_0.3'], places=4)
    # Halving it across its path is a wrong kernel.
    self.assertGreater(row['x0.5:1_nerr'], 0.1)
    self.assertLess(row['x0.5:1_reg_0.3'], row['x1_reg_0.3'])

  def test_bad_scales_is_one_line(self):
    proc = self._run('shrink', '--scales=1,0:1', f'--out={os.path.join(self.root, "bad.json")}')
    self.assertNotEqual(proc.returncode, 0)
    self.assertEqual(proc.stderr.strip().splitlines()[-1],
                     "bp_study: error: --scales: expected f or minor:major > 0, got ['1', '0:1']")

  def test_blend_of_gt_and_a_stretched_gt(self):
    row = self._row('blend', '--weights=0,0.5,1', '--regs=0.3')
    # w = 0 is kernelfusion's kernel (the GT); the error grows with the stretched kernel's weight.
    self.assertAlmostEqual(row['w0_nerr'], 0.0, places=6)
    self.assertAlmostEqual(row['w0_reg_0.3'], row['bp_gt_reg_0.3'], places=4)
    self.assertLess(0.1, row['w0.5_nerr'])
    self.assertLess(row['w0.5_nerr'], row['w1_nerr'])
    self.assertLess(row['w1_reg_0.3'], row['w0_reg_0.3'])
    proc = self._run('blend', '--weights=0,2', f'--out={os.path.join(self.root, "bad.json")}')
    self.assertNotEqual(proc.returncode, 0)
    self.assertEqual(proc.stderr.strip().splitlines()[-1],
                     "bp_study: error: --weights: expected numbers in [0, 1], got ['0', '2']")

  def test_perturb_with_a_gaussian_gt(self):
    # The GT is a Gaussian, so its moment-matched Gaussian is (nearly) itself (the error
    # measure is shift-invariant, so a shift is compared through its back-projection only).
    row = self._row('perturb', '--regs=0.3', '--tv_weights=1e-3', '--tv_mixes=0.5')
    self.assertAlmostEqual(row['gt_nerr'], 0.0, places=6)
    self.assertLess(row['moment_gaussian_nerr'], 0.1)
    self.assertGreater(row['blur_1.5_nerr'], 2 * row['moment_gaussian_nerr'])
    self.assertAlmostEqual(row['gt_bp_reg_0.3'], row['bp_gt_reg_0.3'], places=4)
    gt, gauss = row['gt_tv_0.001_mix_0.5_reg_0.3'], row['moment_gaussian_tv_0.001_mix_0.5_reg_0.3']
    self.assertLess(abs(gt - gauss), 0.3)
    self.assertLess(row['shift_2px_reg_0.3'], row['gt_reg_0.3'])

  def test_lrscale_with_the_gt_kernel(self):
    # The saved kernelfusion kernel is the GT, so its LR blocks are the GT's; the lifted blocks
    # and the LR-scale fit to the true HR's block means are close to the GT, not equal to it.
    row = self._row('lrscale', '--regs=0.3', '--tv_weights=1e-3', '--lr_support=7',
                    '--lift_powers=0,2')
    self.assertAlmostEqual(row['kernelfusion_nerr'], 0.0, places=6)
    # The GT's blocks lifted along their interpolant are nearer the GT than the even spread.
    self.assertLess(row['gt_lr_blocks_lift2_nerr'], row['gt_lr_blocks_nerr'] - 0.05)
    self.assertEqual(row['kernelfusion_lr_blocks_nerr'], row['gt_lr_blocks_nerr'])
    for name in ('gt_lr_blocks', 'oracle_lr'):
      self.assertBetween(row[f'{name}_nerr'], 0.01, 1.0)     # blocky, so far in this measure
      self.assertBetween(row[f'{name}_bp_reg_0.3'], row['bicubic'] + 0.3, row['gt_bp_reg_0.3'])
    self.assertIn('default_tv_0.001_mix_0.5_reg_0.3', row)         # the blind LR-scale L0

  def test_edges_variants(self):
    # The edge kernel per variant: a kernel summing to 1 and its back-projection; a share cap
    # of one gradient per bin changes the kernel.
    row = self._row('edges', '--regs=0.3', '--tv_weights=',
                    '--variants={"default": {}, "one": {"share": 1e-9}}')
    for name in ('default', 'one'):
      self.assertGreater(row[f'{name}_nerr'], 0.0)
      self.assertIn(f'{name}_bp_reg_0.3', row)
    self.assertNotAlmostEqual(row['default_nerr'], row['one_nerr'], places=6)
    self.assertFalse([k for k in row if k.startswith('gt_tv')])   # no TV weights: no TV
    # With a TV weight: each variant's TV SR and its mix, and the GT kernel's, which beats
    # bicubic (the mix is the same arithmetic as --study=tv, tested above).
    row = self._row('edges', '--regs=0.3', '--tv_weights=1e-3', '--tv_mixes=0.5')
    for name in ('default_tv_0.001', 'default_tv_0.001_mix_0.5_reg_0.3', 'gt_tv_0.001',
                 'gt_tv_0.001_mix_0.5_reg_0.3', 'gt_bp_reg_0.3'):
      self.assertIn(name, row)
    self.assertGreater(row['gt_tv_0.001'], row['bicubic'] + 0.3)

  def test_edges_ensembles(self):
    # An ensemble of a variant with itself is that variant, at every final step and through
    # its mean kernel; one of two different variants has each step and its mean kernel's.
    row = self._row('edges', '--regs=0.3', '--tv_weights=1e-3', '--tv_mixes=0.5',
                    '--edges_gt=false',
                    '--variants={"a": {}, "b": {}, "one": {"share": 1e-9}}',
                    '--ensembles={"same": ["a", "b"], "two": ["a", "one"]}')
    steps = ('bp_reg_0.3', 'tv_0.001', 'tv_0.001_mix_0.5_reg_0.3')
    for step in steps:
      self.assertAlmostEqual(row[f'same_{step}'], row[f'a_{step}'], places=4)
      self.assertAlmostEqual(row[f'same_kernel_mean_{step}'], row[f'a_{step}'], places=4)
      self.assertIn(f'two_{step}', row)
      self.assertIn(f'two_kernel_mean_{step}', row)
    self.assertAlmostEqual(row['same_kernel_mean_nerr'], row['a_nerr'], places=6)
    self.assertNotAlmostEqual(row['two_kernel_mean_nerr'], row['a_nerr'], places=4)
    self.assertFalse([k for k in row if k.endswith('_kernel')])
    # --noensemble_kernel_mean: the mean of the outputs only, no final step with the mean kernel.
    row = self._row('edges', '--regs=0.3', '--tv_weights=', '--edges_gt=false',
                    '--noensemble_kernel_mean', '--variants={"a": {}, "one": {"share": 1e-9}}',
                    '--ensembles={"two": ["a", "one"]}')
    self.assertIn('two_bp_reg_0.3', row)
    self.assertFalse([k for k in row if k.startswith('two_kernel_mean_') and
                      not k.endswith('_nerr')])
    proc = self._run('edges', '--variants={"a": {}}', '--ensembles={"e": ["a", "c"]}',
                     f'--out={os.path.join(self.root, "bad.json")}')
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn('bp_study: error: --ensembles: expected {name: [two or more of a]}',
                  proc.stderr.strip().splitlines()[-1])

  def test_shard_and_merge(self):
    # One case: shard 0 of 2 has it, shard 1 none; merging joins files, never a case twice.
    args = ('--regs=0.3', '--sigmas=1')
    row = self._row('gaussian', *args, '--shard=0/2')
    bad = os.path.join(self.root, 'bad.json')
    proc = self._run('gaussian', *args, '--shard=1/2', f'--out={bad}')
    self.assertNotEqual(proc.returncode, 0)
    self.assertEqual(proc.stderr.strip().splitlines()[-1], 'bp_study: error: no cases to study')
    proc = self._run('gaussian', *args, '--shard=2/2', f'--out={bad}')
    self.assertEqual(proc.stderr.strip().splitlines()[-1],
                     "bp_study: error: --shard: expected 0 ≤ i < n, got '2/2'")
    part = os.path.join(self.root, 'gaussian.json')
    merged = os.path.join(self.root, 'merged.json')
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
    run = lambda *files: subprocess.run(
        [sys.executable, TOOL, f'--merge={",".join(files)}', f'--out={merged}'],
        capture_output=True, text=True, env=env, timeout=300)
    self.assertEqual(run(part).returncode, 0)
    with open(merged) as f:
      got = json.load(f)
    self.assertEqual(got['cases'], {self.case_id: row})
    self.assertAlmostEqual(got['mean']['gauss_1_reg_0.3'], row['gauss_1_reg_0.3'])
    proc = run(part, part)
    self.assertEqual(proc.stderr.strip().splitlines()[-1],
                     f'bp_study: error: --merge: {part}: case {self.case_id} is in an '
                     'earlier file too')

  def test_lrdip_windows(self):
    # A tiny DIP (a few steps): one window, the mean of two and the joint fit each give a
    # kernel, its spread ratio and the final steps; on this 16-px LR image every window is
    # the whole image, so the mean of two is one window's kernel (re-centred sub-pixel).
    tiny = {'steps': 3, 'width': 8, 'levels': 2}
    variants = {'one': tiny, 'mean2': dict(tiny, windows=2),
                'joint2': dict(tiny, windows=2, combine='joint')}
    row = self._row('lrdip', '--regs=0.3', '--tv_weights=1e-3', '--tv_mixes=0.5',
                    f'--variants={json.dumps(variants)}')
    for name in variants:
      self.assertBetween(row[f'{name}_spread_ratio'], 0.5, 1.01)   # hardly moved from uniform
      self.assertGreater(row[f'{name}_nerr'], 0.0)
      self.assertIn(f'{name}_tv_0.001_mix_0.5_reg_0.3', row)
    self.assertAlmostEqual(row['mean2_nerr'], row['one_nerr'], delta=0.005)
    self.assertNotAlmostEqual(row['joint2_nerr'], row['one_nerr'], places=6)
    for bad, shown in (('9', '9'), ('"4"', "'4'")):
      proc = self._run('lrdip', f'--variants={{"x": {{"windows": {bad}}}}}',
                       f'--out={os.path.join(self.root, "bad.json")}')
      self.assertNotEqual(proc.returncode, 0)
      self.assertEqual(proc.stderr.strip().splitlines()[-1],
                       f'bp_study: error: --variants: x: windows: expected 1 to 5, got {shown}')

  def test_tv_with_the_gt_kernel(self):
    # --kernel_blend=0: kernelfusion's kernel (the GT) alone, so its TV SR is the GT's.
    row = self._row('tv', '--kernel_blend=0', '--tv_weights=1e-4,1e-1', '--tv_mixes=0,1',
                    '--regs=0.3')
    self.assertAlmostEqual(row['kernel_nerr'], 0.0, places=6)
    self.assertAlmostEqual(row['bp_reg_0.3'], row['bp_gt_reg_0.3'], places=4)
    self.assertAlmostEqual(row['tv_0.0001'], row['gt_tv_0.0001'], places=4)
    self.assertAlmostEqual(row['tv_0.0001_mix_0_reg_0.3'], row['bp_reg_0.3'], places=4)
    self.assertAlmostEqual(row['tv_0.0001_mix_1_reg_0.3'], row['tv_0.0001'], places=4)
    self.assertLess(row['tv_0.1'], row['tv_0.0001'])          # an overweighted prior loses
    # Blended with the stretched "sparse_bp" kernel, the kernel is wrong.
    row = self._row('tv', '--tv_weights=1e-4', '--tv_mixes=0.5', '--regs=0.3')
    self.assertGreater(row['kernel_nerr'], 0.1)
    self.assertLess(row['tv_0.0001'], row['gt_tv_0.0001'])
    row = self._row('tv', '--kernel_blend=0', '--tv_weights=1e-4', '--tv_mixes=1', '--regs=0.3',
                    '--tv_iters=1x1u,6x20,6x60u')
    # One plain CG step is not enough; the preconditioned default comes close to a converged
    # plain solve.
    self.assertLess(row['tv_0.0001_it1x1u'], row['tv_0.0001_it6x20'] - 0.5)
    self.assertAlmostEqual(row['tv_0.0001_it6x20'], row['tv_0.0001_it6x60u'], delta=0.05)
    proc = self._run('tv', '--tv_iters=6', f'--out={os.path.join(self.root, "bad.json")}')
    self.assertNotEqual(proc.returncode, 0)
    self.assertEqual(proc.stderr.strip().splitlines()[-1],
                     'bp_study: error: --tv_iters: expected rounds x iterations, '
                     "e.g. 6x20 or 6x15u, got ['6']")

  def test_spectral(self):
    row = self._row('spectral', '--kernel_blend=0', '--weights=0,1', '--tv_weights=1e-4',
                    '--tv_mixes=1', '--regs=0.3')
    # Weight 0: the saved kernel (the GT) alone.
    self.assertAlmostEqual(row['w0_nerr'], 0.0, places=6)
    self.assertAlmostEqual(row['w0_tv_0.0001'], row['gt_tv_0.0001'], places=4)
    # Weight 1: the spectral Gaussian fit alone (from only 16×16 LR px here): elongated along
    # the GT's major axis (30° counter-clockwise on screen = 150° in the fit's convention).
    self.assertGreater(row['spectral_sigma1'], 1.3 * row['spectral_sigma2'])
    self.assertLess(abs(row['spectral_theta'] - np.radians(150)), 0.5)
    self.assertLess(row['w1_nerr'], 0.8)
    # A blurred LR: a Gaussian explains its spectrum better than no blur.
    self.assertLess(row['spectral_evidence_gain'], 0.0)
    self.assertAlmostEqual(row['spectral_evidence_gain'],
                           row['spectral_nle'] - row['spectral_nle_no_blur'], places=6)

  def test_gaussian_switch(self):
    # τ far below / above the evidence gain: never / always the --switch_to setting.
    row = self._row('spectral', '--kernel_blend=0', '--weights=0,1', '--tv_weights=1e-4',
                    '--tv_mixes=1', '--regs=0.3', '--gauss_taus=-100,100',
                    '--switch_from=w0_bp_reg_0.3', '--switch_to=w1_tv_0.0001')
    self.assertEqual(row['switch_-100_chosen'], 0.0)
    self.assertEqual(row['switch_100_chosen'], 1.0)
    self.assertEqual(row['switch_-100'], row['w0_bp_reg_0.3'])
    self.assertEqual(row['switch_100'], row['w1_tv_0.0001'])
    proc = self._run('spectral', '--kernel_blend=0', '--weights=0,1', '--gauss_taus=-2',
                     '--switch_from=nothing', f'--out={os.path.join(self.root, "bad.json")}')
    self.assertNotEqual(proc.returncode, 0)
    self.assertEqual(proc.stderr.strip().splitlines()[-1],
                     "bp_study: error: --gauss_taus: no setting 'nothing' (one --variants entry; "
                     'see --switch_from, --switch_to)')

  def test_agreement(self):
    # The Gaussian test's evidence gain, its call at the given τ, and the edge kernel's cosine
    # with the fit: the values pipeline.edges_veto compares (config x4 cpu).
    row = self._row('agreement', '--regs=', '--gauss_taus=100')
    self.assertEqual(set(row), {'spectral_evidence_gain', 'fires', 'edge_spectral_cosine'})
    self.assertEqual(row['fires'], 1.0)
    config = x4.get_config('cpu')
    lr01 = evaluation.read_case_inputs(evaluation.load_benchmark(self.bench)['cases'][0], 4)[0]
    fit, info = spectral_kernel.fit_gaussian(lr01, 4, config.kernel.size)
    self.assertAlmostEqual(row['spectral_evidence_gain'], info['evidence_gain'], places=6)
    self.assertAlmostEqual(row['edge_spectral_cosine'],
                           kernels.cosine(pipeline.edges_kernel(lr01, config), fit), places=6)
    self.assertEqual(self._row('agreement', '--regs=', '--gauss_taus=-100')['fires'], 0.0)

  def test_inr_with_the_gt_kernel(self):
    # --kernel_blend=0: the saved kernel (the GT) is the INR's.
    row = self._row('inr', '--kernel_blend=0', '--tv_weights=1e-4', '--tv_mixes=0.5',
                    '--regs=0.3', '--thresholds=0.05')
    self.assertAlmostEqual(row['inr_nerr'], 0.0, places=6)
    self.assertAlmostEqual(row['inr_bp_reg_0.3'], row['bp_gt_reg_0.3'], places=4)
    self.assertAlmostEqual(row['mixture_bp_reg_0.3'], row['bp_gt_reg_0.3'], places=4)
    # The GT is a Gaussian, so its moment-matched Gaussian is nearly the GT; the L0 estimate
    # (from 16×16 LR px) is not.
    self.assertLess(row['inr_gauss_nerr'], 0.05)
    self.assertGreater(row['l0_nerr'], 5 * row['inr_gauss_nerr'])
    self.assertTrue(np.isfinite(row['geo_mean_bp_reg_0.3']))
    proc = self._run('inr', '--kernel_blend=1', f'--out={os.path.join(self.root, "bad.json")}')
    self.assertNotEqual(proc.returncode, 0)
    self.assertEqual(proc.stderr.strip().splitlines()[-1],
                     'bp_study: error: --kernel_blend: expected a weight in [0, 1), got 1.0')

  def test_ensemble_of_two_runs(self):
    case = evaluation.load_benchmark(self.bench)['cases'][0]
    _, hr01, gt_kernel = evaluation.read_case_inputs(case, 4)
    hr8 = np.round(hr01 * 255).astype(np.int32)
    runs = []
    # Two "runs": the HR brightened by 8 and by 4 grey levels, with the GT kernel and the
    # stretched one.
    for i, (offset, k) in enumerate(((8, gt_kernel), (4, kernels.scale_kernel(gt_kernel, 2.0)))):
      d = evaluation.method_dir(os.path.join(self.root, f'run{i}'), case['id'], 'kernelfusion')
      os.makedirs(d)
      iio.imwrite(os.path.join(d, 'hr.png'), np.clip(hr8 + offset, 0, 255).astype(np.uint8))
      np.save(os.path.join(d, 'kernel.npy'), k)
      runs.append(os.path.dirname(os.path.dirname(os.path.dirname(d))))
    out = os.path.join(self.root, 'ensemble.json')
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
    proc = subprocess.run([sys.executable, TOOL, f'--bench={self.bench}', '--study=ensemble',
                           f'--eval_dir={",".join(runs)}', '--regs=0.3', '--tv_weights=1e-4',
                           '--tv_mixes=0.5', f'--out={out}'],
                          capture_output=True, text=True, env=env, timeout=300)
    self.assertEqual(proc.returncode, 0, proc.stderr)
    with open(out) as f:
      row = json.load(f)['cases'][case['id']]
    mean = (np.clip(hr8 + 8, 0, 255) + np.clip(hr8 + 4, 0, 255)) / 2 / 255
    self.assertAlmostEqual(row['output_mean'], metrics.image_metrics(mean, hr01, 4)['psnr_y'],
                           places=4)
    self.assertLess(row['run0'], row['output_mean'])
    self.assertLess(row['output_mean'], row['run1'])
    # The mean kernel lies between the GT and the stretched one.
    stretched = metrics.kernel_metrics(kernels.scale_kernel(gt_kernel, 2.0), gt_kernel)
    self.assertLess(0.05, row['kernel_mean_nerr'])
    self.assertLess(row['kernel_mean_nerr'], stretched['kernel_nerr'])


if __name__ == '__main__':
  absltest.main()
