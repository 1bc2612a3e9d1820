r"""Back-projection studies behind docs/results.md (no training; seconds on a CPU).

  # How well does a *generic* kernel do? Back-projection with isotropic Gaussians.
  python tools/bp_study.py --bench=bench/mini --study=gaussian --out=bench/bp_gauss.json

  # What would a final projection onto LR consistency (config phase2.final_bp_reg) give?
  # Applies it post hoc to the kernelfusion outputs of an evaluate.py folder.
  python tools/bp_study.py --bench=bench/mini --study=projection \
      --eval_dir=bench/mini_eval --out=bench/bp_proj.json

  # How good a kernel can an HR estimate explain? Least-squares kernels fitted to the
  # diffusion's x̂0 and to the true HR (degradation.fit_kernel), then the committed
  # final back-projection (λ --regs) with each, beside the INR's kernel.
  python tools/bp_study.py --bench=bench/mini --study=refit --eval_dir=bench/mini_eval \
      --regs=0.3 --out=bench/bp_refit.json

  # A classical blind kernel instead (kfjax.sparse_kernel, the sparse_bp method), with
  # settings overridden per variant: its kernel, then the back-projection (λ --regs).
  python tools/bp_study.py --bench=bench/mini --study=sparse --regs=0.3 \
      --variants='{"default": {}, "lam2e-2": {"lam": 0.02}}' --out=bench/sparse_mini.json
  # ... or the edge kernel (kfjax.edge_kernel, the edge_bp method): --study=edges, there also
  # through the TV SRs and mixes of --study=tv, and the GT kernel through the same
  # (--tv_weights= for the back-projection alone). With --ensembles='{"e2": ["a", "b"]}'
  # also the mean of those variants' outputs at each final step (config edges.ensemble), and
  # the final steps with the mean of their kernels (e2_kernel_mean_...).

  # How accurate must a kernel be? The GT kernel shifted (1, 2 px down), blurred (Gaussian
  # σ 0.7, 1.5 px), scaled (×0.85, ×1.15 about its centre of mass) or replaced by its
  # moment-matched Gaussian, then back-projected; the GT and its Gaussian also through the
  # final steps of --study=tv (--tv_weights, --tv_mixes).
  python tools/bp_study.py --bench=bench/mini --study=perturb --regs=0.001,0.03,0.3 \
      --out=bench/bp_perturb_mini.json

  # Mixtures of two methods' kernels, (1 − w)·--method + w·--blend_with (config
  # phase2.kernel_blend), back-projected with each λ in --regs.
  python tools/bp_study.py --bench=bench/mini --study=blend --eval_dir=bench/mini_eval \
      --weights=0,0.25,0.5,0.75,1 --regs=0.1,0.3 --out=bench/bp_blend_mini.json

  # The final step with a total-variation SR (config phase2.final_tv, final_tv_mix): the
  # kernel (1 − --kernel_blend)·--method + --kernel_blend·--blend_with, then the TV SR with
  # each weight in --tv_weights, alone and mixed into its back-projection (λ --regs) with
  # each share in --tv_mixes; and the TV SR with the GT kernel, for reference.
  python tools/bp_study.py --bench=bench/mini --study=tv --eval_dir=bench/mini_eval \
      --regs=0.3 --out=bench/bp_tv_mini.json
  # ... and how many HQS rounds × CG iterations the TV SR needs (--tv_iters=6x20,6x4,6x15u).

  # The spectral Gaussian kernel (kfjax.spectral_kernel) mixed into that kernel with each
  # weight in --weights (0: the saved kernel alone, 1: the spectral fit alone), then the
  # back-projection, the TV SR and their mixes as in --study=tv; and the TV SR with the GT.
  # --variants as for sparse, e.g. '{"a1.6": {"alpha": 1.6}, "a2": {}}'.
  # With --gauss_taus, a blind test of Gaussian blur: per τ, the setting --switch_to where
  # the fit's evidence_gain (its evidence against no blur) is below τ, else --switch_from
  # (defaults: the spectral kernel's TV SR at λ 1e-4 alone, else the committed final step
  # with the saved kernel; needs --weights with 0 and 1, --tv_weights with 1e-4 and 1e-3,
  # --tv_mixes with 0.5 and --regs with 0.3).
  python tools/bp_study.py --bench=bench/mini --study=spectral --eval_dir=bench/mini_eval \
      --weights=0,0.5,1 --regs=0.3 --tv_weights=1e-4,1e-3 --out=bench/bp_spectral_mini.json

  # What in the Phase-2 (INR) kernel matters? The INR's kernel recovered from a saved mixture
  # ((kernel.npy − w·k_L0)/(1 − w), w = --kernel_blend, k_L0 recomputed as the pipeline does),
  # then each variant through the final step (as --study=tv): the INR's alone, the L0 alone,
  # the mixture with the L0 kernel moved onto the INR's centre of mass, the mixture with the
  # INR's moment-matched Gaussian instead of the INR's, the two kernels' geometric mean
  # (weighted as the mixture), and the INR's with the taps below t·max zeroed (--thresholds),
  # alone and mixed.
  python tools/bp_study.py --bench=bench/mini --study=inr --eval_dir=bench/mini_tv \
      --regs=0.3 --tv_weights=1e-3 --tv_mixes=0.5 --out=bench/bp_inr_mini.json

  # Is the error variance or bias? Two or more runs of --method (other seeds or settings, one
  # --eval_dir each): each run's output, their mean, and the final step (as --study=tv) with
  # the mean of their saved kernels. Only cases that every run has.
  python tools/bp_study.py --bench=bench/mini --study=ensemble \
      --eval_dir=bench/mini_tv,bench/mini_w30 --regs=0.3 --tv_weights=1e-3 --tv_mixes=0.5 \
      --out=bench/ensemble_mini.json

  # Are a method's kernels too wide or too narrow? Their principal spreads against the GT's,
  # and the back-projection with each kernel scaled about its centre of mass (--scales:
  # f = isotropic ×f, m:M = ×m along the minor axis and ×M along the major one).
  python tools/bp_study.py --bench=bench/mini --study=shrink --eval_dir=bench/mini_eval \
      --regs=0.1,0.3 --out=bench/bp_shrink_mini.json

  # What the LR grid sees of the kernel: the GT summed over s×s blocks and spread back
  # (kernels.to_lr_scale, lift_lr_kernel), the LR-scale kernel (--lr_support) fitted to the
  # true HR's s×s block means, and blind LR-scale kernels (the L0 estimator deblurring the LR
  # itself, sparse_kernel.estimate_kernel at scale 1, one per --variants entry), each lifted
  # to HR (evenly, and along its interpolant for each --lift_powers p > 0) and through the
  # final steps of --study=tv; with --eval_dir, also --method's saved kernel as saved and
  # through its LR blocks.
  python tools/bp_study.py --bench=bench/mini --study=lrscale --regs=0.3 --tv_weights=1e-3 \
      --variants='{"l0": {}, "l0_alt10": {"n_alt": 10, "lam_start": 20}}' \
      --out=bench/bp_lrscale_mini.json

  # The LR-scale DIP kernel (kfjax.dip_kernel) from several LR windows: per --variants entry
  # {"windows": m, "combine": "mean" | "joint", any estimate_lr_kernel setting}, m windows of
  # 64 LR px (the centre one, then at the quarter points: lr_windows), each fitted alone and
  # their kernels' mean taken about their centres of mass, or all fitted jointly with one
  # kernel; the kernel's spread ratio (dip_kernel.spread_ratio), and the final steps of
  # --study=tv. Minutes per variant and case on a CPU.
  python tools/bp_study.py --bench=bench/full_mini --study=lrdip --regs=0.3 \
      --tv_weights=1e-3 --tv_mixes=0.5 --out=bench/lrdip_windows_full_mini.json \
      --variants='{"one":{},"mean4":{"windows":4},"joint4":{"windows":4,"combine":"joint"}}'

  # Does the edge kernel agree with the Gaussian-blur test's fit (config edges.min_agreement)?
  # Per case, as the `cpu` variant computes them (config kernel.size): the spectral fit's
  # evidence gain, whether the test fires at τ = --gauss_taus' first value (default: the
  # variant's), and the cosine similarity of the edge kernel with the fit. No images.
  python tools/bp_study.py --bench=bench/full_mini --study=agreement --regs= \
      --out=bench/agreement_full_mini.json

Prints a table of mean psnr_y (and kernel_nerr) per setting and writes every per-case value
to --out (after each case, so a stopped run keeps what it did). --shard=i/n studies every
n-th case from the i-th (0-based), so that n processes can share a benchmark
(tools/device/bp_shards.sh); --merge=a.json,b.json,... then joins their --out files into one
(cases and means; no study runs). XLA programs go to the persistent compilation cache
(`kfjax.enable_compilation_cache`; `KFJAX_COMPILATION_CACHE=off` turns it off).
"""

