r"""Builds a kfjax benchmark folder (SPEC §4) from ../shared/data or any HR folder.

Named sets::

  python tools/make_benchmark.py --name=blind144 --size=crop --subset=mini --out=bench/b144_mini
  python tools/make_benchmark.py --name=blind144 --size=full --out=bench/blind144
  python tools/make_benchmark.py --name=div2kfk --seed=0 --out=bench/div2kfk
  python tools/make_benchmark.py --name=div2krk --scale=2 --size=crop --out=bench/div2krk_x2

Any folder of HR images with any kernel files (.npy, or .mat with key ``Kernel``)::

  python tools/make_benchmark.py --hr_dir=my_hr --kernels=a.npy,b.mat \
      --pairing=seeded --seed=1 --scale=4 --out=bench/mine

The output folder holds manifest.json, lr/, hr/ and kernels/ (see
kfjax/benchmark.py). Synthetic LR images are ``downscale(HR, k, s)`` quantised to
8 bits, reproducible bit for bit. Errors print one line and exit with status 2.
blind144 crop/mini builds in seconds on a CPU; full blind144 takes a few minutes.
"""

import os
import shlex
import sys

from absl import app
from absl import flags
from absl import logging

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from kfjax import benchmark  # pylint: disable=g-import-not-at-top,wrong-import-position

_NAME = flags.DEFINE_enum('name', None, list(benchmark.NAMES),
                          'Named benchmark; leave unset and give --hr_dir for a generic one.')
_SCALE = flags.DEFINE_integer('scale', 4, 'SR factor (div2krk: 2 or 4).')
_SIZE = flags.DEFINE_enum('size', 'full', ['full', 'crop'],
                          'full: whole images; crop: centre --crop x --crop HR.')
_CROP = flags.DEFINE_integer('crop', 256, 'HR crop size for --size=crop (LR = crop/scale).')
_SUBSET = flags.DEFINE_enum('subset', 'all', ['all', 'mini'],
                            'mini: blind144 diagonal cases (image i with kernel i).')
_DATA = flags.DEFINE_string('data', os.path.normpath(os.path.join(_REPO, '..', 'shared', 'data')),
                            'Shared data folder (holds div2krk/, levin09_kernels/); '
                            'default ../shared/data next to the repository.')
_OUT = flags.DEFINE_string('out', None, 'Output benchmark folder.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the kernel draws (div2kfk, --pairing=seeded).')
_HR_DIR = flags.DEFINE_string('hr_dir', None, 'Generic: folder of HR images.')
_KERNELS = flags.DEFINE_list('kernels', [], 'Generic: kernel files (.npy / .mat).')
_PAIRING = flags.DEFINE_enum('pairing', 'all', ['all', 'diagonal', 'seeded'],
                             'Generic: which image goes with which kernel.')
_KERNEL_SIZE = flags.DEFINE_integer('kernel_size', 0,
                                    'Generic: resize kernels to this support first (0: keep).')
_CASES = flags.DEFINE_list('cases', [], 'Only these case ids (IMAGE__KERNEL), kept in planned '
                           'order (default: all).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace the contents of a non-empty --out.')
_QUIET = flags.DEFINE_bool('quiet', False, 'No per-case progress lines.')


def _fail(msg):
  print(f'make_benchmark: error: {msg}', file=sys.stderr)
  sys.exit(2)


def run(argv) -> dict:
  """Plans and builds the benchmark described by the flags; returns the manifest."""
  if not _OUT.value:
    raise benchmark.BenchmarkError('--out is required')
  if _SCALE.value < 1:
    raise benchmark.BenchmarkError(f'--scale must be >= 1, got {_SCALE.value}')
  if _NAME.value and _HR_DIR.value:
    raise benchmark.BenchmarkError('give either --name or --hr_dir, not both')
  if _NAME.value:
    cases = benchmark.named_cases(_NAME.value, _DATA.value, scale=_SCALE.value,
                                  seed=_SEED.value, subset=_SUBSET.value)
    name = _NAME.value + ('_mini' if _SUBSET.value == 'mini' else '')
  elif _HR_DIR.value:
    if not _KERNELS.value:
      raise benchmark.BenchmarkError('--hr_dir needs --kernels=FILE[,FILE...]')
    if _SUBSET.value != 'all':
      raise benchmark.BenchmarkError('--subset is for named benchmarks; use --pairing')
    cases = benchmark.generic_cases(_HR_DIR.value, _KERNELS.value, scale=_SCALE.value,
                                    pairing=_PAIRING.value, seed=_SEED.value,
                                    kernel_size=_KERNEL_SIZE.value)
    name = os.path.basename(os.path.normpath(_HR_DIR.value))
  else:
    raise benchmark.BenchmarkError('give --name=blind144|div2kfk|div2krk or --hr_dir')
  if _CASES.value:
    unknown = sorted(set(_CASES.value) - {c.id for c in cases})
    if unknown:
      raise benchmark.BenchmarkError(f'--cases: no planned case {unknown[0]!r} '
                                     f'(e.g. {cases[0].id!r})')
    cases = [c for c in cases if c.id in set(_CASES.value)]
  meta = {'name': name, 'seed': _SEED.value,
          'command': ' '.join(shlex.quote(a) for a in argv)}
  log = None if _QUIET.value else (lambda s: print(s, flush=True))
  manifest = benchmark.build(cases, _OUT.value, scale=_SCALE.value, size=_SIZE.value,
                             crop=_CROP.value, meta=meta, overwrite=_OVERWRITE.value, log=log)
  print(f'wrote {len(manifest["cases"])} cases to {_OUT.value}', flush=True)
  return manifest


def main(argv):
  logging.set_verbosity(logging.WARNING)            # no backend-probing chatter
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  try:
    run(sys.argv)
  except (benchmark.BenchmarkError, ValueError, OSError) as e:
    _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


if __name__ == '__main__':
  app.run(main)
