"""Reading and writing images and result files, with clear errors for the user.

Everything kfjax reads from or writes to disk goes through this module, so that
a bad input gives one readable line (:class:`InputError`) instead of a
traceback, and an interrupted run never leaves a half-written file behind.

Reading (:func:`read_image`)
----------------------------
Every supported file becomes a float32 ``(H, W, 3)`` RGB array in ``[0, 1]``
plus an :class:`ImageInfo` describing what was on disk. Formats are recognised
by their content (a JPEG named ``.png`` is read as a JPEG): PNG, JPEG, BMP and
TIFF. Rules:

* **Integer samples** are divided by the largest value of their type: 255 for
  8-bit, 65535 for 16-bit (PNG and TIFF, grey or colour; 16-bit colour PNGs,
  which Pillow itself reduces to 8 bits, are decoded in full), 2**32 - 1 for
  32-bit TIFF. Signed integer samples are accepted only when all of them lie in
  ``[0, 65535]``, and are then read as 16-bit.
* **Float samples** (TIFF) are assumed to be in ``[0, 1]``. If the largest
  value is above :data:`FLOAT_RESCALE_THRESHOLD` (1.5), the image is taken to be
  on another scale (0..255, 0..65535, radiance) and is divided by its maximum;
  ``ImageInfo.value_scale`` records the divisor. Then values are clipped to
  ``[0, 1]`` (so small overshoots and negative values are clipped). NaN or
  infinite samples are an error.
* **Grey** images (one sample per pixel, also 1-bit) are replicated to three
  channels and flagged ``grey=True``. A palette image is expanded to RGB and is
  not flagged grey, even if its palette is grey.
* **Alpha** is never kept. A fully opaque alpha channel (like the DIV2KRK LR
  images have) is simply dropped. Otherwise the image is composited onto
  *white*, ``rgb * a + (1 - a)``, as most viewers show it, and
  ``ImageInfo.alpha_composited`` is set so the caller can say so. (Transparent
  pixels have no defined colour; white is a stated, repeatable choice.)
* Only the first frame of a multi-page TIFF or MPO is read. EXIF orientation
  and ICC colour profiles are ignored: the pixel grid is used as stored.
* Truncated or corrupt files are errors: PNGs are checked chunk by chunk
  (CRCs, final IEND), every file is fully decoded with Pillow's
  ``LOAD_TRUNCATED_IMAGES`` forced off and decoder warnings turned into errors.
* TIFFs are read with ``tifffile`` (exact for any bit depth and for float).
  LZW- or JPEG-compressed TIFFs need the optional ``imagecodecs`` package in
  ``tifffile``; without it they are read by Pillow instead, which is exact for
  8-bit, 16-bit grey and float grey images, and anything else is an error that
  says to install ``imagecodecs``.

Writing
-------
:func:`to_output_mode` turns a float RGB result back into the input's kind of
image: single-channel for grey inputs (BT.601 luma, ``0.299 R + 0.587 G +
0.114 B``, the same weights as Pillow's ``convert('L')``), uint16 for inputs
with more than 8 bits per sample (16-bit, 32-bit and float), uint8 otherwise.
Alpha is not restored. :func:`write_image` and the ``atomic_*`` writers all go
through :func:`atomic_path`: the data is written to a hidden temporary file in
the destination folder, fsynced, then moved over the destination with
:func:`os.replace`, so readers see the old file or the new one, never a part.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import struct
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import scipy.io
from PIL import Image, ImageFile

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')

FLOAT_RESCALE_THRESHOLD = 1.5
"""A float image whose maximum is above this is divided by its maximum."""

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""BT.601 luma weights, used to turn an RGB result back into grey."""

_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
_TIFF_MAGICS = (b'II*\x00', b'MM\x00*', b'II+\x00', b'MM\x00+')
_OTHER_MAGICS = ((b'GIF8', 'GIF'), (b'RIFF', 'RIFF/WebP'), (b'\x00\x00\x00\x0cjP', 'JPEG 2000'),
                 (b'%PDF', 'PDF'))
_PIL_FORMATS = {'PNG': ('PNG',), 'JPEG': ('JPEG', 'MPO'), 'BMP': ('BMP', 'DIB')}
_WRITE_FORMATS = {'.png': 'PNG', '.jpg': 'JPEG', '.jpeg': 'JPEG', '.bmp': 'BMP', '.tif': 'TIFF',
                  '.tiff': 'TIFF'}


class InputError(Exception):
  """A problem with the user's input or output paths, not a bug in kfjax.

  ``str(error)`` is a single line ``'<path>: <problem>'`` (or just the problem
  when no path is given), meant to be printed by the CLI, which then exits
  with status 2 and no traceback.
  """

  def __init__(self, problem: str, *, path: str | os.PathLike | None = None):
    self.problem = _one_line(problem)
    self.path = None if path is None else os.fspath(path)
    text = self.problem if self.path is None else f'{_one_line(self.path)}: {self.problem}'
    super().__init__(text)