import json
import os
import sys

from absl import app, flags
import numpy as np
from scipy import ndimage

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

# pylint: disable-next=wrong-import-position
from configs import x4
import kfjax
from kfjax import (degradation, dip_kernel, edge_kernel, evaluation, io, kernels, metrics,
                   pipeline, sparse_kernel, spectral_kernel)

_BENCH = flags.DEFINE_string('bench', None, 'Benchmark folder.')
_STUDY = flags.DEFINE_enum('study', 'gaussian',
                           ['gaussian', 'projection', 'refit', 'sparse', 'perturb', 'shrink',
                            'blend', 'tv', 'spectral', 'inr', 'ensemble', 'lrscale', 'lrdip',
                            'edges', 'agreement'],
                           'Which study.')
_SELF_CONTAINED = ('gaussian', 'sparse', 'perturb', 'lrscale', 'lrdip', 'edges',  # no --eval_dir
                   'agreement')
_VARIANTS = flags.DEFINE_string('variants', '{"default": {}}',
                                'sparse, edges, spectral, lrscale, lrdip: JSON {name: '
                                'estimate_kernel '
                                '(fit_gaussian) '
                                'keyword overrides}; with more than one, spectral names start '
                                'with the variant name.')
_EVAL_DIR = flags.DEFINE_list('eval_dir', [],
                              'evaluate.py output folders (projection, refit, shrink, blend, inr, '
                              'tv, spectral; optional for lrscale); '
                              'a case is read from the first that has it.')
