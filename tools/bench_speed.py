r"""Speed benchmark: Phase-1 and Phase-2 step rates, memory, and end-to-end time.

  python tools/bench_speed.py --out=bench/speed                 # sizes picked per backend
  python tools/bench_speed.py --out=bench/speed --quick         # a 1-minute smoke run
  # where one Phase-2 step's time goes, kernel by kernel (GPU; kfjax.profiling)
  python tools/bench_speed.py --out=bench/prof --phase1=false --end_to_end=false \
      --phase2_sizes=2048x1344:bfloat16 --profile
  # Phase 1 only: steps and seconds to the PD loss plateau per batch size (cpu variant)
  python tools/bench_speed.py --out=bench/plateau_cpu --phase1=false --phase2_sizes=none \
      --end_to_end=false --plateau_batches=1,2,4,8,16 --plateau_variant=cpu

Writes OUT/speed.json and OUT/speed.md. Every rate is measured after
compilation (compile time reported apart). FLOPs are counted from each step's
jaxpr (every convolution and matmul, forward and backward; kfjax.flops) and
compared with the device's matmul rate measured in the same run.
"""

import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from configs import x4
from kfjax import app as kfapp
from kfjax import diffusion, flops, io, phase1, phase2, pipeline, profiling

_OUT = flags.DEFINE_string('out', 'bench/speed', 'Output folder.')
_QUICK = flags.DEFINE_bool('quick', False, 'Smallest sizes only (smoke test).')
_E2E = flags.DEFINE_bool('end_to_end', True, 'Also time whole runs per variant.')
_BATCH = flags.DEFINE_integer('batch_cases', 0, 'If > 0, time this many 64×64 cases of the '
                              'batch_variant run at once (vmap) vs one by one.')
_BATCH_VARIANT = flags.DEFINE_string('batch_variant', 'cpu', 'Config variant of --batch_cases.')
_PHASE1 = flags.DEFINE_bool('phase1', True, 'Time the Phase-1 grid (width × batch × dtype).')
_SIZES = flags.DEFINE_list('phase2_sizes', [], 'Phase-2 HR sizes as WxH or WxH:dtype (default: '
                           '256x256 on CPU; 256x256,512x512,1024x1024,2048x1344 on a GPU; '
                           '"none": skip Phase 2).')
_PARTS = flags.DEFINE_bool('phase2_parts', False, 'Also time the Phase-2 step\'s PD part '
                            '(forward + input gradient) and U-Net part alone at each size.')
_PROFILE = flags.DEFINE_bool('profile', False, 'Also trace each Phase-2 size\'s timed call with '
                             'the JAX profiler: kernel time by name and class (matrix, layout or '
                             'other) and the device\'s busy share (kfjax.profiling).')
_DTYPES = flags.DEFINE_list('phase2_dtypes', [], 'Phase-2 dtypes of sizes given without one '
                            '(default: float32 on CPU; bfloat16,float32 on a GPU).')
_PLATEAU = flags.DEFINE_list('plateau_batches', [], 'If given: train the PD of --plateau_variant '
                             'with each of these batch sizes and report the steps and seconds '
                             'each needs to reach the loss plateau.')
_PLATEAU_VARIANT = flags.DEFINE_string('plateau_variant', 'cpu', 'Config variant of the plateau '
                                       'runs (its width, crop, lr, EMA, dtype, driver).')
_PLATEAU_STEPS = flags.DEFINE_integer('plateau_steps', 0, 'Steps per plateau run (0: twice the '
                                      "variant's pd.steps).")
_PLATEAU_EVERY = flags.DEFINE_integer('plateau_every', 50, 'Evaluate the fixed loss every this '
                                      'many steps (one compiled chunk).')
_PLATEAU_TOL = flags.DEFINE_float('plateau_tol', 0.05, 'The plateau: the fixed loss of the EMA '
                                  'weights within this fraction of the best of all runs.')
_PLATEAU_LR = flags.DEFINE_string('plateau_lr', None, "LR image of the plateau runs (default: "
                                  "the variant's embedded demo LR).")
