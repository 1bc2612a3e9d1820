"""kfjax.profiling: a hand-made GPU trace summarised exactly, and a real CPU trace."""

import gzip
import json
import os
import tempfile

import jax
import jax.numpy as jnp
from absl.testing import absltest

from kfjax import profiling


def _write_trace(events) -> str:
  path = os.path.join(tempfile.mkdtemp(), 'perfetto_trace.json.gz')
  meta = [{'ph': 'M', 'pid': 1, 'name': 'process_name', 'args': {'name': '/host:CPU'}},
          {'ph': 'M', 'pid': 1, 'tid': 1, 'name': 'thread_name', 'args': {'name': 'python'}},
          {'ph': 'M', 'pid': 2, 'name': 'process_name', 'args': {'name': '/device:GPU:0'}},
          {'ph': 'M', 'pid': 2, 'tid': 7, 'name': 'thread_name', 'args': {'name': 'Stream #7'}},
          {'ph': 'M', 'pid': 2, 'tid': 9, 'name': 'thread_name', 'args': {'name': 'XLA Ops'}}]
  with gzip.open(path, 'wt') as f:
    json.dump({'traceEvents': meta + events}, f)
  return path


class SummarizeTest(absltest.TestCase):

  def test_hand_made_gpu_trace(self):
    k = lambda name, ts, dur, tid=7: {'ph': 'X', 'pid': 2, 'tid': tid, 'name': name,
                                      'ts': ts, 'dur': dur}
    events = [
        k('sm90_xmma_fprop_implicit_gemm_bf16', 0, 600),     # matrix, 600 µs
        k('loop_add_fusion', 700, 200),                       # other, after a 100 µs gap
        k('sm90_xmma_fprop_implicit_gemm_bf16', 1000, 600),   # second call
        k('loop_add_fusion', 1700, 200),
        k('fusion.3', 0, 2000, tid=9),                        # derived line: not a kernel
        {'ph': 'X', 'pid': 1, 'tid': 1, 'name': 'PjitFunction', 'ts': 0, 'dur': 3000},
    ]
    s = profiling.summarize_trace(_write_trace(events), n_calls=2)
    self.assertAlmostEqual(s['wall_ms'], 1.9 / 2)            # 0 … 1900 µs over two calls
    self.assertAlmostEqual(s['kernel_ms'], 1.6 / 2)
    self.assertAlmostEqual(s['busy_share'], 1600 / 1900)
    self.assertAlmostEqual(s['classes']['matrix']['share'], 0.75)
    self.assertAlmostEqual(s['classes']['other']['ms'], 0.2)
    top = s['kernels'][0]
    self.assertEqual((top['class'], top['count'], top['ms']), ('matrix', 1.0, 0.6))

  def test_kernel_classes(self):
    for name, cls in [
        ('sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc', 'matrix'),
        ('void cudnn::cnn::conv2d_grouped_direct_kernel<false, true>', 'matrix'),
        ('nvjet_sm90_tst_64x32_64x16_1x2_h_bz_splitK_NTT', 'matrix'),
        ('void nhwcAddPaddingKernel<__nv_bfloat16, (cudnnKernelDataType_t)0>', 'layout'),
        ('void cublasLt::splitKreduce_kernel<32, 16, int, float>', 'layout'),
        ('Memset 3', 'layout'),
        ('input_convert_reduce_fusion', 'other'),      # 'convert' is not a convolution
        ('loop_add_fusion_10', 'other'),
        ('input_scatter_fusion_9', 'other')]:
      self.assertEqual(profiling.kernel_class(name), cls, name)

  def test_overlapping_kernels_count_once_in_busy_share(self):
    k = lambda ts, dur: {'ph': 'X', 'pid': 2, 'tid': 7, 'name': 'gemm', 'ts': ts, 'dur': dur}
    s = profiling.summarize_trace(_write_trace([k(0, 100), k(50, 100), k(300, 100)]))
    self.assertAlmostEqual(s['busy_share'], 250 / 400)

  def test_no_kernels_is_an_error(self):
    with self.assertRaisesRegex(ValueError, 'no kernel events'):
      profiling.summarize_trace(_write_trace([]))


class TraceTest(absltest.TestCase):

  def test_cpu_trace_of_a_compiled_call(self):
    f = jax.jit(lambda x: jnp.tanh(x @ x).sum())
    x = jnp.ones((256, 256))
    f(x).block_until_ready()                             # compiled beforehand, as documented
    s = profiling.trace_kernels(lambda: f(x), n_calls=2)
    self.assertGreater(s['kernel_ms'], 0)
    self.assertNotEmpty(s['kernels'])
    self.assertTrue(os.path.isdir(s['trace_dir']))


if __name__ == '__main__':
  absltest.main()