_METHOD = flags.DEFINE_string('method', 'kernelfusion',
                              'shrink, blend, tv, spectral, inr: the method in --eval_dir whose '
                              'kernel.npy is studied.')
_BLEND_WITH = flags.DEFINE_string('blend_with', 'sparse_bp',
                                  "blend, tv, spectral: the method whose kernel is mixed into "
                                  "--method's.")
_WEIGHTS = flags.DEFINE_list('weights', ['0', '0.25', '0.5', '0.75', '1'],
                             'blend: weights w of the --blend_with kernel; spectral: of the '
                             'spectral Gaussian kernel; in [0, 1].')
_KERNEL_BLEND = flags.DEFINE_float('kernel_blend', 0.5,
                                   'tv, spectral: the weight of the --blend_with kernel (0: '
                                   '--method alone); inr: the phase2.kernel_blend of the run '
                                   'that saved --method\'s kernel.')
_THRESHOLDS = flags.DEFINE_list('thresholds', ['0.05', '0.2'],
                                'inr: zero the INR kernel\'s taps below this fraction of its '
                                'largest.')
_TV_WEIGHTS = flags.DEFINE_list('tv_weights', ['1e-4', '3e-4', '1e-3', '3e-3'],
                                'tv, spectral: TV weights λ (images in [0, 1]).')
_TV_MIXES = flags.DEFINE_list('tv_mixes', ['0.5'],
                              "tv, spectral: the TV image's shares in the mix with the "
                              'back-projection.')
_TV_ITERS = flags.DEFINE_list('tv_iters', ['6x20'],
                              'tv, spectral: HQS rounds x preconditioned CG iterations per round '
                              "at most (the library's default 6x20, to a residual of 1e-4); a "
                              'trailing u: plain CG to 1e-5, the solver before the twenty-ninth '
                              'session (6x15u); with more than one, each setting name ends in '
                              '_it<spec>.')
_GAUSS_TAUS = flags.DEFINE_list('gauss_taus', [], 'spectral: thresholds τ of a blind Gaussian-'
                                'blur test; per τ, the output is --switch_to where the spectral '
                                "fit's evidence_gain < τ, else --switch_from (module docstring).")
_SWITCH_FROM = flags.DEFINE_string('switch_from', 'w0_tv_0.001_mix_0.5_reg_0.3',
                                   'spectral: the setting kept where the test says no.')
_SWITCH_TO = flags.DEFINE_string('switch_to', 'w1_tv_0.0001',
                                 'spectral: the setting used where the test says Gaussian.')
_SCALES = flags.DEFINE_list('scales', ['1', '0.85', '0.7', '0.7:1', '0.5:1'],
                            'shrink: kernel scalings, f (isotropic) or minor:major.')
_SIGMAS = flags.DEFINE_list('sigmas', ['1', '1.5', '2', '2.5', '3', '4'],
                            'Gaussian std devs in HR pixels (gaussian).')
_REGS = flags.DEFINE_list('regs', ['0.001', '0.01', '0.03', '0.1', '0.3'],
                          'BP regularisers λ (relative, as in back_projection).')
_LR_SUPPORT = flags.DEFINE_integer('lr_support', 11, 'lrscale: the LR-scale kernel support '
                                   '(LR pixels, odd).')
_LIFT_POWERS = flags.DEFINE_list('lift_powers', ['0'], 'lrscale: lift each LR-scale kernel '
                                  'with each of these powers (kernels.lift_lr_kernel; 0 = '
                                  'the even spread, others named {kernel}_lift{p}).')
_EDGES_GT = flags.DEFINE_bool('edges_gt', True, 'edges: pass the GT kernel through the same '
                               'final steps too (one more TV SR per case and weight).')
_ENSEMBLES = flags.DEFINE_string('ensembles', '{}', 'edges: JSON {name: [variant, ...]}: the '
                                 'mean of those --variants\' outputs at each final step, and '
                                 'the final steps with their mean kernel.')
_KERNEL_MEAN = flags.DEFINE_bool('ensemble_kernel_mean', True, 'edges --ensembles: also the '
                                 'final steps with the ensemble\'s mean kernel (one more TV '
                                 'SR per case, ensemble and weight).')
_SHARD = flags.DEFINE_string('shard', '0/1', 'i/n: study every n-th case from the i-th.')
_MERGE = flags.DEFINE_list('merge', [], '--out files of --shard runs to join into --out.')
_OUT = flags.DEFINE_string('out', None, 'JSON file with every per-case value.')


def gaussian_kernel(sigma: float, size: int = 33) -> np.ndarray:
  """An isotropic Gaussian on a size×size support, summing to 1."""
  r = np.arange(size) - (size - 1) / 2
  g = np.exp(-r ** 2 / (2 * sigma ** 2))
  k = np.outer(g, g)
  return k / k.sum()


def _normalised(k: np.ndarray) -> np.ndarray:
  k = np.maximum(k, 0.0)
  return k / k.sum()


