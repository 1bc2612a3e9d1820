"""Test-session setup: one persistent XLA compilation cache for the whole run.

Many tests build the same small programs again (each pipeline run makes its own
jitted steps, and main.py runs in subprocesses). With one cache folder for the
session, only the first build of each program compiles; the rest load it. The
folder is new for each session, so no run depends on another. Counted compilations
(the '/jax/core/compile/backend_compile_duration' event) are the same with or without it:
JAX records that event for a program loaded from the cache too.
"""

import atexit
import os
import shutil
import tempfile

import jax

_CACHE = tempfile.mkdtemp(prefix='kfjax-test-xla-')
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ['KFJAX_COMPILATION_CACHE'] = _CACHE          # main.py and tools in subprocesses
jax.config.update('jax_compilation_cache_dir', _CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