def _one_line(text) -> str:
  """Replaces line breaks in ``text`` by spaces."""
  return str(text).replace('\r\n', ' ').replace('\n', ' ').replace('\r', ' ')


@dataclasses.dataclass(frozen=True)
class ImageInfo:
  """What an input image was on disk, so a result can be written back alike.

  Attributes:
    format: 'PNG', 'JPEG', 'BMP' or 'TIFF' (from the content, not the name).
    mode: the stored colour mode: Pillow's name ('L', 'LA', 'RGB', 'RGBA',
      'P', '1', 'I;16', 'F', 'CMYK', ...) or, for TIFFs read by tifffile,
      'L', 'LA', 'RGB', 'RGBA' or 'P' (``dtype`` tells the sample type).
    dtype: the stored sample type, e.g. 'uint8', 'uint16', 'float32', 'bool'.
    bit_depth: bits per stored sample (1, 8, 16, 32, 64).
    shape: the stored array shape, ``(H, W)`` or ``(H, W, C)``.
    has_alpha: the file had an alpha channel (or palette transparency).
    grey: the file had a single colour channel (with or without alpha).
    value_scale: what the stored values were divided by to get ``[0, 1]``.
    alpha_composited: a non-opaque alpha was composited onto white.
  """

  format: str
  mode: str
  dtype: str
  bit_depth: int
  shape: tuple[int, ...]
  has_alpha: bool
  grey: bool
  value_scale: float = 1.0
  alpha_composited: bool = False

  @property
  def high_precision(self) -> bool:
    """True when the input had more than 8 bits per sample (written as uint16)."""
    return self.bit_depth > 8


# ---------------------------------------------------------------------------
# Listing and checking paths.


def list_images(path: str | os.PathLike) -> list[Path]:
  """Returns the images to process: ``[path]`` for a file, sorted files for a folder.

  A folder is not searched recursively; its files whose extension (any case)
  is in :data:`IMAGE_EXTENSIONS` are returned, sorted by name. Hidden files
  (names starting with '.', such as macOS ``._x.png`` companions or kfjax's
  own temporary files) are skipped.

  Raises:
    InputError: the path does not exist, is a file with an unsupported
      extension, or is a folder with no image files.
  """
  p = Path(path)
  if p.is_dir():
    try:
      children = list(p.iterdir())
    except OSError as e:
      raise InputError(f'cannot list folder ({e.strerror or e})', path=path) from None
    images = sorted(c for c in children if _is_listed_image(c))
    if not images:
      raise InputError(f'no image files ({", ".join(IMAGE_EXTENSIONS)}) in this folder',
                       path=path)
    return images
  if p.is_file():
    if p.suffix.lower() not in IMAGE_EXTENSIONS:
      raise InputError(f'unsupported file type "{p.suffix}" '
                       f'(expected one of {", ".join(IMAGE_EXTENSIONS)})', path=path)
    return [p]
  if p.exists():
    raise InputError('not a regular file or folder', path=path)
  raise InputError('no such file or folder', path=path)


def _is_listed_image(p: Path) -> bool:
  """Whether a folder entry is an image file that list_images should return."""
  return (not p.name.startswith('.') and p.suffix.lower() in IMAGE_EXTENSIONS
          and p.is_file())


def check_output_dir(output_dir: str | os.PathLike,
                     input_path: str | os.PathLike | None) -> Path:
  """Checks that results may go to ``output_dir``, creates it, and returns it.

  Nothing is ever written into the input folder. When ``input_path`` is a
  folder, ``output_dir`` may be neither that folder nor anywhere inside it.
  When ``input_path`` is a file, ``output_dir`` may not be the file's own
  folder, but a subfolder of it is allowed (the input folder then only gains
  one new folder, not loose files). Paths are compared after resolving
  symlinks and ``..``, and by identity (``os.path.samefile``) for the parts
  that already exist.

  ``input_path=None`` (the embedded demo) skips the containment check.

  Then the folder is created (with its parents) if needed, and a probe file is
  written and removed in it.

  Returns:
    The absolute, resolved output folder.

  Raises:
    InputError: the folder is inside the input folder, or is not a folder, or
      cannot be created or written to.
  """
  try:
    out = Path(output_dir).expanduser().resolve()
    src = None if input_path is None else Path(input_path).expanduser().resolve()
  except (OSError, ValueError, RuntimeError) as e:  # NUL in a path, symlink loop.
    raise InputError(f'invalid path ({e})', path=output_dir) from None
  if src is None:
    pass                                              # no input folder to protect (the demo)
  elif src.is_dir():
    if _is_same_or_inside(out, src):
      raise InputError(f'output folder is inside the input folder {input_path}; '
                       'choose an --output_dir elsewhere', path=output_dir)
  elif _same_dir(out, src.parent):
    raise InputError(f'output folder is the folder of the input file {input_path}; '
                     'choose an --output_dir elsewhere', path=output_dir)
  if out.exists() and not out.is_dir():
    raise InputError('output path exists and is not a folder', path=output_dir)
  try:
    out.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise InputError(f'cannot create output folder ({e.strerror or e})', path=output_dir) from None
  try:
    with tempfile.NamedTemporaryFile(dir=out, prefix='.kfjax-probe-'):
      pass
  except OSError as e:
    problem = f'output folder is not writable ({e.strerror or e})'
    raise InputError(problem, path=output_dir) from None
  return out