def perturbed_kernels(k) -> dict:
  """The GT kernel and the perturbations of --study=perturb, each summing to 1."""
  k = np.asarray(k, np.float64)
  return {'gt': k,
          'shift_1px': _normalised(ndimage.shift(k, (1, 0), order=1)),
          'shift_2px': _normalised(ndimage.shift(k, (2, 0), order=1)),
          'blur_0.7': _normalised(ndimage.gaussian_filter(k, 0.7)),
          'blur_1.5': _normalised(ndimage.gaussian_filter(k, 1.5)),
          'scale_0.85': kernels.scale_kernel(k, 0.85),
          'scale_1.15': kernels.scale_kernel(k, 1.15),
          # Position, size and orientation right, the path's shape gone.
          'moment_gaussian': kernels.moment_gaussian(k)}


def inr_variants(inr, l0, weight: float, thresholds) -> dict:
  """The kernels of --study=inr, by name (module docstring)."""
  mix = lambda a, b: kernels.blend(a, b, weight)
  out = {'mixture': mix(inr, l0), 'inr': inr, 'l0': l0,
         'l0_at_inr_com': mix(inr, kernels.shift_to(l0, degradation.center_of_mass(inr))),
         'inr_gauss': mix(kernels.moment_gaussian(inr), l0),
         # Where both estimates agree: the L0 path inside the INR's envelope.
         'geo_mean': kernels.geometric_blend(inr, l0, weight)}
  for t in thresholds:
    k = np.array(inr)
    k[k < t * k.max()] = 0.0
    out[f'inr_t{t:g}'] = _normalised(k)
    out[f'inr_t{t:g}_mixture'] = mix(_normalised(k), l0)
  return out


def parse_scales(specs) -> list[list[float]]:
  """--scales entries 'f' or 'minor:major' as factor lists; ValueError unless all > 0."""
  scales = [[float(f) for f in spec.split(':')] for spec in specs]
  if not all(0 < len(fs) <= 2 and min(fs) > 0 for fs in scales):
    raise ValueError(specs)
  return scales


def parse_weights(specs) -> list[float]:
  """--weights entries as floats; ValueError unless all are in [0, 1]."""
  weights = [float(v) for v in specs]
  if not all(0.0 <= w <= 1.0 for w in weights):
    raise ValueError(specs)
  return weights


_WINDOW_SPOTS = ((0.5, 0.5), (0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75))


def lr_windows(lr01, count: int, size: int) -> list[np.ndarray]:
  """``count`` size×size windows of an LR image (at most 5; smaller images: the whole side).

  The first is the centre window that ``kernel_source = 'lrdip'`` uses
  (:func:`kfjax.io.center_box`); the others are centred on the quarter points
  (rows, columns ¼ or ¾ of the way), moved inside the image where needed.
  """
  if not 1 <= count <= len(_WINDOW_SPOTS):
    raise ValueError(f'windows: expected 1 to {len(_WINDOW_SPOTS)}, got {count}')
  h, w = lr01.shape[:2]
  wh, ww = min(h, size), min(w, size)
  out = []
  for fy, fx in _WINDOW_SPOTS[:count]:
    top = (h - wh) // 2 if fy == 0.5 else min(max(int(round(fy * h - wh / 2)), 0), h - wh)
    left = (w - ww) // 2 if fx == 0.5 else min(max(int(round(fx * w - ww / 2)), 0), w - ww)
    out.append(np.asarray(lr01)[top:top + wh, left:left + ww])
  return out


def lrdip_windows_kernel(lr01, scale: int, size: int, *, windows: int = 1,
                         combine: str = 'mean', **settings) -> np.ndarray:
  """The (size, size) HR kernel of :func:`kfjax.dip_kernel.estimate_lr_kernel` on
  :func:`lr_windows`: their LR kernels' mean about their centres of mass
  (``combine`` 'mean'; one window: as :func:`kfjax.dip_kernel.estimate_kernel`), or
  one kernel fitted to all of them ('joint'); lifted and aligned as that function does."""
  n = dip_kernel.lr_support(size, scale)
  crops = lr_windows(lr01, windows, settings.get('window', dip_kernel.DEFAULTS['window']))
  if combine == 'joint':
    k_lr, _ = dip_kernel.estimate_lr_kernel(np.stack(crops), n, **settings)
  elif combine == 'mean':
    fits = [dip_kernel.estimate_lr_kernel(c, n, **settings)[0] for c in crops]
    k_lr = fits[0] if len(fits) == 1 else np.mean(
        [kernels.shift_to(k, ((n - 1) / 2,) * 2) for k in fits], 0)
  else:
    raise ValueError(f"combine: expected 'mean' or 'joint', got {combine!r}")
  return kernels.place_lr_kernel(k_lr, scale, size)


def case_dir(case_id: str, method: str):
  """The first --eval_dir folder holding ``method``'s kernel for the case, else None."""
  for root in _EVAL_DIR.value:
    d = evaluation.method_dir(root, case_id, method)
    if os.path.isfile(os.path.join(d, 'kernel.npy')):
      return d
  return None


def parse_tv_iters(spec: str) -> dict:
  """The solver keywords of :func:`kfjax.degradation.sparse_gradient_restore` for a
  --tv_iters setting: '6x20' → 6 rounds of at most 20 preconditioned CG iterations (to the
  library's residual 1e-4); '6x15u' → 6 rounds of at most 15 plain ones to 1e-5.

  Raises ValueError on anything else.
  """
  plain = spec.endswith('u')
  parts = (spec[:-1] if plain else spec).split('x')
  if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
    raise ValueError(f'bad --tv_iters setting {spec!r}')
  solver = dict(n_outer=int(parts[0]), cg_iter=int(parts[1]))
  return dict(solver, precondition=False, cg_tol=1e-5) if plain else solver


