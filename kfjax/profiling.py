"""Where a compiled step's device time goes: a kernel-level summary of a JAX profiler trace.

:func:`trace_kernels` runs a function under ``jax.profiler.trace`` and :func:`summarize_trace`
reads the trace it writes: per kernel name, its count and time per call; per class
(:func:`kernel_class`: convolutions and GEMMs, the libraries' layout helpers, and the rest:
XLA's elementwise, reduction and scatter fusions); and how busy the device was over the
traced calls' wall time (a busy share well under 1 means the step waits on launches or the
host, not on the kernels).
"""

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

# Kernel names, in the order they are tested: XLA's own fusions (elementwise, reductions,
# scatters), then cuDNN's / cuBLAS's layout and bookkeeping kernels (channel padding, NCHW↔NHWC,
# split-K reductions, copies), then convolution and GEMM kernels (cuDNN, cuBLAS, CUTLASS).
_XLA_FUSION = re.compile(r'^(loop|input|wrapped)_')
_LAYOUT = re.compile(r'Padding|ToNhwc|ToNchw|tensorTransform|transpose|workspace|splitKreduce'
                     r'|ReduceSplitK|memset|memcpy', re.I)
_MATRIX = re.compile(r'xmma|gemm|cutlass|conv(?!ert)|wgrad|dgrad|fprop|nvjet|winograd|fft', re.I)


def kernel_class(name: str) -> str:
  """'matrix' (convolution / GEMM), 'layout' (the libraries' padding, layout and split-K
  helpers, copies and memsets) or 'other' (XLA's fusions and the rest)."""
  if _XLA_FUSION.search(name):
    return 'other'
  if _LAYOUT.search(name):
    return 'layout'
  return 'matrix' if _MATRIX.search(name) else 'other'


def _union_length(intervals):
  """Total length covered by [start, end) intervals."""
  total, end = 0.0, float('-inf')
  for s, e in sorted(intervals):
    if s > end:
      total, end = total + e - s, e
    elif e > end:
      total, end = total + e - end, e
  return total


def summarize_trace(path: str, n_calls: int = 1, top: int = 20) -> dict:
  """Summarises a Chrome-format trace (``*.trace.json.gz``, ``perfetto_trace.json.gz`` or
  plain JSON) of ``n_calls`` calls.

  Counts the complete ('X') events of the device's kernel streams: the threads named
  ``Stream…`` of ``/device:…`` processes; without any (a CPU trace), the events of every
  thread but the Python one. Returns ``{'wall_ms', 'kernel_ms', 'busy_share', 'classes',
  'kernels'}``, times per call in ms; ``kernels`` holds the ``top`` names by total time.
  """
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rt') as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  procs, threads = {}, {}
  for e in events:
    if e.get('ph') == 'M' and e.get('name') == 'process_name':
      procs[e['pid']] = e['args']['name']
    elif e.get('ph') == 'M' and e.get('name') == 'thread_name':
      threads[(e['pid'], e['tid'])] = e['args']['name']
  streams = {k for k, v in threads.items()
             if procs.get(k[0], '').startswith('/device:') and v.startswith('Stream')}
  if not streams:
    streams = {k for k, v in threads.items() if v != 'python'}
  kernels = [e for e in events                 # ('$file:line' events: Python tracer frames)
             if e.get('ph') == 'X' and (e.get('pid'), e.get('tid')) in streams and 'dur' in e
             and not e.get('name', '').startswith('$')]
  if not kernels:
    raise ValueError(f'{path}: no kernel events in the trace')
  spans = [(float(e['ts']), float(e['ts']) + float(e['dur'])) for e in kernels]
  wall = max(e for _, e in spans) - min(s for s, _ in spans)
  busy = _union_length(spans)
  by_name = collections.defaultdict(lambda: [0, 0.0])
  for e in kernels:
    by_name[e['name']][0] += 1
    by_name[e['name']][1] += float(e['dur'])
  total = sum(d for _, d in by_name.values())
  classes = collections.defaultdict(float)
  for name, (_, dur) in by_name.items():
    classes[kernel_class(name)] += dur
  us = 1e-3 / n_calls                      # trace times are µs; report ms per call
  ranked = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:top]
  return {'wall_ms': wall * us, 'kernel_ms': total * us, 'busy_share': busy / wall if wall else 1.0,
          'classes': {k: {'ms': v * us, 'share': v / total} for k, v in sorted(classes.items())},
          'kernels': [{'name': n[:120], 'class': kernel_class(n), 'count': c / n_calls,
                       'ms': d * us, 'share': d / total} for n, (c, d) in ranked]}


def trace_kernels(fn, n_calls: int = 3, log_dir: str | None = None, top: int = 20) -> dict:
  """Calls ``fn()`` (compiled beforehand) ``n_calls`` times under the JAX profiler and returns
  :func:`summarize_trace` of the trace, with ``trace_dir`` (kept) and ``seconds`` (wall)."""
  import jax  # pylint: disable=import-outside-toplevel
  log_dir = log_dir or tempfile.mkdtemp(prefix='kfjax_trace_')
  t0 = time.perf_counter()
  options = jax.profiler.ProfileOptions()
  options.python_tracer_level = 0          # no Python frames: a smaller trace, read faster
  options.host_tracer_level = 1            # the host's XLA events only (CPU kernels)
  with jax.profiler.trace(log_dir, profiler_options=options):
    for _ in range(n_calls):
      jax.block_until_ready(fn())
  seconds = time.perf_counter() - t0
  paths = sorted(glob.glob(os.path.join(log_dir, '**', '*.trace.json.gz'), recursive=True),
                 key=os.path.getmtime)
  if not paths:
    raise RuntimeError(f'{log_dir}: the profiler wrote no *.trace.json.gz')
  return {**summarize_trace(paths[-1], n_calls, top), 'trace_dir': log_dir, 'seconds': seconds}