def _same_dir(a: Path, b: Path) -> bool:
  """Whether two resolved paths name the same folder."""
  if a == b:
    return True
  try:
    return a.exists() and b.exists() and os.path.samefile(a, b)
  except OSError:
    return False


def _is_same_or_inside(out: Path, folder: Path) -> bool:
  """Whether resolved ``out`` is ``folder`` or below it."""
  return any(_same_dir(p, folder) for p in (out, *out.parents))


# ---------------------------------------------------------------------------
# Reading.


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, ImageInfo]:
  """Reads an image as float32 ``(H, W, 3)`` RGB in ``[0, 1]`` (see module doc).

  Args:
    path: a PNG, JPEG, BMP or TIFF file.

  Returns:
    ``(image, info)``: the image, and an :class:`ImageInfo` describing the file.

  Raises:
    InputError: for any problem with the file (missing, a folder, unreadable,
      not an image, unsupported format, truncated or corrupt, zero size,
      unsupported channels or sample type). No other exception escapes for a
      bad file.
  """
  p = Path(path)
  head = _read_head(p, path)
  fmt = _sniff_format(head)
  if fmt is None:
    raise InputError(_not_an_image_problem(head), path=path)
  _check_header_size(head, fmt, path)
  try:
    if fmt == 'TIFF':
      samples, info_kw = _read_tiff(p)
    else:
      samples, info_kw = _read_with_pil(p, fmt)
    image, value_scale, composited = _samples_to_rgb01(samples, **info_kw.pop('layout'))
  except InputError as e:
    raise InputError(e.problem, path=path) from None
  except MemoryError:
    raise InputError('not enough memory to decode this image', path=path) from None
  except Image.DecompressionBombError as e:
    raise InputError(f'image too large ({e})', path=path) from None
  except Exception as e:  # pylint: disable=broad-except
    raise InputError(f'not a readable image (truncated or corrupt {fmt}? '
                     f'{type(e).__name__}: {e})', path=path) from None
  info = ImageInfo(format=fmt, value_scale=value_scale, alpha_composited=composited, **info_kw)
  return image, info


def image_hw(path: str | os.PathLike) -> tuple[int, int]:
  """(height, width) of an image file, from its header where Pillow can read it (no
  pixel decoding), otherwise by :func:`read_image` (so a bad file raises its InputError)."""
  try:
    with Image.open(path) as im:
      return im.height, im.width
  except Exception:  # pylint: disable=broad-except
    return read_image(path)[0].shape[:2]


def _read_head(p: Path, path) -> bytes:
  """Returns the first 32 bytes of a file, or raises InputError."""
  if p.is_dir():
    raise InputError('is a folder, not an image file', path=path)
  if p.exists() and not p.is_file():
    raise InputError('not a regular file', path=path)
  try:
    with open(p, 'rb') as f:
      head = f.read(32)
  except FileNotFoundError:
    raise InputError('no such file', path=path) from None
  except (OSError, ValueError) as e:  # ValueError: a NUL in the path.
    raise InputError(f'cannot read file ({getattr(e, "strerror", None) or e})', path=path) from None
  if not head:
    raise InputError('empty file (0 bytes)', path=path)
  return head


def _sniff_format(head: bytes) -> str | None:
  """Returns 'PNG', 'JPEG', 'BMP' or 'TIFF' from a file's first bytes, else None."""
  if head.startswith(_PNG_MAGIC):
    return 'PNG'
  if head.startswith(b'\xff\xd8\xff'):
    return 'JPEG'
  if head.startswith(b'BM'):
    return 'BMP'
  if head[:4] in _TIFF_MAGICS:
    return 'TIFF'
  return None


def _not_an_image_problem(head: bytes) -> str:
  """The InputError problem for a file that is not PNG, JPEG, BMP or TIFF."""
  for magic, name in _OTHER_MAGICS:
    if head.startswith(magic):
      return f'unsupported image format {name} (use PNG, JPEG, BMP or TIFF)'
  return 'not a readable image (not a PNG, JPEG, BMP or TIFF file)'


