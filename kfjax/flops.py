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


def _count(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'conv_general_dilated':
      total += _conv_flops(eqn)
    elif name == 'dot_general':
      total += _dot_flops(eqn)
    mult = eqn.params.get('length', 1) if name == 'scan' else 1
    for sub in jaxprs_in_params(eqn.params):
      total += mult * _count(sub)
  return total


def count_flops(fn, *args, **kwargs) -> int:
  """Convolution + matmul FLOPs (2 per multiply-add) of one call of ``fn(*args)``.

  Loops unrolled by ``lax.scan`` are multiplied by their length; ``while``
  loops (``fori_loop`` with traced bounds) count once.
  """
  closed = jax.make_jaxpr(fn)(*args, **kwargs)
  return _count(closed.jaxpr)