def tv_settings(out: dict, prefix: str, kernel, lr01, scale: int, regs) -> None:
  """Adds the back-projections (λ ``regs``), the TV SRs (--tv_weights, --tv_iters) and
  their mixes (--tv_mixes) with ``kernel`` to ``out``, names prefixed by ``prefix``."""
  bps = {reg: degradation.back_projection(lr01, kernel, scale, reg=reg) for reg in regs}
  for reg, bp in bps.items():
    out[f'{prefix}bp_reg_{reg:g}'] = bp
  for spec in _TV_ITERS.value:
    solver = parse_tv_iters(spec)
    it = f'_it{spec}' if len(_TV_ITERS.value) > 1 else ''
    for lam in (float(v) for v in _TV_WEIGHTS.value):
      tv = degradation.sparse_gradient_restore(lr01, kernel, scale, out['bicubic'], lam=lam,
                                               **solver)
      out[f'{prefix}tv_{lam:g}{it}'] = tv
      for reg, bp in bps.items():
        for mix in (float(v) for v in _TV_MIXES.value):
          out[f'{prefix}tv_{lam:g}_mix_{mix:g}_reg_{reg:g}{it}'] = (1 - mix) * bp + mix * tv


def ensemble_settings(out: dict, ensembles: dict, lr01, gt_kernel, scale: int, regs) -> None:
  """--ensembles: adds, per ensemble, the mean of its variants' outputs at each final step
  that all of them have (``{name}_{step}``), and the final steps with the mean of their
  kernels (``{name}_kernel_mean_{step}``, unless --noensemble_kernel_mean); the variants'
  kernels are in ``out`` as ``{variant}_kernel``, and are removed once every ensemble is
  done."""
  for name, members in ensembles.items():
    steps = [key[len(members[0]) + 1:] for key in out
             if key.startswith(f'{members[0]}_') and np.ndim(out[key]) == 3]
    for step in steps:
      if all(f'{m}_{step}' in out for m in members):
        out[f'{name}_{step}'] = np.mean([out[f'{m}_{step}'] for m in members], 0)
    kernel = np.mean([out[f'{m}_kernel'] for m in members], 0)
    out[f'{name}_kernel_mean_nerr'] = metrics.kernel_metrics(kernel, gt_kernel)['kernel_nerr']
    if _KERNEL_MEAN.value:
      tv_settings(out, f'{name}_kernel_mean_', kernel, lr01, scale, regs)
  for key in [k for k in out if k.endswith('_kernel') and np.ndim(out[k]) == 2]:
    del out[key]


def parse_ensembles(text: str, variants: dict) -> dict:
  """--ensembles as {name: [variant, ...]}; ValueError unless each lists ≥ 2 --variants."""
  ensembles = json.loads(text)
  if not isinstance(ensembles, dict) or not all(
      isinstance(m, list) and len(m) >= 2 and all(v in variants for v in m)
      for m in ensembles.values()):
    raise ValueError(f'expected {{name: [two or more of {", ".join(variants)}]}}, got {text}')
  return ensembles


def parse_shard(text: str) -> tuple[int, int]:
  """--shard 'i/n' as (i, n); ValueError unless 0 ≤ i < n."""
  try:
    i, n = (int(v) for v in text.split('/'))
  except ValueError:
    raise ValueError(f'expected i/n, got {text!r}') from None
  if not 0 <= i < n:
    raise ValueError(f'expected 0 ≤ i < n, got {text!r}')
  return i, n


def write_result(rows: dict, command: str, quiet: bool = False) -> None:
  """Writes the mean of each setting over ``rows``, and ``rows``, to --out; unless
  ``quiet``, prints the means."""
  names = list(next(iter(rows.values())))
  means = {k: float(np.mean([r[k] for r in rows.values()])) for k in names}
  if not quiet:
    print(f'\nmean psnr_y over {len(rows)} cases:')
    for k in names:
      print(f'  {k:28s} {means[k]:.3f}')
  io.atomic_write_text(_OUT.value, json.dumps({'command': command, 'cases': rows,
                                               'mean': means}, indent=1) + '\n')


def merge(paths) -> None:
  """--merge: the cases of several --out files (no case twice) into one --out."""
  rows = {}
  for path in paths:
    try:
      with open(path, encoding='utf-8') as f:
        cases = json.load(f)['cases']
    except (OSError, ValueError, KeyError) as e:
      sys.exit(f'bp_study: error: --merge: {path}: {e}')
    twice = sorted(set(cases) & set(rows))
    if twice:
      sys.exit(f'bp_study: error: --merge: {path}: case {twice[0]} is in an earlier file too')
    rows.update(cases)
  if not rows:
    sys.exit('bp_study: error: --merge: no cases')
  write_result(rows, ' '.join(sys.argv))