def _check_header_size(head: bytes, fmt: str, path) -> None:
  """Raises InputError for a PNG or BMP header that declares a zero size."""
  if fmt == 'PNG' and len(head) >= 24 and head[12:16] == b'IHDR':
    width, height = struct.unpack('>II', head[16:24])
  elif fmt == 'BMP' and len(head) >= 26 and struct.unpack('<I', head[14:18])[0] >= 40:
    width, height = struct.unpack('<ii', head[18:26])
  else:
    return
  if width == 0 or height == 0:
    raise InputError(f'image has zero size ({width}x{abs(height)})', path=path)


@contextlib.contextmanager
def _strict_decoding() -> Iterator[None]:
  """Makes Pillow refuse truncated data and turns decoder warnings into errors.

  Only decoding runs under it, not ``Image.open``, whose metadata warnings
  (odd EXIF or TIFF tags) do not make the pixels wrong.
  """
  old = ImageFile.LOAD_TRUNCATED_IMAGES
  ImageFile.LOAD_TRUNCATED_IMAGES = False
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('error')
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      warnings.simplefilter('ignore', ResourceWarning)
      yield
  finally:
    ImageFile.LOAD_TRUNCATED_IMAGES = old


def _load_strictly(im) -> None:
  """Decodes all of ``im``'s pixels, failing on truncated or corrupt data."""
  with _strict_decoding():
    im.load()


def _read_with_pil(p: Path, fmt: str) -> tuple[np.ndarray, dict]:
  """Fully decodes a PNG, JPEG or BMP (or a TIFF fallback) with Pillow."""
  formats = _PIL_FORMATS.get(fmt, (fmt,))
  if fmt == 'PNG':
    with Image.open(p, formats=formats) as im, _strict_decoding():
      im.verify()  # Every chunk's CRC, and the final IEND.
  with Image.open(p, formats=formats) as im:
    rawmode = _png_rawmode(im) if fmt == 'PNG' else None
    _load_strictly(im)
    mode = im.mode
    if fmt == 'TIFF':
      _check_pil_tiff_exact(im)
    if rawmode in ('RGB;16B', 'RGBA;16B', 'LA;16B'):
      samples = _png16_colour_samples(p, im, rawmode)
      mode = rawmode.split(';')[0]
      dtype, bits = 'uint16', 16
    else:
      samples = _pil_samples(im)
      dtype, bits = _pil_dtype_bits(mode, samples)
  channels = 1 if samples.ndim == 2 else samples.shape[2]
  has_alpha = channels in (2, 4)
  info_kw = dict(mode=mode, dtype=dtype, bit_depth=bits, shape=_stored_shape(mode, samples),
                 has_alpha=has_alpha, grey=channels in (1, 2) and mode != 'P',
                 layout=dict(associated_alpha=False, invert=False))
  return samples, info_kw


def _png_rawmode(im) -> str | None:
  """The raw mode Pillow decodes a PNG with (e.g. 'RGB;16B'), or None."""
  try:
    return im.tile[0][3] if len(im.tile) == 1 and isinstance(im.tile[0][3], str) else None
  except (IndexError, TypeError):
    return None


def _retile(im, rawmode: str) -> None:
  """Makes Pillow decode ``im`` (not yet loaded) with another raw mode."""
  tiles = []
  for tile in im.tile:
    codec, extents, offset, _ = tile
    if hasattr(tile, '_replace'):
      tiles.append(tile._replace(args=rawmode))
    else:
      tiles.append((codec, extents, offset, rawmode))
  im.tile = tiles


def _png16_colour_samples(p: Path, im, rawmode: str) -> np.ndarray:
  """Exact uint16 samples of a 16-bit RGB, RGBA or grey+alpha PNG.

  Pillow has no 16-bit colour modes and keeps only the high byte of each
  sample. It can still undo the PNG filters for us: decoding the same file
  with the little-endian raw mode (';16L') picks the *low* byte of each
  big-endian sample instead, and grey+alpha ('LA;16B', 4 bytes a pixel) can be
  decoded byte for byte as 8-bit 'RGBA'.
  """
  if rawmode == 'LA;16B':
    with Image.open(p, formats=('PNG',)) as im2:
      _retile(im2, 'RGBA')
      _load_strictly(im2)
      raw = np.asarray(im2).astype(np.uint16)
    return np.stack([raw[..., 0] * 256 + raw[..., 1], raw[..., 2] * 256 + raw[..., 3]], axis=-1)
  high = np.asarray(im).astype(np.uint16)
  with Image.open(p, formats=('PNG',)) as im2:
    _retile(im2, rawmode.replace(';16B', ';16L'))
    _load_strictly(im2)
    low = np.asarray(im2).astype(np.uint16)
  return high * 256 + low


