"""tools/size_buckets.py: compiled sizes and pixel overhead of io.size_bucket, by hand."""

import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import imageio.v3 as iio
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tools'))

import size_buckets  # pylint: disable=wrong-import-position


class SizeBucketsTest(absltest.TestCase):

  def test_table_by_hand(self):
    sizes = [(339, 510), (351, 510), (384, 510)]
    t = size_buckets.bucket_table(sizes, [0, 32])
    self.assertEqual(t[0]['programs'], 3)
    self.assertEqual(t[0]['pixel_overhead'], 0.0)
    self.assertEqual(t[32]['programs'], 2)                 # 352×512 twice, 384×512
    real = 339 * 510 + 351 * 510 + 384 * 510
    self.assertAlmostEqual(t[32]['pixel_overhead'], (2 * 352 * 512 + 384 * 512) / real - 1)
    self.assertEqual(t[32]['top'][0], [[352, 512], 2])

  def test_cli(self):
    with tempfile.TemporaryDirectory() as tmp:
      for i, (h, w) in enumerate(((20, 30), (22, 30))):
        iio.imwrite(os.path.join(tmp, f'{i}.png'), np.zeros((h, w, 3), np.uint8))
      out = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'size_buckets.py'),
                            f'--lr_dir={tmp}', '--buckets=0,8'], capture_output=True, text=True,
                           check=True, timeout=120).stdout
      self.assertIn('| 0 | 2 | 0.0% |', out)
      self.assertIn('| 8 | 1 |', out)                      # both pad to 24×32


if __name__ == '__main__':
  absltest.main()