_CONV_FORMS = flags.DEFINE_list('conv_forms', [], 'If given: for each number N of cases, time a '
                                'stack of per-case 3x3 convs (forward and backward) in the '
                                'forms a batched run can take (bench_conv_forms).')
_CONV_FORMS_SIZE = flags.DEFINE_integer('conv_forms_size', 256, 'Image side of --conv_forms '
                                        '(the blind144 crop HR: 256).')
_CONV_FORMS_WIDTH = flags.DEFINE_integer('conv_forms_width', 64, 'Channels of --conv_forms '
                                         '(the cpu variant: PD 64, U-Net 32).')
_E2E_VARIANTS = flags.DEFINE_list('e2e_variants', [], 'End-to-end variants (default: cpu on '
                                  'CPU; cpu,default on a GPU).')


def _time(fn, min_seconds=2.0, min_calls=3):
  """(first-call seconds, mean seconds per later call)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  n, t0 = 0, time.perf_counter()
  while n < min_calls or time.perf_counter() - t0 < min_seconds:
    jax.block_until_ready(fn())
    n += 1
  return first, (time.perf_counter() - t0) / n


def matmul_rate(dtype, n):
  """Measured FLOP/s of an n×n×n matmul in ``dtype``."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
  f = jax.jit(lambda a, b: a @ b)
  _, dt = _time(lambda: f(a, b), min_seconds=1.0)
  return 2 * n ** 3 / dt


def bench_phase1(width, batch, dtype, chunk, driver):
  c = x4.get_config('default')
  c.pd.width, c.pd.batch, c.compute_dtype = width, batch, dtype
  c.pd.chunk, c.pd.steps, c.pd.driver = chunk, 10 ** 9, driver
  lr = jax.random.uniform(jax.random.PRNGKey(0), (64, 64, 3), minval=-1, maxval=1)
  pd, opt, run, chunk, driver = pipeline._phase1_fns(
      pipeline._sections_json(c, pipeline.PHASE1_SECTIONS), 64)
  state = [phase1.init_state(pd, opt, jax.random.PRNGKey(0), 64)]
  step = phase1.make_train_step(pd, opt, diffusion.linear_schedule(), crop=64, batch=batch,
                                t_max=1000, ema_decay=0.999)
  step_flops = flops.count_flops(step, state[0], jax.random.PRNGKey(0), lr)

  def call():
    state[0], loss = run(state[0], jax.random.PRNGKey(1), lr)
    return loss
  first, dt = _time(call)
  return {'width': width, 'batch': batch, 'dtype': dtype, 'driver': driver, 'chunk': chunk,
          'compile_s': first - dt, 'steps_per_s': chunk / dt, 'ms_per_step': 1e3 * dt / chunk,
          'gflop_per_step': step_flops / 1e9, 'tflops': step_flops * chunk / dt / 1e12}