def _pil_samples(im) -> np.ndarray:
  """The samples of a loaded Pillow image as (H, W) or (H, W, C), C in 2..4."""
  mode = im.mode
  transparent = 'transparency' in im.info
  if mode in ('P', 'PA'):
    im = im.convert('RGBA' if transparent or mode == 'PA' else 'RGB')
  elif mode in ('L', 'RGB') and transparent:
    im = im.convert('LA' if mode == 'L' else 'RGBA')
  elif mode == '1':
    im = im.convert('L')
  elif mode in ('RGBa', 'La'):
    im = im.convert(mode.upper())
  elif mode in ('CMYK', 'YCbCr', 'LAB', 'HSV', 'RGBX'):
    im = im.convert('RGB')
  samples = np.asarray(im)
  if samples.dtype.byteorder == '>':
    samples = samples.astype(samples.dtype.newbyteorder('='))
  return samples


def _pil_dtype_bits(mode: str, samples: np.ndarray) -> tuple[str, int]:
  """The stored sample type and bit depth of a Pillow image."""
  if mode == '1':
    return 'bool', 1
  if mode.startswith('I;16'):
    return 'uint16', 16
  return samples.dtype.name, samples.dtype.itemsize * 8


def _stored_shape(mode: str, samples: np.ndarray) -> tuple[int, ...]:
  """The shape of the image as stored: (H, W) for single-band modes, else (H, W, C)."""
  h, w = samples.shape[:2]
  try:
    bands = Image.getmodebands(mode)
  except (KeyError, ValueError):
    bands = 1 if samples.ndim == 2 else samples.shape[2]
  return (h, w) if bands == 1 else (h, w, bands)


def _check_pil_tiff_exact(im) -> None:
  """Raises InputError unless Pillow decoded this TIFF without losing bits."""
  bits = im.tag_v2.get(258, (1,))
  bits = tuple(bits) if isinstance(bits, (tuple, list)) else (bits,)
  exact = (im.mode in ('F', 'I', 'I;16', 'I;16B', 'I;16L', 'I;16N')
           or all(b in (1, 8) for b in bits))
  if not exact:
    compression = im.info.get('compression', 'raw')
    raise InputError(f'cannot read this {compression} TIFF with {bits[0]}-bit {im.mode} samples '
                     'exactly (for LZW or JPEG compression: pip install imagecodecs)')


def _read_tiff(p: Path) -> tuple[np.ndarray, dict]:
  """Decodes the first page of a TIFF with tifffile (Pillow for what it cannot)."""
  try:
    samples, axes, photometric, colormap, extrasamples = _decode_tiff_page(p)
  except _UsePillow as reason:
    try:
      return _read_with_pil(p, 'TIFF')
    except InputError:
      raise
    except Exception:  # pylint: disable=broad-except
      raise InputError(f'cannot read this TIFF: {reason}') from None
  if samples.size == 0:
    raise InputError('image has zero size')
  samples = _tiff_to_yxs(samples, axes)
  stored_shape = tuple(samples.shape)
  dtype = samples.dtype.name
  bits = 1 if samples.dtype == np.bool_ else samples.dtype.itemsize * 8
  mode = {0: 'L', 1: 'L', 2: 'RGB', 3: 'P'}[photometric]
  channels = 1 if samples.ndim == 2 else samples.shape[2]
  if mode == 'P':
    if colormap is None or channels != 1 or samples.dtype.kind not in 'ui':
      raise InputError('palette TIFF without a usable colour map')
    samples = np.moveaxis(colormap[:, samples], 0, -1)  # uint16 colours: scaled by 65535.
  elif (mode, channels) in (('L', 2), ('RGB', 4)):
    mode += 'A'
  elif (mode, channels) not in (('L', 1), ('RGB', 3)):
    raise InputError(f'unsupported number of channels ({channels}) for a '
                     f'{"grey" if mode == "L" else mode} TIFF')
  info_kw = dict(mode=mode, dtype=dtype, bit_depth=bits, shape=stored_shape,
                 has_alpha=mode.endswith('A'), grey=mode in ('L', 'LA'),
                 layout=dict(associated_alpha=extrasamples[:1] == (1,), invert=photometric == 0))
  return samples, info_kw


class _UsePillow(Exception):
  """tifffile cannot decode this TIFF; the message says why."""


def _decode_tiff_page(p: Path):
  """Decodes a TIFF's first page with tifffile.

  Returns:
    ``(samples, axes, photometric, colormap, extrasamples)``.

  Raises:
    _UsePillow: tifffile is missing, lacks the codec (imagecodecs), or the
      colour space is not grey, RGB or palette.
  """
  try:
    import tifffile  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise _UsePillow('tifffile is not installed (pip install tifffile)') from None
  with _quiet_logger('tifffile'), tifffile.TiffFile(p) as tif:
    if not tif.pages:
      raise InputError('not a readable image (TIFF with no pages)')
    page = tif.pages[0]
    photometric = int(page.photometric)
    if photometric not in (0, 1, 2, 3):  # MINISWHITE, MINISBLACK, RGB, PALETTE.
      raise _UsePillow(f'unsupported colour space {page.photometric.name}')
    try:
      with warnings.catch_warnings():
        warnings.simplefilter('error')
        samples = page.asarray()
    except (ValueError, KeyError) as e:
      if 'imagecodecs' in str(e):
        raise _UsePillow(f'{page.compression.name} compression needs the imagecodecs package '
                         '(pip install imagecodecs)') from None
      raise
    return (samples, page.axes, photometric, page.colormap,
            tuple(int(x) for x in page.extrasamples))


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
  """Silences a library's logger (tifffile logs what we report as InputError)."""
  logger = logging.getLogger(name)
  old = logger.level
  logger.setLevel(logging.CRITICAL + 1)
  try:
    yield
  finally:
    logger.setLevel(old)


