r"""How many compiled sizes a folder of LR images needs, with and without io.size_bucket.

  python tools/size_buckets.py --lr_dir=../shared/data/div2krk/lr_x4 --buckets=0,16,32,64

Each distinct padded LR size compiles its own Phase-1/Phase-2 programs; padding
costs extra pixels. Prints a markdown table (buckets, pixel overhead, the most
common padded sizes) and, with --out, writes it as JSON.
"""

import collections
import json
import os
import sys

from absl import app, flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from kfjax import io, pipeline  # pylint: disable=wrong-import-position

_LR_DIR = flags.DEFINE_string('lr_dir', None, 'Folder of LR images.')
_BUCKETS = flags.DEFINE_list('buckets', ['0', '16', '32', '64'], 'io.size_bucket values.')
_OUT = flags.DEFINE_string('out', None, 'Optional JSON output.')


def bucket_table(sizes, buckets):
  """{bucket: {'programs': n distinct padded sizes, 'pixel_overhead': fraction, 'top': ...}}."""
  up = pipeline.bucketed
  real = sum(h * w for h, w in sizes)
  out = {}
  for b in buckets:
    padded = collections.Counter((up(h, b), up(w, b)) for h, w in sizes)
    out[b] = {'programs': len(padded),
              'pixel_overhead': sum(h * w * n for (h, w), n in padded.items()) / real - 1,
              'top': [[list(k), n] for k, n in padded.most_common(3)]}
  return out


def main(argv):
  del argv
  if not _LR_DIR.value:
    sys.exit('size_buckets: error: --lr_dir is required')
  paths = io.list_images(_LR_DIR.value)
  sizes = [io.image_hw(p) for p in paths]
  table = bucket_table(sizes, [int(b) for b in _BUCKETS.value])
  print(f'{len(sizes)} images in {_LR_DIR.value}\n')
  print('| io.size_bucket | distinct sizes to compile | extra pixels | most common (h×w: images) |')
  print('|---:|---:|---:|---|')
  for b, r in table.items():
    top = ', '.join(f'{h}×{w}: {n}' for (h, w), n in r['top'])
    print(f'| {b} | {r["programs"]} | {100 * r["pixel_overhead"]:.1f}% | {top} |')
  if _OUT.value:
    io.atomic_write_text(_OUT.value, json.dumps({'lr_dir': _LR_DIR.value, 'n': len(sizes),
                                                 'table': table}, indent=1) + '\n')


if __name__ == '__main__':
  app.run(main)