def bench_phase2(hw, dtype, n_iter, driver, variant='default', parts=False, profile_dir=None):
  c = x4.get_config(variant)
  c.compute_dtype, c.phase2.driver = dtype, driver
  h, w = hw
  lr = jax.random.uniform(jax.random.PRNGKey(0), (h // 4, w // 4, 3), minval=-1, maxval=1)
  models, opt, run, schedule, driver = pipeline._phase2_fns(
      pipeline._sections_json(c, pipeline.PHASE2_SECTIONS))
  pd_params = models.pd.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)),
                             jnp.zeros((1,), jnp.int32))
  data = phase2.Data(lr=lr, pd_params=pd_params)
  state = [phase2.init_state(models.unet, models.inr, opt, jax.random.PRNGKey(0), lr,
                             scale=4, mode='full')]
  inner = phase2.make_inner_step(models.unet, models.inr, models.pd, opt, schedule, scale=4,
                                 kernel_size=c.kernel.size)
  ts1 = phase2.Timestep(jnp.int32(100), jnp.int32(100), jnp.bool_(True))
  eps = jnp.zeros(state[0].x0_prev.shape)
  step_flops = flops.count_flops(inner, state[0], ts1, eps, data)
  ts = phase2.Timestep(jnp.array([100]), jnp.array([100]), jnp.array([False]))

  def call():
    state[0], trace = run(state[0], jax.random.PRNGKey(1), ts, n_iter, data)
    return trace['loss_last']
  first, dt = _time(call, min_seconds=3.0)
  dev = jax.devices()[0]
  stats = dev.memory_stats() if hasattr(dev, 'memory_stats') else None
  peak = (stats or {}).get('peak_bytes_in_use')
  row = {'hr': f'{w}x{h}', 'dtype': dtype, 'driver': driver, 'n_iter': n_iter,
         'compile_s': first - dt, 'inner_steps_per_s': n_iter / dt,
         'ms_per_inner_step': 1e3 * dt / n_iter, 'gflop_per_step': step_flops / 1e9,
         'tflops': step_flops * n_iter / dt / 1e12,
         'peak_gib': None if peak is None else peak / 2 ** 30,
         'wide_gemm_share': wide_gemm_share(inner, state[0], ts1, eps, data)}
  if parts:
    row.update(bench_phase2_parts(models, pd_params, state[0]))
  if profile_dir:
    try:
      prof = profiling.trace_kernels(call, n_calls=1, log_dir=profile_dir)
    except Exception as e:  # pylint: disable=broad-except
      # A profiler that cannot run here (e.g. no CUPTI) must not cost the row's timings.
      logging.warning('profile of %s %s failed: %s', row['hr'], dtype, e)
      return {**row, 'profile_error': str(e)}
    per_step = lambda ms: ms / n_iter
    row.update({'busy_share': prof['busy_share'],
                'kernel_ms_per_step': per_step(prof['kernel_ms']),
                'matrix_ms_per_step': per_step(prof['classes'].get('matrix', {}).get('ms', 0.0)),
                'profile': prof})
  return row


def wide_gemm_share(fn, *args, wide=64):
  """Share of ``fn``'s convolution FLOPs whose GEMM has N and K ≥ ``wide`` (matrix-unit
  friendly; M, the pixels, is large at HR sizes): a bound on what the conv shapes allow."""
  shapes = flops.conv_gemm_shapes(fn, *args)
  return sum(f for (_, n, k), f in shapes.items() if min(n, k) >= wide) / sum(shapes.values())


def bench_phase2_parts(models, pd_params, state):
  """The inner step's two heavy parts timed alone at the step's HR size: the frozen PD's
  forward + input gradient (once per inner step) and one U-Net forward + gradient (params
  and input; the step runs the U-Net twice). Tells whether the step's rate is lost in the
  convolutions themselves or between them."""
  x = state.x0_prev
  t = jnp.full((1,), 100, jnp.int32)
  pd_fn = jax.jit(lambda p, z: jax.vjp(lambda y: models.pd.apply(p, y, t), z)[1](z)[0])
  unet_fn = jax.jit(jax.grad(lambda p, z: jnp.sum(models.unet.apply(p, z) ** 2), (0, 1)))
  row = {}
  for name, fn, args in (('pd', pd_fn, (pd_params, x)), ('unet', unet_fn, (state.unet_params, x))):
    fl = flops.count_flops(fn, *args)
    _, dt = _time(lambda fn=fn, args=args: fn(*args), min_seconds=1.0)
    row.update({f'{name}_ms': 1e3 * dt, f'{name}_gflop': fl / 1e9,
                f'{name}_tflops': fl / dt / 1e12})
  return row


def _diffusion_config(variant):
  """The variant's config with the Gaussian-blur test off: these benchmarks time both phases,
  which the test skips where it fires (the smooth synthetic LR below has evidence gain ≈ −6)."""
  c = x4.get_config(variant)
  c.phase2.gaussian_test = 0.0
  return c


