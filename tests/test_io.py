"""Tests for kfjax.io: reading every supported kind of image, errors, atomic writes."""

import os
import struct
import tempfile
import zlib
from pathlib import Path
from unittest import mock

import numpy as np
import scipy.io
import tifffile
from absl.testing import absltest, parameterized
from PIL import Image

from kfjax import io

# A 3x4 RGB image whose values cover 0, 255 and odd values in between.
RGB8 = np.array([[[0, 1, 2], [3, 127, 128], [129, 200, 254], [255, 255, 255]],
                 [[10, 20, 30], [40, 50, 60], [70, 80, 90], [100, 110, 120]],
                 [[255, 0, 0], [0, 255, 0], [0, 0, 255], [17, 34, 51]]], dtype=np.uint8)
GREY8 = RGB8[..., 1]
RGB16 = ((RGB8.astype(np.int64) * 257 + np.arange(36).reshape(3, 4, 3)) % 65536).astype(np.uint16)
RGB16[0, 0] = (0, 1, 65535)  # Extremes; 1 only survives if the low byte is read.


def _expected(samples, scale):
  """What read_image should return for opaque samples divided by ``scale``."""
  values = (samples.astype(np.float64) / scale).astype(np.float32)
  return np.repeat(values[..., None], 3, axis=2) if values.ndim == 2 else values


