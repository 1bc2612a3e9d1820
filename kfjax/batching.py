"""Running N same-size cases at once: ``vmap`` over a leading case axis, sharded over devices.

With a ``Mesh`` whose one axis is named ``'cases'``, each device maps over its own
share of the cases (``jax.shard_map``), so no convolution is ever split across
devices: the result equals the one-device result.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = 'cases'


def case_mesh(n: int) -> Mesh | None:
  """A 1-D mesh of all devices over the case axis, or None (one device, or n not divisible).

  Multi-host: call ``jax.distributed.initialize()`` first; ``jax.devices()`` then
  lists every host's devices and the same mesh spans them.
  """
  devices = jax.devices()
  if len(devices) < 2 or n % len(devices):
    return None
  return Mesh(np.asarray(devices), (AXIS,))


def shard_cases(tree, mesh: Mesh | None):
  """Places a pytree whose leaves carry the case axis first onto the mesh (no-op without)."""
  if mesh is None:
    return tree
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(AXIS)))


def batch_map(f: Callable, in_axes: Sequence[int | None], mesh: Mesh | None = None) -> Callable:
  """``jax.vmap(f, in_axes)``; with a mesh, each device maps its own cases.

  ``in_axes`` entries are 0 (the argument carries the case axis first) or None
  (shared by every case). Every output carries the case axis first.
  """
  mapped = jax.vmap(f, in_axes=tuple(in_axes))
  if mesh is None:
    return mapped
  specs = tuple(PartitionSpec() if a is None else PartitionSpec(AXIS) for a in in_axes)
  # check_vma=False: scan carries initialised from constants (e.g. a zero loss) are
  # per-case values inside the map; the types need not be tracked across devices.
  return jax.shard_map(mapped, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(AXIS),
                       check_vma=False)