def _tiff_to_yxs(samples: np.ndarray, axes: str) -> np.ndarray:
  """Orders a tifffile page array as (Y, X) or (Y, X, S), dropping length-1 axes."""
  if len(axes) != samples.ndim or 'Y' not in axes or 'X' not in axes:
    raise InputError(f'unsupported TIFF layout (axes {axes!r}, shape {samples.shape})')
  for i in reversed(range(len(axes))):
    if axes[i] not in 'YXS' and samples.shape[i] == 1:
      samples = np.squeeze(samples, i)
      axes = axes[:i] + axes[i + 1:]
  if set(axes) - set('YXS'):
    raise InputError(f'unsupported TIFF layout (axes {axes!r}, shape {samples.shape})')
  order = [axes.index(a) for a in 'YXS' if a in axes]
  return np.transpose(samples, order)


def _samples_to_rgb01(samples: np.ndarray, *, associated_alpha: bool,
                      invert: bool) -> tuple[np.ndarray, float, bool]:
  """Turns (H, W) or (H, W, C) samples into float32 RGB in [0, 1].

  Returns:
    ``(rgb, value_scale, alpha_composited)``.
  """
  if samples.size == 0:
    raise InputError(f'image has zero size ({"x".join(map(str, samples.shape))})')
  if samples.ndim == 2:
    samples = samples[..., None]
  if samples.ndim != 3 or samples.shape[2] not in (1, 2, 3, 4):
    channels = samples.shape[2] if samples.ndim == 3 else f'shape {samples.shape}'
    raise InputError(f'unsupported number of channels ({channels})')
  values, value_scale = _scale_samples(samples)
  if invert:  # TIFF 'min is white' grey.
    values[..., :1] = 1.0 - values[..., :1]
  colour, alpha = _split_alpha(values)
  composited = False
  if alpha is not None and not np.all(alpha >= 1.0):
    colour = colour + (1.0 - alpha) if associated_alpha else colour * alpha + (1.0 - alpha)
    colour = np.clip(colour, 0.0, 1.0)
    composited = True
  if colour.shape[2] == 1:
    colour = np.repeat(colour, 3, axis=2)
  return colour.astype(np.float32), value_scale, composited


