r"""kfjax: zero-shot blind super-resolution (KernelFusion) from the command line.

  python main.py --config=configs/x4.py:cpu                      # embedded demo
  python main.py --config=configs/x4.py --input=photo.png --output_dir=results
  python main.py --config=configs/x4.py --input=folder/ --config.phase2.t_start=300

See README.md for the outputs and every config field.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

import kfjax
from kfjax import app as kfapp
from kfjax import io, pipeline

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/x4.py', 'Config file[:variant].')
_INPUT = flags.DEFINE_string('input', None, 'LR image file or folder (default: embedded demo).')
_OUTPUT = flags.DEFINE_string('output_dir', 'results', 'Where result folders are written.')
_GT = flags.DEFINE_string('gt', None, 'Optional HR ground truth (adds PSNR/SSIM to metrics).')
_GT_KERNEL = flags.DEFINE_string('gt_kernel', None, 'Optional true kernel (.npy or .mat).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Recompute images whose results exist.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  kfjax.enable_compilation_cache()
  try:
    rows, status = kfapp.run(_CONFIG.value, input_path=_INPUT.value, output_dir=_OUTPUT.value,
                             gt=_GT.value, gt_kernel=_GT_KERNEL.value,
                             overwrite=_OVERWRITE.value)
  except (io.InputError, kfapp.ConfigError) as e:
    print(f'kfjax: error: {e}', file=sys.stderr)
    sys.exit(2)
  except pipeline.DivergenceError as e:
    print(f'kfjax: error: {e}', file=sys.stderr)
    sys.exit(1)
  if _INPUT.value is None:
    print(kfapp.demo_summary(rows[0], _OUTPUT.value))
  else:
    done = sum(r['status'] == 'ok' for r in rows)
    print(f'kfjax: {done} processed, {sum(r["status"] == "skipped" for r in rows)} skipped, '
          f'{sum(r["status"] == "failed" for r in rows)} failed; results in {_OUTPUT.value}/')
  sys.exit(status)


def _parse_flags(argv):
  """absl flag parsing, with config errors (e.g. an unknown field) as one line, exit 2."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [repr(e)]
    # A config file that raised: keep its last line (the exception), not the traceback.
    msg = lines[-1] if 'Traceback' in str(e) else ' '.join(lines)
    if isinstance(e, (AttributeError, KeyError)):
      msg = f'unknown config field {msg.strip(chr(34))}'
    print(f'kfjax: error: {msg} (see configs/x4.py for the fields)', file=sys.stderr)
    sys.exit(2)


class _QuietLibraries:
  """Drops INFO chatter from Orbax and absl internals; kfjax's own lines stay."""

  def filter(self, record):
    return record.levelno >= logging.converter.STANDARD_WARNING or 'orbax' not in record.pathname


if __name__ == '__main__':
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  app.run(main, flags_parser=_parse_flags)