def agreement_values(lr01) -> dict:
  """--study=agreement: the `cpu` variant's Gaussian-test fit, its call, and the edge kernel's
  cosine with it (:func:`kfjax.pipeline.edges_veto`'s quantity) for one LR image."""
  config = x4.get_config('cpu')
  tau = float(_GAUSS_TAUS.value[0]) if _GAUSS_TAUS.value else config.phase2.gaussian_test
  fit, info = spectral_kernel.fit_gaussian(lr01, config.scale, config.kernel.size)
  return {'spectral_evidence_gain': info['evidence_gain'],
          'fires': float(info['evidence_gain'] < tau),
          'edge_spectral_cosine': kernels.cosine(pipeline.edges_kernel(lr01, config), fit)}


def case_settings(study, case, lr01, gt_kernel, scale, hr01, variants=None):
  """{setting name: HR estimate} for one case."""
  if study == 'agreement':
    return agreement_values(lr01)
  out = {'bicubic': degradation.bicubic_upscale(lr01, scale),
         'bp_gt': degradation.back_projection(lr01, gt_kernel, scale)}
  regs = [float(r) for r in _REGS.value]
  for reg in regs:
    out[f'bp_gt_reg_{reg:g}'] = degradation.back_projection(lr01, gt_kernel, scale, reg=reg)
  if study == 'gaussian':
    for s in (float(v) for v in _SIGMAS.value):
      for reg in regs:
        out[f'gauss_{s:g}_reg_{reg:g}'] = degradation.back_projection(
            lr01, gaussian_kernel(s), scale, reg=reg)
    return out
  if study == 'perturb':
    for name, k in perturbed_kernels(gt_kernel).items():
      out[f'{name}_nerr'] = metrics.kernel_metrics(k, gt_kernel)['kernel_nerr']
      for reg in regs:
        out[f'{name}_reg_{reg:g}'] = degradation.back_projection(lr01, k, scale, reg=reg)
      if name in ('gt', 'moment_gaussian'):      # and the final steps of --study=tv
        tv_settings(out, f'{name}_', k, lr01, scale, regs)
    return out
  if study in ('sparse', 'edges'):
    estimator = sparse_kernel if study == 'sparse' else edge_kernel
    for name, overrides in variants.items():
      k = estimator.estimate_kernel(lr01, scale, gt_kernel.shape[0], **overrides)
      out[f'{name}_nerr'] = metrics.kernel_metrics(k, gt_kernel)['kernel_nerr']
      if study == 'edges':                            # and its TV SRs (--tv_weights, --tv_mixes)
        tv_settings(out, f'{name}_', k, lr01, scale, regs)
        out[f'{name}_kernel'] = k                     # for --ensembles (not a result)
        continue
      for reg in regs:
        out[f'{name}_bp_reg_{reg:g}'] = degradation.back_projection(lr01, k, scale, reg=reg)
    if study == 'edges':
      ensemble_settings(out, json.loads(_ENSEMBLES.value), lr01, gt_kernel, scale, regs)
    if study == 'edges' and _TV_WEIGHTS.value and _EDGES_GT.value:   # the same with the GT
      tv_settings(out, 'gt_', gt_kernel, lr01, scale, regs)
    return out
  if study == 'lrscale':
    n, size = _LR_SUPPORT.value, gt_kernel.shape[0]
    powers = [float(p) for p in _LIFT_POWERS.value]
    y, h = sparse_kernel.luma(lr01), scale // 2        # block means in the LR grid's phase
    x = np.pad(sparse_kernel.luma(hr01), ((h, scale - h),) * 2, mode='symmetric')
    means = x[:y.shape[0] * scale, :y.shape[1] * scale].reshape(
        y.shape[0], scale, y.shape[1], scale).mean((1, 3))
    lr_kernels = {'gt_lr_blocks': kernels.to_lr_scale(gt_kernel, scale),
                  'oracle_lr': sparse_kernel.fit_kernel_gradients(means, y, 1, n)}
    for name, overrides in variants.items():
      lr_kernels[name] = sparse_kernel.estimate_kernel(lr01, 1, n, **overrides)
    hr_kernels = {}
    if _EVAL_DIR.value:                                # and --method's saved kernel, as saved
      saved = np.load(os.path.join(case_dir(case['id'], _METHOD.value), 'kernel.npy'))
      hr_kernels[_METHOD.value] = saved                # and through its LR blocks
      lr_kernels[f'{_METHOD.value}_lr_blocks'] = kernels.to_lr_scale(saved, scale)
    for name, k_lr in lr_kernels.items():
      for p in powers:
        hr_kernels[name + (f'_lift{p:g}' if p else '')] = kernels.place_lr_kernel(
            k_lr, scale, size, power=p)
    for name, k in hr_kernels.items():
      out[f'{name}_nerr'] = metrics.kernel_metrics(k, gt_kernel)['kernel_nerr']
      tv_settings(out, f'{name}_', k, lr01, scale, regs)
    tv_settings(out, 'gt_', gt_kernel, lr01, scale, regs)
    return out
  if study == 'lrdip':
    for name, overrides in variants.items():
      k = lrdip_windows_kernel(lr01, scale, gt_kernel.shape[0], **overrides)
      out[f'{name}_nerr'] = metrics.kernel_metrics(k, gt_kernel)['kernel_nerr']
      out[f'{name}_spread_ratio'] = dip_kernel.spread_ratio(k)
      tv_settings(out, f'{name}_', k, lr01, scale, regs)
    return out
  if study == 'shrink':
    kernel = np.load(os.path.join(case_dir(case['id'], _METHOD.value), 'kernel.npy'))
    (gt_minor, gt_major), _ = kernels.principal_spread(gt_kernel)
    (minor, major), _ = kernels.principal_spread(kernel)
    out['sigma_ratio_minor'], out['sigma_ratio_major'] = minor / gt_minor, major / gt_major
    for spec, factors in zip(_SCALES.value, parse_scales(_SCALES.value)):
      k = kernels.scale_kernel(kernel, *factors)
      out[f'x{spec}_nerr'] = metrics.kernel_metrics(k, gt_kernel)['kernel_nerr']
      for reg in regs:
        out[f'x{spec}_reg_{reg:g}'] = degradation.back_projection(lr01, k, scale, reg=reg)
    return out
  if study == 'blend':
    a, b = (np.load(os.path.join(case_dir(case['id'], m), 'kernel.npy'))
            for m in (_METHOD.value, _BLEND_WITH.value))
    for w in parse_weights(_WEIGHTS.value):
      k = kernels.blend(a, b, w)
      out[f'w{w:g}_nerr'] = metrics.kernel_metrics(k, gt_kernel)['kernel_nerr']
      for reg in regs:
        out[f'w{w:g}_reg_{reg:g}'] = degradation.back_projection(lr01, k, scale, reg=reg)
    return out
  if study == 'inr':
    saved = np.load(os.path.join(case_dir(case['id'], _METHOD.value), 'kernel.npy'))
    w = _KERNEL_BLEND.value
    l0 = sparse_kernel.estimate_kernel(lr01, scale, saved.shape[0])
    inr = kernels.unblend(saved, l0, w)
    for name, k in inr_variants(inr, l0, w, [float(t) for t in _THRESHOLDS.value]).items():
      out[f'{name}_nerr'] = metrics.kernel_metrics(k, gt_kernel)['kernel_nerr']
      tv_settings(out, f'{name}_', k, lr01, scale, regs)
    return out
  if study == 'ensemble':
    dirs = [evaluation.method_dir(root, case['id'], _METHOD.value) for root in _EVAL_DIR.value]
    runs = [io.read_image(os.path.join(d, 'hr.png'))[0] for d in dirs]
    out.update({f'run{i}': hr for i, hr in enumerate(runs)})
    out['output_mean'] = np.mean(runs, 0)
    kernel = np.mean([np.load(os.path.join(d, 'kernel.npy')) for d in dirs], 0)
    out['kernel_mean_nerr'] = metrics.kernel_metrics(kernel, gt_kernel)['kernel_nerr']
    tv_settings(out, 'kernel_mean_', kernel, lr01, scale, regs)
    return out
  if study in ('tv', 'spectral'):
    kernel = np.load(os.path.join(case_dir(case['id'], _METHOD.value), 'kernel.npy'))
    if _KERNEL_BLEND.value > 0:
      other = np.load(os.path.join(case_dir(case['id'], _BLEND_WITH.value), 'kernel.npy'))
      kernel = kernels.blend(kernel, other, _KERNEL_BLEND.value)
    if study == 'tv':
      out['kernel_nerr'] = metrics.kernel_metrics(kernel, gt_kernel)['kernel_nerr']
      tv_settings(out, '', kernel, lr01, scale, regs)
    else:
      weights = parse_weights(_WEIGHTS.value)
      mixes = {'w0_': kernel} if 0 in weights else {}     # the saved kernel, once
      for name, overrides in variants.items():
        v = f'{name}_' if len(variants) > 1 else ''
        spectral, info = spectral_kernel.fit_gaussian(lr01, scale, kernel.shape[0], **overrides)
        out.update({f'{v}spectral_{k}': x for k, x in info.items()})
        mixes.update({f'{v}w{w:g}_': kernels.blend(kernel, spectral, w) for w in weights if w > 0})
      for pre, k in mixes.items():
        out[f'{pre}nerr'] = metrics.kernel_metrics(k, gt_kernel)['kernel_nerr']
        tv_settings(out, pre, k, lr01, scale, regs)
      missing = [k for k in (_SWITCH_FROM.value, _SWITCH_TO.value, 'spectral_evidence_gain')
                 if _GAUSS_TAUS.value and k not in out]
      if missing:
        sys.exit(f'bp_study: error: --gauss_taus: no setting {missing[0]!r} (one --variants '
                 'entry; see --switch_from, --switch_to)')
      for tau in (float(v) for v in _GAUSS_TAUS.value):
        gauss = out['spectral_evidence_gain'] < tau     # the first variant's fit
        out[f'switch_{tau:g}'] = out[_SWITCH_TO.value if gauss else _SWITCH_FROM.value]
        out[f'switch_{tau:g}_chosen'] = float(gauss)
    tv_settings(out, 'gt_', gt_kernel, lr01, scale, [])
    return out
  d = case_dir(case['id'], 'kernelfusion')
  x0_path = os.path.join(d, 'hr_diffusion.png')       # x̂0 (hr.png is x̂0 when final_bp_reg=0)
  kf, _ = io.read_image(x0_path if os.path.isfile(x0_path) else os.path.join(d, 'hr.png'))
  kernel = np.load(os.path.join(d, 'kernel.npy'))
  out['kernelfusion'] = kf
  if study == 'refit':
    fits = {'inr': kernel,
            'refit_x0': degradation.fit_kernel(kf, lr01, scale, kernel.shape[0]),
            'refit_true_hr': degradation.fit_kernel(hr01, lr01, scale, kernel.shape[0])}
    for name, k in fits.items():
      for reg in regs:
        out[f'{name}_bp_reg_{reg:g}'] = degradation.back_projection(lr01, k, scale, reg=reg)
    return out
  for reg in regs:
    out[f'kf_proj_reg_{reg:g}'] = degradation.back_projection(lr01, kernel, scale, init=kf,
                                                              reg=reg)
    out[f'bp_est_reg_{reg:g}'] = degradation.back_projection(lr01, kernel, scale, reg=reg)
  return out