def _split_alpha(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
  """Splits (H, W, C) into colour (1 or 3 channels) and alpha (or None)."""
  if values.shape[2] in (2, 4):
    return values[..., :-1], values[..., -1:]
  return values, None


def _scale_samples(samples: np.ndarray) -> tuple[np.ndarray, float]:
  """Maps stored samples to float64 in [0, 1]; returns them and the divisor used."""
  dtype = samples.dtype
  if dtype == np.bool_:
    return samples.astype(np.float64), 1.0
  if np.issubdtype(dtype, np.unsignedinteger):
    if dtype.itemsize > 4:
      raise InputError(f'unsupported sample type {dtype.name}')
    scale = float(np.iinfo(dtype).max)
    return samples.astype(np.float64) / scale, scale
  if np.issubdtype(dtype, np.signedinteger):
    lo, hi = int(samples.min()), int(samples.max())
    if lo < 0 or hi > 65535:
      raise InputError(f'unsupported sample type {dtype.name} with values in [{lo}, {hi}] '
                       '(expected 0..65535)')
    scale = 255.0 if dtype.itemsize == 1 else 65535.0
    return samples.astype(np.float64) / scale, scale
  if np.issubdtype(dtype, np.floating):
    values = samples.astype(np.float64)
    if not np.all(np.isfinite(values)):
      raise InputError('float image contains NaN or infinite values')
    peak = float(values.max())
    scale = peak if peak > FLOAT_RESCALE_THRESHOLD else 1.0
    return np.clip(values / scale, 0.0, 1.0), scale
  raise InputError(f'unsupported sample type {dtype.name}')


# ---------------------------------------------------------------------------
# Converting and writing results.


def to_output_mode(img01: np.ndarray, info: ImageInfo | None) -> np.ndarray:
  """Converts a float RGB result in [0, 1] to the input's kind of image.

  Grey inputs give a single-channel ``(H, W)`` array (BT.601 luma of the RGB
  result, see :data:`LUMA_WEIGHTS`); inputs with more than 8 bits per sample
  (16-bit, 32-bit, float) give uint16; everything else, including palette
  images and ``info=None``, gives uint8 RGB. Values are clipped to [0, 1] and
  rounded to the nearest level. Alpha is not restored.

  Raises:
    ValueError: ``img01`` is not a finite ``(H, W, 3)`` array.
  """
  img = np.asarray(img01, dtype=np.float64)
  if img.ndim != 3 or img.shape[2] != 3:
    raise ValueError(f'expected an (H, W, 3) image, got shape {img.shape}')
  if info is not None and info.grey:
    img = img @ np.asarray(LUMA_WEIGHTS)
  dtype = np.uint16 if info is not None and info.high_precision else np.uint8
  return _quantise(img, dtype)


def _quantise(img: np.ndarray, dtype) -> np.ndarray:
  """Clips float values to [0, 1] and rounds them to ``dtype`` levels."""
  if not np.all(np.isfinite(img)):
    raise ValueError('image contains NaN or infinite values')
  top = np.iinfo(dtype).max
  return np.round(np.clip(img, 0.0, 1.0) * top).astype(dtype)


def write_image(path: str | os.PathLike, image: np.ndarray, info: ImageInfo | None = None) -> None:
  """Writes an image atomically, in the format given by the path's extension.

  Args:
    path: destination; '.png', '.jpg'/'.jpeg', '.bmp' or '.tif'/'.tiff'.
    image: a float array in [0, 1] or a uint8/uint16 (or bool) array, shaped
      ``(H, W)``, ``(H, W, 1)``, ``(H, W, 2)`` (grey+alpha), ``(H, W, 3)`` or
      ``(H, W, 4)``. A float ``(H, W, 3)`` image with ``info`` goes through
      :func:`to_output_mode`; other float images are rounded to uint8.
    info: the input's :class:`ImageInfo`, to write the result in its mode.

  PNG and TIFF keep 16 bits; JPEG and BMP are 8-bit only, so uint16 data is
  reduced to uint8 (``round(v / 257)``) for them.

  Raises:
    ValueError: unknown extension, unsupported shape or dtype, or NaN values.
  """
  fmt = _WRITE_FORMATS.get(Path(path).suffix.lower())
  if fmt is None:
    raise ValueError(f'cannot write {path}: unknown image extension '
                     f'(use one of {", ".join(IMAGE_EXTENSIONS)})')
  array = _as_storable(image, info)
  if fmt in ('JPEG', 'BMP') and array.dtype == np.uint16:
    array = np.round(array / 257.0).astype(np.uint8)
  with atomic_path(path) as tmp:
    if fmt == 'TIFF':
      import tifffile  # pylint: disable=g-import-not-at-top
      tifffile.imwrite(tmp, array, photometric='minisblack' if array.ndim == 2 or array.shape[2]
                       in (1, 2) else 'rgb', extrasamples=_tiff_extrasamples(array))
    elif fmt == 'PNG' and array.dtype == np.uint16 and array.ndim == 3:
      tmp.write_bytes(encode_png16(array))
    else:
      _save_with_pil(tmp, array, fmt)


def _as_storable(image: np.ndarray, info: ImageInfo | None) -> np.ndarray:
  """Turns ``image`` into a uint8 or uint16 (H, W) or (H, W, 2..4) array."""
  array = np.asarray(image)
  if array.ndim == 3 and array.shape[2] == 1:
    array = array[..., 0]
  if array.ndim not in (2, 3) or array.ndim == 3 and array.shape[2] not in (2, 3, 4):
    raise ValueError(f'cannot write an image of shape {array.shape}')
  if array.shape[0] == 0 or array.shape[1] == 0:
    raise ValueError(f'cannot write an empty image of shape {array.shape}')
  if np.issubdtype(array.dtype, np.floating):
    if info is not None and array.ndim == 3 and array.shape[2] == 3:
      return to_output_mode(array, info)
    return _quantise(array.astype(np.float64), np.uint8)
  if array.dtype == np.bool_:
    return array.astype(np.uint8) * 255
  if array.dtype in (np.uint8, np.uint16):
    return array
  raise ValueError(f'cannot write an image of dtype {array.dtype} (use float, uint8 or uint16)')


def _tiff_extrasamples(array: np.ndarray) -> tuple[str, ...]:
  """tifffile's extrasamples for an (H, W[, C]) array: unassociated alpha if any."""
  return ('unassalpha',) if array.ndim == 3 and array.shape[2] in (2, 4) else ()


def _save_with_pil(tmp: Path, array: np.ndarray, fmt: str) -> None:
  """Saves a uint8 (any layout) or uint16 grey array with Pillow."""
  im = Image.fromarray(array)  # uint16 (H, W) becomes 'I;16'.
  if fmt == 'JPEG':
    if im.mode not in ('L', 'RGB'):
      raise ValueError(f'JPEG cannot store an image with alpha (mode {im.mode})')
    im.save(tmp, format='JPEG', quality=95)
  else:
    im.save(tmp, format=fmt)


def encode_png16(array: np.ndarray) -> bytes:
  """Encodes a uint16 (H, W, C) array, C in 1..4, as a 16-bit PNG file.

  Pillow cannot write 16-bit colour PNGs. Every row uses the PNG 'Sub' filter,
  which compresses smooth images well and is one vectorised subtraction.
  """
  array = np.asarray(array)
  if array.dtype != np.uint16 or array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
    raise ValueError(f'expected a uint16 (H, W, 1..4) array, got {array.dtype} {array.shape}')
  h, w, c = array.shape
  raw = np.ascontiguousarray(array.astype('>u2')).view(np.uint8).reshape(h, w * c * 2)
  bpp = 2 * c
  filtered = raw.copy()
  filtered[:, bpp:] -= raw[:, :-bpp]  # uint8 arithmetic wraps mod 256, as PNG wants.
  rows = np.concatenate([np.ones((h, 1), np.uint8), filtered], axis=1)  # 1 = Sub.
  colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
  header = struct.pack('>IIBBBBB', w, h, 16, colour_type, 0, 0, 0)
  return b''.join([_PNG_MAGIC, _png_chunk(b'IHDR', header),
                   _png_chunk(b'IDAT', zlib.compress(rows.tobytes(), 6)), _png_chunk(b'IEND', b'')])


def _png_chunk(kind: bytes, data: bytes) -> bytes:
  """One PNG chunk: length, type, data and CRC."""
  crc = zlib.crc32(kind + data) & 0xFFFFFFFF
  return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', crc)


# ---------------------------------------------------------------------------
# Atomic writing.


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
  """Yields a temporary path to write; on success it replaces ``path`` atomically.

  The temporary file is hidden (its name starts with '.') and sits in the same
  folder as ``path`` (so :func:`os.replace` is atomic) with the same suffix (so
  writers that pick a format from the name pick the right one). It exists,
  empty, when yielded. When the ``with`` body finishes, the file is fsynced and
  moved over ``path``, then the folder is fsynced. If the body raises, the
  temporary file is removed, ``path`` keeps its old content (if any), and the
  exception propagates. The new file gets the usual permissions (umask), not
  the 0600 of :func:`tempfile.mkstemp`.

  Example::

    with atomic_path('out/hr.png') as tmp:
      imageio.v3.imwrite(tmp, hr)
  """
  final = Path(path)
  tmp = _create_temp_beside(final)
  try:
    yield tmp
    _fsync_file(tmp)
    os.replace(tmp, final)
  except BaseException:
    with contextlib.suppress(OSError):
      tmp.unlink()
    raise
  _fsync_dir(final.parent)


def _create_temp_beside(final: Path) -> Path:
  """Creates an empty, new, hidden file next to ``final`` with the same suffix."""
  for _ in range(100):
    tmp = final.with_name(f'.{final.stem}.tmp-{secrets.token_hex(4)}{final.suffix}')
    try:
      fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
      continue
    os.close(fd)
    return tmp
  raise FileExistsError(f'could not create a temporary file next to {final}')


def _fsync_file(path: Path) -> None:
  """Flushes a file's data to disk."""
  with open(path, 'rb+') as f:
    os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
  """Flushes a folder's entries to disk, where the OS allows it (not Windows)."""
  if os.name != 'posix':
    return
  with contextlib.suppress(OSError):
    fd = os.open(folder, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
  with atomic_path(path) as tmp, open(tmp, 'wb') as f:
    f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = 'utf-8') -> None:
  """Writes ``text`` to ``path`` atomically, exactly as given (no newline translation)."""
  with atomic_path(path) as tmp, open(tmp, 'w', encoding=encoding, newline='') as f:
    f.write(text)


def atomic_save_npy(path: str | os.PathLike, array) -> None:
  """Saves ``array`` as a ``.npy`` file atomically (no pickles, no added suffix)."""
  with atomic_path(path) as tmp, open(tmp, 'wb') as f:
    np.save(f, np.asarray(array), allow_pickle=False)


def atomic_save_mat(path: str | os.PathLike, mdict: Mapping[str, object]) -> None:
  """Saves ``mdict`` as a MATLAB v5 ``.mat`` file atomically (``scipy.io.savemat``)."""
  with atomic_path(path) as tmp, open(tmp, 'wb') as f:
    scipy.io.savemat(f, dict(mdict))


def center_box(h: int, w: int, size: int) -> tuple[int, int, int, int]:
  """(top, left, height, width) of the centre window of at most size×size in an h×w image."""
  ch, cw = min(h, size), min(w, size)
  return (h - ch) // 2, (w - cw) // 2, ch, cw