def bench_end_to_end(variant, lr_hw):
  c = _diffusion_config(variant)
  rng = np.random.default_rng(0)
  # A smooth random texture: LR-like content without needing any data file.
  lr = rng.random((lr_hw[0] // 8 + 1, lr_hw[1] // 8 + 1, 3)).astype(np.float32)
  lr = np.asarray(jax.image.resize(lr, (*lr_hw, 3), 'bicubic')).clip(0, 1)
  t0 = time.perf_counter()
  _, _, info = pipeline.super_resolve(lr, c, log=lambda m: None)
  return {'variant': variant, 'lr': f'{lr_hw[1]}x{lr_hw[0]}', 'total_s': time.perf_counter() - t0,
          'phase1_s': info['phase1']['seconds'], 'phase2_s': info['phase2']['seconds'],
          'phase1_steps': info['phase1']['steps'], 'inner_steps': info['phase2']['inner_steps']}


def bench_batched(variant, n, lr_hw=(64, 64)):
  """Throughput of n same-size cases run at once (vmap) vs one by one, compile excluded."""
  c = _diffusion_config(variant)
  rng = np.random.default_rng(0)
  lrs = rng.random((n, *lr_hw, 3)).astype(np.float32)
  quiet = lambda m: None
  t0 = time.perf_counter()
  pipeline.super_resolve_batch(lrs, c, log=quiet)            # compile
  batched_first = time.perf_counter() - t0
  logging.info('batched: first call (compile included) %.1f s', batched_first)
  t0 = time.perf_counter()
  _, _, info = pipeline.super_resolve_batch(lrs, c, log=quiet)
  batched = time.perf_counter() - t0
  logging.info('batched: %d cases in %.1f s (Phase 1 %.1f s, Phase 2 and final steps %.1f s)',
               n, batched, info['phase1_seconds'], info['phase2_seconds'])
  t0 = time.perf_counter()
  pipeline.super_resolve(lrs[0], c, log=quiet)               # compile
  sequential_first = time.perf_counter() - t0
  t0 = time.perf_counter()
  for i, lr in enumerate(lrs):
    pipeline.super_resolve(lr, c, log=quiet)
    logging.info('sequential: %d cases in %.1f s', i + 1, time.perf_counter() - t0)
  sequential = time.perf_counter() - t0
  return {'variant': variant, 'cases': n, 'lr': f'{lr_hw[1]}x{lr_hw[0]}',
          'batched_s': batched, 'sequential_s': sequential, 'speedup': sequential / batched,
          'batched_first_s': batched_first, 'sequential_first_s': sequential_first,
          'batched_phase1_s': info['phase1_seconds'], 'batched_phase2_s': info['phase2_seconds']}


def _conv_xla(x, w):
  """A 3×3 'SAME' conv as XLA's convolution (``vmap`` over w makes it a grouped conv)."""
  return jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _conv_im2col(x, w):
  """The same conv as one matmul over the 9 shifted copies (``vmap``: a batched matmul)."""
  kh, kw, c, f = w.shape
  h, wd = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2), (0, 0)))
  cols = jnp.concatenate([xp[:, i:i + h, j:j + wd] for i in range(kh) for j in range(kw)], -1)
  return jnp.einsum('nhwk,kf->nhwf', cols, w.reshape(kh * kw * c, f))


def bench_conv_forms(n, size, width, layers=4):
  """Per-case weights, n cases: a stack of ``layers`` 3×3 convs + SiLU, forward and backward.

  Times three forms of the batched run, compile excluded: ``grouped`` (``vmap``
  of XLA's conv, which becomes one conv with ``feature_group_count`` n, as in
  ``super_resolve_batch``), ``im2col`` (``vmap`` of shifted copies and a matmul:
  a batched matmul) and ``sequential`` (the one-case XLA program called n
  times). Also reports how far im2col's gradients are from grouped's.
  """
  def loss(conv):
    def f(ws, x):
      for w in ws:
        x = jax.nn.silu(conv(x, w))
      return jnp.mean(x ** 2)
    return jax.grad(f)
  key = jax.random.PRNGKey(0)
  ws = [jax.random.normal(jax.random.fold_in(key, i), (n, 3, 3, width, width)) / (3 * width ** 0.5)
        for i in range(layers)]
  x = jax.random.normal(key, (n, 1, size, size, width))
  grads, row = {}, {'cases': n, 'size': size, 'width': width, 'layers': layers,
                    'gflop': 3 * 2 * n * size * size * 9 * width * width * layers / 1e9}
  for name, conv in (('grouped', _conv_xla), ('im2col', _conv_im2col)):
    f = jax.jit(jax.vmap(loss(conv)))
    row[f'{name}_compile_s'], dt = _time(lambda f=f: f(ws, x), min_seconds=1.0)
    row[f'{name}_ms'] = 1e3 * dt
    grads[name] = f(ws, x)
  one = jax.jit(loss(_conv_xla))
  per_case = [([w[i] for w in ws], x[i]) for i in range(n)]
  row['sequential_compile_s'], dt = _time(lambda: [one(*a) for a in per_case], min_seconds=1.0)
  row['sequential_ms'] = 1e3 * dt
  for name in ('grouped', 'im2col'):
    row[f'{name}_speedup'] = row['sequential_ms'] / row[f'{name}_ms']
  row['im2col_max_abs_diff'] = max(float(jnp.max(jnp.abs(a - b)))
                                   for a, b in zip(grads['grouped'], grads['im2col']))
  return row


