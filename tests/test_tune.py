"""tools/tune.py --trace on a one-case benchmark with the tiny variant."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import imageio.v3 as iio
import numpy as np
import skimage.data

from configs import x4
from kfjax import benchmark
from kfjax import diffusion
from kfjax import kernels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, 'tools', 'tune.py')


class TraceTest(absltest.TestCase):

  def test_trace_ends_at_the_returned_output(self):
    root = tempfile.mkdtemp()
    hr_dir = os.path.join(root, 'hr')
    os.makedirs(hr_dir)
    iio.imwrite(os.path.join(hr_dir, 'img.png'), skimage.data.astronaut()[160:224, 200:264])
    k_path = os.path.join(root, 'k.npy')
    np.save(k_path, kernels.anisotropic_gaussian(13, sigmas=(2.0, 1.0)))
    bench = os.path.join(root, 'bench')
    benchmark.build(benchmark.generic_cases(hr_dir, [k_path], scale=4), bench, scale=4,
                    meta={'name': 'unit', 'seed': 0})
    out = os.path.join(root, 'tune.jsonl')
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    proc = subprocess.run([sys.executable, TOOL, f'--bench={bench}', f'--out={out}',
                           '--base=tiny', '--trace',
                           '--variants={"inr": {}, "mixed": {"phase2.kernel_blend": 0.5}}'],
                          capture_output=True, text=True, env=env, cwd=REPO, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    with open(out, encoding='utf-8') as f:
      inr, mixed = [json.loads(x) for x in f]
    c = x4.get_config('tiny')
    n = len(diffusion.visited_timesteps(t_start=c.phase2.t_start, stride=c.phase2.stride))
    # The tiny variant back-projects from bicubic, so the last timestep's entry is the
    # returned output, with the INR's kernel alone or mixed with the L0 estimate.
    for line in (inr, mixed):
      self.assertLen(line['trace'], n)
      self.assertAlmostEqual(line['trace'][-1]['psnr_y'], line['psnr_y'], places=3)
      self.assertTrue(all(np.isfinite(r['psnr_y']) for r in line['trace']))
    # Alone, the INR's kernel is the returned one; the INR runs are the same in both.
    self.assertAlmostEqual(inr['trace'][-1]['kernel_nerr'], inr['kernel_nerr'], places=5)
    self.assertEqual([r['kernel_nerr'] for r in inr['trace']],
                     [r['kernel_nerr'] for r in mixed['trace']])


if __name__ == '__main__':
  absltest.main()
