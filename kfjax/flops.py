"""FLOP counting from a function's jaxpr: every convolution and matmul, forward and backward.

Counting from the traced program (rather than from a formula per model) keeps
the count honest when a model or a step changes: the backward convolutions of
``jax.grad`` appear in the jaxpr as convolutions too.
"""

from __future__ import annotations

import math

import jax

try:
  from jax.extend.core import jaxprs_in_params
except ImportError:  # older jax
  from jax.core import jaxprs_in_params


def _conv_flops(eqn) -> int:
  rhs = eqn.invars[1].aval
  out = eqn.outvars[0].aval
  rhs_spec = eqn.params['dimension_numbers'].rhs_spec   # (out feat, in feat, *spatial)
  k_in = rhs.shape[rhs_spec[1]]
  k_spatial = math.prod(rhs.shape[d] for d in rhs_spec[2:])
  return 2 * math.prod(out.shape) * k_in * k_spatial


def _dot_flops(eqn) -> int:
  lhs = eqn.invars[0].aval
  (lc, _), _ = eqn.params['dimension_numbers']
  contract = math.prod(lhs.shape[d] for d in lc)
  return 2 * math.prod(eqn.outvars[0].aval.shape) * contract


def _conv_gemm(eqn) -> tuple[int, int, int]:
  """(M, N, K) of a convolution as a matrix product: outputs × out features × contraction."""
  out = eqn.outvars[0].aval
  out_feat = out.shape[eqn.params['dimension_numbers'].out_spec[1]]
  groups = eqn.params['feature_group_count'] * eqn.params['batch_group_count']
  k = _conv_flops(eqn) // (2 * math.prod(out.shape))
  return math.prod(out.shape) // out_feat, out_feat // groups, k


def _walk(jaxpr, visit, mult=1):
  """Calls ``visit(eqn, times)`` on each equation, inside nested jaxprs too."""
  for eqn in jaxpr.eqns:
    visit(eqn, mult)
    inner = mult * (eqn.params.get('length', 1) if eqn.primitive.name == 'scan' else 1)
    for sub in jaxprs_in_params(eqn.params):
      _walk(sub, visit, inner)


def _count(jaxpr) -> int:
  total = [0]

  def visit(eqn, times):
    if eqn.primitive.name == 'conv_general_dilated':
      total[0] += times * _conv_flops(eqn)
    elif eqn.primitive.name == 'dot_general':
      total[0] += times * _dot_flops(eqn)
  _walk(jaxpr, visit)
  return total[0]


def count_flops(fn, *args, **kwargs) -> int:
  """Convolution + matmul FLOPs (2 per multiply-add) of one call of ``fn(*args)``.

  Loops unrolled by ``lax.scan`` are multiplied by their length; ``while``
  loops (``fori_loop`` with traced bounds) count once.
  """
  closed = jax.make_jaxpr(fn)(*args, **kwargs)
  return _count(closed.jaxpr)


def conv_gemm_shapes(fn, *args, **kwargs) -> dict:
  """Convolution FLOPs of one call of ``fn(*args)``, by the shape of the equivalent GEMM.

  Returns ``{(M, N, K): flops}``: M outputs (batch × spatial), N output features per
  group, K the contraction (input features × kernel taps). A matrix unit (tensor cores)
  runs near its rate only when all three are large; a 3-channel input or a 4-channel
  output caps it however large the image. Weight gradients appear as convolutions whose
  contraction is the image (K = H·W) and whose M × N is the kernel's taps × features.
  """
  closed = jax.make_jaxpr(fn)(*args, **kwargs)
  shapes = {}

  def visit(eqn, times):
    if eqn.primitive.name == 'conv_general_dilated':
      key = _conv_gemm(eqn)
      shapes[key] = shapes.get(key, 0) + times * _conv_flops(eqn)
  _walk(closed.jaxpr, visit)
  return shapes