def _png16(array, filter_type):
  """A 16-bit PNG of uint16 (H, W, C) with every row using one PNG filter (0-4).

  Independent of kfjax's own encoder, so that the reader is checked on every
  filter that other encoders (libpng, OpenCV) use.
  """
  h, w, c = array.shape
  raw = array.astype('>u2').view(np.uint8).reshape(h, w * c * 2).astype(np.int16)
  bpp = 2 * c
  left = np.zeros_like(raw)
  left[:, bpp:] = raw[:, :-bpp]
  up = np.zeros_like(raw)
  up[1:] = raw[:-1]
  up_left = np.zeros_like(raw)
  up_left[1:, bpp:] = raw[:-1, :-bpp]
  p = left + up - up_left
  paeth = np.where((abs(p - left) <= abs(p - up)) & (abs(p - left) <= abs(p - up_left)), left,
                   np.where(abs(p - up) <= abs(p - up_left), up, up_left))
  predictor = [0 * raw, left, up, (left + up) // 2, paeth][filter_type]
  rows = np.concatenate([np.full((h, 1), filter_type), (raw - predictor) % 256], axis=1)
  header = struct.pack('>IIBBBBB', w, h, 16, {2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', header)
          + _chunk(b'IDAT', zlib.compress(rows.astype(np.uint8).tobytes())) + _chunk(b'IEND', b''))


def _chunk(kind, data):
  return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


class IoTestCase(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    # Not self.create_tempdir(): it needs parsed absl flags, which pytest does not do.
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.dir = Path(tmp.name)

  def save_pil(self, name, array, **kwargs):
    path = self.dir / name
    Image.fromarray(array).save(path, **kwargs)
    return path

  def assert_input_error(self, path, fn=None, contains=''):
    """Checks that ``fn(path)`` raises a one-line InputError naming the file."""
    fn = fn or io.read_image
    with self.assertRaises(io.InputError) as cm:
      fn(path)
    message = str(cm.exception)
    self.assertIn(Path(path).name, message)
    self.assertNotIn('\n', message)
    self.assertIn(contains, message)
    return message


class ReadImageTest(IoTestCase):

  def test_rgb8_png(self):
    img, info = io.read_image(self.save_pil('a.png', RGB8))
    self.assertEqual(img.dtype, np.float32)
    np.testing.assert_array_equal(img, _expected(RGB8, 255.0))
    self.assertEqual((info.format, info.mode, info.dtype, info.bit_depth, info.shape),
                     ('PNG', 'RGB', 'uint8', 8, (3, 4, 3)))
    self.assertFalse(info.grey or info.has_alpha or info.alpha_composited)

  def test_image_hw_from_header(self):
    self.assertEqual(io.image_hw(self.save_pil('a.png', RGB8)), (3, 4))
    float_tiff = self.dir / 'g.tif'
    tifffile.imwrite(float_tiff, np.zeros((5, 7), np.float32))
    self.assertEqual(io.image_hw(float_tiff), (5, 7))
    bad = self.dir / 'bad.png'
    bad.write_bytes(b'not an image at all')
    self.assert_input_error(bad, fn=io.image_hw, contains='not a readable image')

  def test_rgba_opaque_alpha_is_dropped(self):
    rgba = np.dstack([RGB8, np.full((3, 4), 255, np.uint8)])
    img, info = io.read_image(self.save_pil('a.png', rgba))
    np.testing.assert_array_equal(img, _expected(RGB8, 255.0))
    self.assertEqual((info.mode, info.shape, info.has_alpha, info.alpha_composited),
                     ('RGBA', (3, 4, 4), True, False))

  def test_rgba_transparent_is_composited_on_white(self):
    alpha = np.array([0, 128, 255, 1] * 3, np.uint8).reshape(3, 4)
    img, info = io.read_image(self.save_pil('a.png', np.dstack([RGB8, alpha])))
    a = alpha[..., None] / 255.0
    np.testing.assert_allclose(img, RGB8 / 255.0 * a + (1 - a), atol=1e-7)
    np.testing.assert_array_equal(img[0, 0], [1, 1, 1])  # Fully transparent: white.
    self.assertTrue(info.alpha_composited)

  def test_grey_is_replicated(self):
    img, info = io.read_image(self.save_pil('g.png', GREY8))
    self.assertEqual(img.shape, (3, 4, 3))
    np.testing.assert_array_equal(img, _expected(GREY8, 255.0))
    self.assertEqual((info.mode, info.shape, info.grey, info.has_alpha), ('L', (3, 4), True, False))

  def test_grey_alpha(self):
    la = np.dstack([GREY8, np.full((3, 4), 255, np.uint8)])
    img, info = io.read_image(self.save_pil('la.png', la))
    np.testing.assert_array_equal(img, _expected(GREY8, 255.0))
    self.assertEqual((info.mode, info.grey, info.has_alpha), ('LA', True, True))

  def test_palette_png(self):
    palette = [0, 0, 0, 255, 0, 0, 10, 20, 30, 255, 255, 255]
    index = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [1, 1, 2, 2]], np.uint8)
    im = Image.fromarray(index, mode='P')
    im.putpalette(palette)
    im.save(self.dir / 'p.png')
    img, info = io.read_image(self.dir / 'p.png')
    rgb = np.array(palette, np.uint8).reshape(4, 3)[index]
    np.testing.assert_array_equal(img, _expected(rgb, 255.0))
    self.assertEqual((info.mode, info.grey, info.has_alpha), ('P', False, False))

  def test_palette_transparency_is_composited(self):
    im = Image.fromarray(np.array([[0, 1]], np.uint8), mode='P')
    im.putpalette([0, 0, 0, 255, 0, 0])
    im.save(self.dir / 'p.png', transparency=0)
    img, info = io.read_image(self.dir / 'p.png')
    np.testing.assert_array_equal(img, [[[1, 1, 1], [1, 0, 0]]])
    self.assertTrue(info.has_alpha and info.alpha_composited)

  def test_grey16_png(self):
    grey = RGB16[..., 0]
    path = self.dir / 'g16.png'
    Image.fromarray(grey).save(path)
    img, info = io.read_image(path)
    np.testing.assert_array_equal(img, _expected(grey, 65535.0))
    self.assertEqual((info.dtype, info.bit_depth, info.grey, info.value_scale),
                     ('uint16', 16, True, 65535.0))
    self.assertTrue(info.high_precision)

  @parameterized.product(channels=(2, 3, 4), filter_type=(0, 1, 2, 3, 4))
  def test_colour16_png_keeps_all_16_bits(self, channels, filter_type):
    samples = np.dstack([RGB16, RGB16[..., :1] // 3 + 1])[..., :channels] if channels != 2 else (
        np.dstack([RGB16[..., 0], 65535 - RGB16[..., 1] // 2]))
    samples[..., -1] = 65535  # Opaque, so colours are read as they are.
    path = self.dir / 'c16.png'
    path.write_bytes(_png16(samples, filter_type))
    img, info = io.read_image(path)
    colour = samples[..., 0] if channels == 2 else samples[..., :3]
    np.testing.assert_array_equal(img, _expected(colour, 65535.0))
    self.assertEqual((info.mode, info.dtype, info.bit_depth, info.shape),
                     ({2: 'LA', 3: 'RGB', 4: 'RGBA'}[channels], 'uint16', 16, (3, 4, channels)))

  def test_float32_tiff_in_range_is_exact(self):
    values = (RGB8 / 255.0).astype(np.float32)
    tifffile.imwrite(self.dir / 'f.tif', values, photometric='rgb')
    img, info = io.read_image(self.dir / 'f.tif')
    np.testing.assert_array_equal(img, values)
    self.assertEqual((info.format, info.dtype, info.bit_depth, info.value_scale, info.mode),
                     ('TIFF', 'float32', 32, 1.0, 'RGB'))

  def test_float_tiff_small_overshoot_is_clipped(self):
    values = np.array([[-0.25, 0.5, 1.25]], np.float32)
    tifffile.imwrite(self.dir / 'f.tiff', values)
    img, info = io.read_image(self.dir / 'f.tiff')
    np.testing.assert_array_equal(img[..., 0], [[0.0, 0.5, 1.0]])
    self.assertEqual((info.value_scale, info.grey), (1.0, True))

  def test_float_tiff_on_another_scale_is_divided_by_its_max(self):
    values = np.array([[0.0, 51.0, 200.0]], np.float32)
    tifffile.imwrite(self.dir / 'f.tif', values)
    img, info = io.read_image(self.dir / 'f.tif')
    np.testing.assert_allclose(img[..., 0], [[0.0, 51 / 200, 1.0]], rtol=1e-7)
    self.assertEqual(info.value_scale, 200.0)

  def test_float_tiff_with_nan_is_an_error(self):
    tifffile.imwrite(self.dir / 'nan.tif', np.array([[0.5, np.nan]], np.float32))
    self.assert_input_error(self.dir / 'nan.tif', contains='NaN')

  def test_uint16_tiff(self):
    tifffile.imwrite(self.dir / 'u.tif', RGB16)
    img, info = io.read_image(self.dir / 'u.tif')
    np.testing.assert_array_equal(img, _expected(RGB16, 65535.0))
    self.assertEqual((info.dtype, info.bit_depth, info.shape), ('uint16', 16, (3, 4, 3)))

  def test_planar_and_grey_uint16_tiff(self):
    tifffile.imwrite(self.dir / 'p.tif', np.moveaxis(RGB16, 2, 0), photometric='rgb',
                     planarconfig='separate')
    np.testing.assert_array_equal(io.read_image(self.dir / 'p.tif')[0], _expected(RGB16, 65535.0))
    tifffile.imwrite(self.dir / 'g.tif', RGB16[..., 2])
    img, info = io.read_image(self.dir / 'g.tif')
    np.testing.assert_array_equal(img, _expected(RGB16[..., 2], 65535.0))
    self.assertTrue(info.grey)

  def test_lzw_tiff_from_pillow(self):
    # tifffile needs imagecodecs for LZW; without it Pillow reads 8-bit TIFFs exactly.
    path = self.save_pil('lzw.tif', RGB8, compression='tiff_lzw')
    np.testing.assert_array_equal(io.read_image(path)[0], _expected(RGB8, 255.0))

  def test_tiff_with_five_channels_is_an_error(self):
    tifffile.imwrite(self.dir / 'c5.tif', np.zeros((3, 4, 5), np.uint8), photometric='minisblack',
                     planarconfig='contig')
    self.assert_input_error(self.dir / 'c5.tif', contains='channels (5)')

  def test_bmp(self):
    img, info = io.read_image(self.save_pil('a.bmp', RGB8))
    np.testing.assert_array_equal(img, _expected(RGB8, 255.0))
    self.assertEqual(info.format, 'BMP')

  def test_jpeg(self):
    flat = np.zeros((16, 16, 3), np.uint8) + np.array([200, 100, 50], np.uint8)
    img, info = io.read_image(self.save_pil('a.jpg', flat, quality=100))
    self.assertEqual(img.shape, (16, 16, 3))
    np.testing.assert_allclose(img, flat / 255.0, atol=2 / 255)
    self.assertEqual((info.format, info.mode, info.grey), ('JPEG', 'RGB', False))
    img, info = io.read_image(self.save_pil('g.jpeg', flat[..., 0], quality=100))
    np.testing.assert_allclose(img, np.full((16, 16, 3), 200 / 255.0), atol=2 / 255)
    self.assertTrue(info.grey)

  def test_format_comes_from_content_not_name(self):
    path = self.save_pil('really_a_jpeg.png', RGB8, format='JPEG')
    self.assertEqual(io.read_image(path)[1].format, 'JPEG')

  def test_truncated_png(self):
    data = self.save_pil('a.png', RGB8).read_bytes()
    (self.dir / 'cut.png').write_bytes(data[:len(data) // 2])
    self.assert_input_error(self.dir / 'cut.png', contains='not a readable image')
    (self.dir / 'no_iend.png').write_bytes(data[:-12])
    self.assert_input_error(self.dir / 'no_iend.png')

  @parameterized.parameters(False, True)
  def test_truncated_jpeg(self, progressive):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = self.save_pil('a.jpg', noise, progressive=progressive).read_bytes()
    for cut in (len(data) // 2, len(data) - 2):  # Half the file; only the end marker lost.
      (self.dir / 'cut.jpg').write_bytes(data[:cut])
      self.assert_input_error(self.dir / 'cut.jpg', contains='not a readable image')

  def test_corrupt_png_crc(self):
    data = bytearray(self.save_pil('a.png', RGB8).read_bytes())
    data[data.index(b'IDAT') + 6] ^= 0xFF
    (self.dir / 'crc.png').write_bytes(bytes(data))
    self.assert_input_error(self.dir / 'crc.png')

  def test_text_file_named_png(self):
    (self.dir / 'notes.png').write_text('this is not\nan image\n')
    self.assert_input_error(self.dir / 'notes.png', contains='not a readable image')

  def test_other_errors(self):
    self.assert_input_error(self.dir / 'missing.png', contains='no such file')
    (self.dir / 'folder.png').mkdir()
    self.assert_input_error(self.dir / 'folder.png', contains='folder')
    (self.dir / 'empty.png').write_bytes(b'')
    self.assert_input_error(self.dir / 'empty.png', contains='empty')
    Image.new('RGB', (2, 2)).save(self.dir / 'a.gif')
    self.assert_input_error(self.dir / 'a.gif', contains='unsupported image format GIF')
    self.assert_input_error('bad\0name.png', contains='cannot read')

  def test_zero_size(self):
    header = struct.pack('>IIBBBBB', 0, 3, 8, 2, 0, 0, 0)
    (self.dir / 'zero.png').write_bytes(b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', header)
                                        + _chunk(b'IDAT', zlib.compress(b'\0' * 3))
                                        + _chunk(b'IEND', b''))
    self.assert_input_error(self.dir / 'zero.png', contains='zero size')
    with self.assertWarns(UserWarning):  # tifffile: 'nonconformant TIFF'.
      tifffile.imwrite(self.dir / 'zero.tif', np.zeros((0, 5), np.uint8))
    self.assert_input_error(self.dir / 'zero.tif', contains='zero size')

  def test_error_message_is_one_line_even_for_odd_problems(self):
    error = io.InputError('first\nsecond', path='dir/x.png')
    self.assertEqual(str(error), 'dir/x.png: first second')
    self.assertEqual(str(io.InputError('bad scale')), 'bad scale')


class ListImagesTest(IoTestCase):

  def test_file(self):
    path = self.save_pil('a.PNG', RGB8)
    self.assertEqual(io.list_images(path), [path])

  def test_folder_is_sorted_non_recursive_and_skips_others(self):
    for name in ('b.jpg', 'a.png', 'c.TIF', 'd.tiff', 'e.bmp', 'f.jpeg', 'notes.txt', '._a.png'):
      (self.dir / name).write_bytes(b'x')
    (self.dir / 'sub').mkdir()
    (self.dir / 'sub' / 'z.png').write_bytes(b'x')
    names = [p.name for p in io.list_images(self.dir)]
    self.assertEqual(names, ['a.png', 'b.jpg', 'c.TIF', 'd.tiff', 'e.bmp', 'f.jpeg'])

  def test_errors(self):
    self.assert_input_error(self.dir / 'missing', io.list_images, 'no such file')
    empty = self.dir / 'empty'
    empty.mkdir()
    self.assert_input_error(empty, io.list_images, 'no image files')
    (empty / 'readme.txt').write_text('hi')
    self.assert_input_error(empty, io.list_images, 'no image files')
    (self.dir / 'anim.gif').write_bytes(b'GIF89a')
    self.assert_input_error(self.dir / 'anim.gif', io.list_images, 'unsupported file type')


class WriteImageTest(IoTestCase):

  @parameterized.parameters(
      ('rgb8.png', RGB8), ('grey8.png', GREY8), ('grey16.png', RGB16[..., 0]),
      ('rgb16.png', RGB16), ('rgba16.png', np.dstack([RGB16, np.full((3, 4), 65535, np.uint16)])),
      ('rgb16.tif', RGB16), ('grey8.bmp', GREY8), ('rgb8.tiff', RGB8))
  def test_integer_round_trip_is_exact(self, name, array):
    path = self.dir / name
    io.write_image(path, array)
    stored = tifffile.imread(path) if name.endswith(('.tif', '.tiff')) else np.asarray(
        Image.open(path))
    if array.dtype == np.uint16 and array.ndim == 3 and name.endswith('.png'):
      stored = None  # Pillow cannot hold 16-bit colour: check through read_image below.
    if stored is not None:
      np.testing.assert_array_equal(stored, array)
    img, info = io.read_image(path)
    colour = array[..., :3] if array.ndim == 3 else array
    np.testing.assert_array_equal(io.to_output_mode(img, info), colour)
    self.assertEqual(info.dtype, array.dtype.name)
    self.assertEqual(os.listdir(self.dir), [name])  # No temporary file left.

  def test_float_with_info_is_written_in_the_input_mode(self):
    grey16 = io.ImageInfo(format='PNG', mode='I;16', dtype='uint16', bit_depth=16, shape=(3, 4),
                          has_alpha=False, grey=True)
    img = _expected(RGB16[..., 1], 65535.0)
    io.write_image(self.dir / 'hr.png', img, grey16)
    with Image.open(self.dir / 'hr.png') as im:
      self.assertEqual(im.mode, 'I;16')
      np.testing.assert_array_equal(np.asarray(im), RGB16[..., 1])
    io.write_image(self.dir / 'plain.png', img)  # No info: uint8 RGB.
    with Image.open(self.dir / 'plain.png') as im:
      self.assertEqual(im.mode, 'RGB')

  def test_to_output_mode(self):
    rgb = np.array([[[1.0, 0.0, 0.0], [0.2, 0.4, 0.6]]])
    grey = io.ImageInfo('PNG', 'L', 'uint8', 8, (1, 2), False, True)
    np.testing.assert_array_equal(io.to_output_mode(rgb, grey),
                                  [[round(0.299 * 255), round((0.0598 + 0.2348 + 0.0684) * 255)]])
    out = io.to_output_mode(np.array([[[-1.0, 0.5, 2.0]]]), None)
    self.assertEqual(out.dtype, np.uint8)
    np.testing.assert_array_equal(out, [[[0, 128, 255]]])
    with self.assertRaises(ValueError):
      io.to_output_mode(np.full((1, 1, 3), np.nan), None)

  def test_read_then_write_reproduces_8_bit_and_16_bit_inputs(self):
    for name, array in (('a.png', RGB8), ('g.png', GREY8), ('b.png', RGB16)):
      src = self.dir / name
      if array.dtype == np.uint16:
        src.write_bytes(io.encode_png16(array))
      else:
        Image.fromarray(array).save(src)
      img, info = io.read_image(src)
      io.write_image(self.dir / ('out_' + name), img, info)
      np.testing.assert_array_equal(io.read_image(self.dir / ('out_' + name))[0], img)


class AtomicWriteTest(IoTestCase):

  def test_writers_round_trip_and_leave_no_temp_files(self):
    io.atomic_write_bytes(self.dir / 'a.bin', b'\x00\x01')
    io.atomic_write_text(self.dir / 'a.csv', 'x,y\r\n1,2\n')
    kernel = np.arange(6, dtype=np.float32).reshape(2, 3)
    io.atomic_save_npy(self.dir / 'kernel.npy', kernel)
    io.atomic_save_mat(self.dir / 'kernel.mat', {'Kernel': kernel})
    self.assertEqual((self.dir / 'a.bin').read_bytes(), b'\x00\x01')
    self.assertEqual((self.dir / 'a.csv').read_bytes(), b'x,y\r\n1,2\n')
    np.testing.assert_array_equal(np.load(self.dir / 'kernel.npy'), kernel)
    np.testing.assert_array_equal(scipy.io.loadmat(self.dir / 'kernel.mat')['Kernel'], kernel)
    self.assertCountEqual(os.listdir(self.dir), ['a.bin', 'a.csv', 'kernel.npy', 'kernel.mat'])

  def test_new_file_follows_umask(self):
    umask = os.umask(0o022)
    try:
      io.atomic_write_text(self.dir / 'a.txt', 'x')
      self.assertEqual((self.dir / 'a.txt').stat().st_mode & 0o777, 0o644)
    finally:
      os.umask(umask)

  def test_failure_midway_keeps_the_old_file(self):
    dest = self.dir / 'kernel.npy'
    io.atomic_save_npy(dest, np.ones(3))
    before = dest.read_bytes()

    def partial_then_fail(f, *args, **kwargs):
      del args, kwargs
      f.write(b'partial garbage')
      raise OSError('disk full')

    with mock.patch.object(np, 'save', side_effect=partial_then_fail):
      with self.assertRaisesRegex(OSError, 'disk full'):
        io.atomic_save_npy(dest, np.zeros(3))
    self.assertEqual(dest.read_bytes(), before)
    self.assertEqual(os.listdir(self.dir), ['kernel.npy'])

    with self.assertRaises(RuntimeError):
      with io.atomic_path(self.dir / 'hr.png') as tmp:
        self.assertEqual((tmp.parent, tmp.suffix), (self.dir, '.png'))
        tmp.write_bytes(b'half')
        raise RuntimeError('interrupted')
    self.assertEqual(os.listdir(self.dir), ['kernel.npy'])


class CheckOutputDirTest(IoTestCase):

  def setUp(self):
    super().setUp()
    self.inputs = self.dir / 'inputs'
    self.inputs.mkdir()
    self.image = self.save_pil('inputs/a.png', RGB8)

  def test_refuses_the_input_folder_and_anything_inside_it(self):
    for out in (self.inputs, self.inputs / 'out', self.inputs / 'x' / '..' / 'y'):
      self.assert_input_error(out, lambda o: io.check_output_dir(o, self.inputs), 'inside')
    (self.dir / 'link').symlink_to(self.inputs)
    self.assert_input_error(self.dir / 'link' / 'out',
                            lambda o: io.check_output_dir(o, self.inputs), 'inside')
    self.assertFalse((self.inputs / 'out').exists())

  def test_refuses_the_input_files_folder_but_not_a_subfolder(self):
    self.assert_input_error(self.inputs, lambda o: io.check_output_dir(o, self.image),
                            'folder of the input file')
    out = io.check_output_dir(self.inputs / 'results', self.image)
    self.assertTrue(out.is_dir())

  def test_creates_a_new_folder_and_leaves_no_probe(self):
    out = io.check_output_dir(self.dir / 'runs' / 'one', self.inputs)
    self.assertEqual(out, (self.dir / 'runs' / 'one').resolve())
    self.assertEqual(os.listdir(out), [])

  def test_refuses_a_path_that_cannot_be_a_folder(self):
    blocker = self.dir / 'somefile'
    blocker.write_text('x')
    self.assert_input_error(blocker / 'out', lambda o: io.check_output_dir(o, self.inputs),
                            'cannot create')
    self.assert_input_error(blocker, lambda o: io.check_output_dir(o, self.inputs),
                            'not a folder')


if __name__ == '__main__':
  absltest.main()
