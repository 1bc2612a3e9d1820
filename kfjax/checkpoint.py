"""Orbax checkpoints of the Phase-1 and Phase-2 states.

A :class:`StateCheckpointer` is one Orbax ``CheckpointManager`` for one state
pytree (``PDState`` or ``P2State``). Orbax writes each step to a temporary
folder and renames it when complete, so a killed run never leaves a
half-written checkpoint that a re-run would restore.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class StateCheckpointer:
  """Saves and restores one state pytree under ``directory`` by integer step."""

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 2,
               fingerprint: dict | None = None):
    """Opens (and creates) ``directory``.

    Args:
      directory: where the steps live.
      max_to_keep: older steps are deleted.
      fingerprint: a JSON-able description of what produced the state (config,
        input shape). A directory whose stored fingerprint differs is not
        resumed from: :meth:`restore_latest` returns None.
    """
    self.directory = os.path.abspath(os.fspath(directory))
    os.makedirs(self.directory, exist_ok=True)
    self._fingerprint = fingerprint
    self._matches = self._check_fingerprint()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=True))

  def _check_fingerprint(self) -> bool:
    path = os.path.join(self.directory, 'fingerprint.json')
    if self._fingerprint is None:
      return True
    text = json.dumps(self._fingerprint, sort_keys=True, default=str)
    if os.path.exists(path):
      with open(path) as f:
        if f.read() == text:
          return True
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, path)
    return False

  def latest_step(self) -> int | None:
    """The newest complete step that may be resumed from, or None."""
    return self._manager.latest_step() if self._matches else None

  def restore_latest(self, template: Any) -> tuple[int, Any] | None:
    """Restores the newest step into the structure of ``template``, or None."""
    step = self.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    return step, state

  def save(self, step: int, state: Any) -> None:
    """Saves ``state`` as ``step`` (asynchronously; see :meth:`wait`)."""
    if not self._matches:
      # The directory held another run's steps: drop them before the first save.
      for old in self._manager.all_steps():
        self._manager.delete(old)
      self._matches = True
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def wait(self) -> None:
    """Blocks until every pending save is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