def main(argv):
  del argv
  kfjax.enable_compilation_cache()   # a re-run (or the next study) skips XLA compilation
  if _MERGE.value:
    if not _OUT.value:
      sys.exit('bp_study: error: --merge needs --out')
    return merge(_MERGE.value)
  if not _BENCH.value or not _OUT.value:
    sys.exit('bp_study: error: --bench and --out are required')
  if _STUDY.value == 'inr' and not 0 <= _KERNEL_BLEND.value < 1:
    sys.exit(f'bp_study: error: --kernel_blend: expected a weight in [0, 1), got '
             f'{_KERNEL_BLEND.value}')
  if _STUDY.value not in _SELF_CONTAINED and not _EVAL_DIR.value:
    sys.exit(f'bp_study: error: --study={_STUDY.value} needs --eval_dir')
  try:
    variants = json.loads(_VARIANTS.value)
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
      raise ValueError('expected {name: {setting: value}}')
  except ValueError as e:
    sys.exit(f'bp_study: error: --variants: {e}')
  try:
    parse_ensembles(_ENSEMBLES.value, variants)
  except ValueError as e:
    sys.exit(f'bp_study: error: --ensembles: {e}')
  try:
    shard, shards = parse_shard(_SHARD.value)
  except ValueError as e:
    sys.exit(f'bp_study: error: --shard: {e}')
  for name, v in variants.items() if _STUDY.value == 'lrdip' else ():
    count = v.get('windows', 1)
    if not isinstance(count, int) or not 1 <= count <= len(_WINDOW_SPOTS):
      sys.exit(f'bp_study: error: --variants: {name}: windows: expected 1 to '
               f'{len(_WINDOW_SPOTS)}, got {count!r}')
    if v.get('combine', 'mean') not in ('mean', 'joint'):
      sys.exit(f"bp_study: error: --variants: {name}: combine: expected 'mean' or 'joint', got "
               f"{v['combine']!r}")
  try:
    parse_scales(_SCALES.value)
  except ValueError:
    sys.exit(f'bp_study: error: --scales: expected f or minor:major > 0, got {_SCALES.value}')
  manifest = evaluation.load_benchmark(_BENCH.value)
  scale = manifest['scale']
  methods = {'shrink': [_METHOD.value], 'inr': [_METHOD.value], 'ensemble': [_METHOD.value],
             'lrscale': [_METHOD.value],
             'blend': [_METHOD.value, _BLEND_WITH.value],
             'tv': [_METHOD.value] + ([_BLEND_WITH.value] if _KERNEL_BLEND.value > 0 else [])}
  methods['spectral'] = methods['tv']
  methods = methods.get(_STUDY.value, ['kernelfusion'])
  try:
    for spec in _TV_ITERS.value:
      parse_tv_iters(spec)
  except ValueError:
    sys.exit(f'bp_study: error: --tv_iters: expected rounds x iterations, e.g. 6x20 or 6x15u, '
             f'got {_TV_ITERS.value}')
  try:
    parse_weights(_WEIGHTS.value)
  except ValueError:
    sys.exit(f'bp_study: error: --weights: expected numbers in [0, 1], got {_WEIGHTS.value}')
  rows = {}
  for case in manifest['cases'][shard::shards]:
    needs_saved = _STUDY.value not in _SELF_CONTAINED or (_STUDY.value == 'lrscale'
                                                          and _EVAL_DIR.value)
    if needs_saved and any(case_dir(case['id'], m) is None for m in methods):
      continue
    if _STUDY.value == 'ensemble' and not all(os.path.isfile(os.path.join(
        evaluation.method_dir(root, case['id'], _METHOD.value), 'hr.png'))
                                              for root in _EVAL_DIR.value):
      continue                                      # every run must have the case
    lr01, hr01, gt_kernel = evaluation.read_case_inputs(case, scale)
    hrs = case_settings(_STUDY.value, case, lr01, gt_kernel, scale, hr01, variants)
    rows[case['id']] = {k: v if np.ndim(v) == 0 else metrics.image_metrics(
        np.clip(np.asarray(v), 0, 1), hr01, scale)['psnr_y'] for k, v in hrs.items()}
    print(case['id'], ' '.join(f'{k} {v:.2f}' for k, v in rows[case['id']].items()), flush=True)
    write_result(rows, ' '.join(sys.argv), quiet=True)    # a stopped run keeps its cases
  if not rows:
    sys.exit('bp_study: error: no cases to study')
  write_result(rows, ' '.join(sys.argv))


if __name__ == '__main__':
  app.run(main)