def bench_plateau(variant, batches, steps, every, lr01, tol):
  """Seconds to the Phase-1 loss plateau per batch size, on one LR image.

  Each run trains the variant's PD (its production runner, ``every`` steps per
  compiled call) and evaluates the EMA weights after each call on one fixed set
  of 64 crops, timesteps and noises (:func:`kfjax.phase1.make_eval_loss`). The
  plateau is the best fixed loss of all runs, plus ``tol`` of it; a run reaches
  it at its first evaluation at or below that. Seconds = steps × the median
  seconds per step of the run's calls after the first (compilation excluded).
  """
  c = x4.get_config(variant)
  image = jnp.asarray(np.asarray(lr01, np.float32) * 2.0 - 1.0)
  crop = min(c.pd.crop, image.shape[0], image.shape[1])
  schedule = diffusion.linear_schedule(**c.diffusion)
  runs = []
  for batch in batches:
    c.pd.batch, c.pd.chunk, c.pd.steps = batch, every, steps
    # pylint: disable-next=protected-access
    sections = pipeline._sections_json(c, pipeline.PHASE1_SECTIONS)
    # pylint: disable-next=protected-access
    pd, opt, run, _, driver = pipeline._phase1_fns(sections, crop)
    eval_loss = phase1.make_eval_loss(pd, schedule, image, jax.random.PRNGKey(123), crop=crop,
                                      n=64, t_max=min(c.pd.t_max, schedule.num_steps))
    state = phase1.init_state(pd, opt, jax.random.fold_in(jax.random.PRNGKey(c.seed), 0), crop)
    key = jax.random.PRNGKey(1)
    curve, times = [], []
    for _ in range(max(2, steps // every)):
      t0 = time.perf_counter()
      state, loss = run(state, key, image)
      jax.block_until_ready(loss)
      times.append(time.perf_counter() - t0)
      curve.append(float(eval_loss(state.ema_params)))
    per_call = float(np.median(times[1:]))
    runs.append({'variant': variant, 'batch': batch, 'driver': driver, 'every': every,
                 'ms_per_step': 1e3 * per_call / every, 'compile_s': times[0] - per_call,
                 'final_loss': curve[-1], 'best_loss': min(curve), 'curve': curve})
    logging.info('plateau: batch %d, %.1f ms/step, fixed loss %s', batch, runs[-1]['ms_per_step'],
                 ' '.join(f'{v:.4f}' for v in curve))
  target = (1.0 + tol) * min(r['best_loss'] for r in runs)
  for r in runs:
    hit = next((i for i, v in enumerate(r['curve']) if v <= target), None)
    r['plateau_loss'] = target
    r['steps_to_plateau'] = None if hit is None else (hit + 1) * every
    r['seconds_to_plateau'] = (None if hit is None
                               else r['steps_to_plateau'] * r['ms_per_step'] / 1e3)
  return runs


def _table(rows, cols):
  out = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
  for r in rows:
    cells = []
    for k in cols:
      v = r.get(k)
      cells.append('–' if v is None else f'{v:.3g}' if isinstance(v, float) else str(v))
    out.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(out)


def _report(res, out):
  """Writes OUT/speed.json and OUT/speed.md (atomically) from what is measured so far."""
  peak = res['matmul_tflops']
  for r in res.get('phase1', []) + res.get('phase2', []):
    r['fraction_of_matmul'] = r['tflops'] / peak[r['dtype']]
    for part in ('pd', 'unet'):
      if f'{part}_tflops' in r:
        r[f'{part}_fraction'] = r[f'{part}_tflops'] / peak[r['dtype']]
  os.makedirs(out, exist_ok=True)
  io.atomic_write_text(os.path.join(out, 'speed.json'), json.dumps(res, indent=2) + '\n')
  md = [f'# Speed: {res["device"]} ({res["backend"]}), jax {res["jax"]}', '',
        f'- command: `{res["command"]}`', f'- git commit: `{res["git_commit"]}`',
        '- measured matmul rate: ' + ', '.join(f'{k} {v:.1f} TFLOP/s' for k, v in peak.items()),
        '', '## Phase 1 (PD training step, 64×64 crops)', '',
        _table(res.get('phase1', []), ['width', 'batch', 'dtype', 'driver', 'steps_per_s',
                                       'ms_per_step', 'gflop_per_step', 'tflops',
                                       'fraction_of_matmul', 'compile_s']),
        '', '## Phase 2 (one inner step: U-Net ×2, PD fwd+bwd, INR, downscale)', '',
        _table(res.get('phase2', []), ['hr', 'dtype', 'driver', 'inner_steps_per_s',
                                       'ms_per_inner_step', 'gflop_per_step', 'tflops',
                                       'fraction_of_matmul', 'peak_gib', 'compile_s',
                                       'wide_gemm_share', 'pd_ms', 'pd_fraction', 'unet_ms',
                                       'unet_fraction', 'busy_share', 'kernel_ms_per_step',
                                       'matrix_ms_per_step']),
        *_profile_tables(res.get('phase2', [])),
        '', '## End to end (synthetic LR, compile included)', '',
        _table(res.get('end_to_end', []), ['variant', 'lr', 'total_s', 'phase1_s', 'phase2_s',
                                           'phase1_steps', 'inner_steps']),
        '', '## Batched cases (vmap) vs one by one, compile excluded', '',
        _table(res.get('batched', []), ['variant', 'cases', 'lr', 'batched_first_s', 'batched_s',
                                        'sequential_first_s', 'sequential_s', 'speedup']),
        '', '## Batched conv forms (per-case weights; forward and backward; compile excluded)',
        '',
        _table(res.get('conv_forms', []), ['cases', 'size', 'width', 'layers', 'gflop',
                                           'sequential_ms', 'grouped_ms', 'im2col_ms',
                                           'grouped_speedup', 'im2col_speedup',
                                           'im2col_max_abs_diff']),
        '', f'## Phase 1 to the loss plateau (LR: {res.get("plateau_lr", "–")})', '',
        _table(res.get('plateau', []), ['variant', 'batch', 'driver', 'ms_per_step', 'compile_s',
                                        'best_loss', 'final_loss', 'plateau_loss',
                                        'steps_to_plateau', 'seconds_to_plateau'])]
  text = '\n'.join(md) + '\n'
  io.atomic_write_text(os.path.join(out, 'speed.md'), text)
  return text


def _profile_tables(rows):
  """Markdown lines: per profiled Phase-2 row, its top kernels (ms per inner step)."""
  md = []
  for r in rows:
    if 'profile' not in r:
      continue
    n = r['n_iter']
    kernels = [{**k, 'count': k['count'] / n, 'ms': k['ms'] / n} for k in r['profile']['kernels']]
    classes = ', '.join(f'{k} {v["share"]:.0%}' for k, v in r['profile']['classes'].items())
    md += ['', f'### Kernels of the Phase-2 step, {r["hr"]} {r["dtype"]} (per inner step; '
           f'busy {r["busy_share"]:.0%} of the wall time; kernel time: {classes})', '',
           _table(kernels, ['name', 'class', 'count', 'ms', 'share'])]
  return md


def _phase2_runs(gpu, quick):
  """[(hw, dtype)] from --phase2_sizes (WxH or WxH:dtype) or the per-backend default.

  peak_bytes_in_use only grows within a process, so runs go in ascending cost
  (bf16 before fp32 at each size) to keep each row's peak its own.
  """
  dtypes = _DTYPES.value or (['bfloat16', 'float32'] if gpu else ['float32'])
  specs = _SIZES.value or (['256x256', '512x512', '1024x1024', '2048x1344'] if gpu
                           else ['256x256'])
  if specs == ['none']:
    return []
  if quick:
    specs = specs[:1]
  runs = []
  for spec in specs:
    wh, _, dt = spec.partition(':')
    w, h = (int(v) for v in wh.split('x'))
    runs += [((h, w), d) for d in ([dt] if dt else dtypes)]
  return runs


def main(argv):
  del argv
  backend = jax.default_backend()
  gpu = backend != 'cpu'
  quick = _QUICK.value
  res = {'command': ' '.join(sys.argv), 'backend': backend,
         'device': jax.devices()[0].device_kind, 'jax': jax.__version__,
         'host': platform.node(), 'cpus': os.cpu_count()}
  try:
    res['git_commit'] = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True,
                                       text=True, check=False).stdout.strip()
  except OSError:
    res['git_commit'] = None
  n = 8192 if gpu else 1024
  res['matmul_tflops'] = {d: matmul_rate(getattr(jnp, d), n) / 1e12
                          for d in ('float32', 'bfloat16')}
  logging.info('matmul rate: %s', res['matmul_tflops'])

  dtypes = ('float32', 'bfloat16') if gpu else ('float32',)
  widths = (64, 128) if gpu else (32, 64)
  batches = (1, 16, 64) if gpu else (1, 4)
  if quick:
    widths, batches = widths[:1], batches[:1]
  res['phase1'] = []
  for width in widths if _PHASE1.value else ():
    for batch in batches:
      for dt in dtypes:
        r = bench_phase1(width, batch, dt, chunk=100 if gpu else 5,
                         driver='scan' if gpu else 'loop')
        logging.info('phase1 %s', r)
        res['phase1'].append(r)
        _report(res, _OUT.value)

  res['phase2'] = []
  for hw, dt in _phase2_runs(gpu, quick):
    trace = (os.path.join(_OUT.value, f'trace_{hw[1]}x{hw[0]}_{dt}') if _PROFILE.value
             else None)
    r = bench_phase2(hw, dt, n_iter=10 if gpu else 2, driver='scan' if gpu else 'loop',
                     variant='default' if gpu else 'cpu', parts=_PARTS.value, profile_dir=trace)
    logging.info('phase2 %s', {k: v for k, v in r.items() if k != 'profile'})
    res['phase2'].append(r)
    _report(res, _OUT.value)

  res['end_to_end'] = []
  if _E2E.value and not quick:
    lr_hw = {'cpu': (64, 64), 'default': (340, 510)}
    variants = _E2E_VARIANTS.value or (['cpu', 'default'] if gpu else ['cpu'])
    runs = [(v, lr_hw.get(v, (64, 64))) for v in variants]
    for variant, hw in runs:
      r = bench_end_to_end(variant, hw)
      logging.info('end to end %s', r)
      res['end_to_end'].append(r)
      _report(res, _OUT.value)

  res['conv_forms'] = []          # before the batched runs: seconds, not minutes
  for n in _CONV_FORMS.value:
    r = bench_conv_forms(int(n), _CONV_FORMS_SIZE.value, _CONV_FORMS_WIDTH.value)
    logging.info('conv forms %s', r)
    res['conv_forms'].append(r)
    _report(res, _OUT.value)

  res['batched'] = []
  if _BATCH.value:
    r = bench_batched(_BATCH_VARIANT.value, _BATCH.value)
    logging.info('batched %s', r)
    res['batched'].append(r)

  res['plateau'] = []
  if _PLATEAU.value:
    variant = _PLATEAU_VARIANT.value
    c = x4.get_config(variant)
    lr01 = (io.read_image(_PLATEAU_LR.value)[0] if _PLATEAU_LR.value
            else kfapp.demo_case(c)['lr'])
    res['plateau'] = bench_plateau(variant, [int(b) for b in _PLATEAU.value],
                                   _PLATEAU_STEPS.value or 2 * c.pd.steps, _PLATEAU_EVERY.value,
                                   lr01, _PLATEAU_TOL.value)
    res['plateau_lr'] = _PLATEAU_LR.value or 'embedded demo'

  print(_report(res, _OUT.value))


if __name__ == '__main__':
  app.run(main)
