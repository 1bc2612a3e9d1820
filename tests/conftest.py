"""Test-session setup: one persistent XLA compilation cache for the whole run.

Many tests build the same small programs again (each pipeline run makes its own
jitted steps, and main.py and the tools run in subprocesses). With one cache folder
for the session, only the first build of each program compiles; the rest load it.
The folder is a new temporary one for each session, so no run depends on another;
a ``KFJAX_COMPILATION_CACHE`` already set (a folder, or ``off``) is used instead.
Counted compilations (the '/jax/core/compile/backend_compile_duration' event) are the
same with or without it: JAX records that event for a program loaded from the cache too.
"""

import atexit
import os
import shutil
import tempfile

import kfjax

if not os.environ.get('KFJAX_COMPILATION_CACHE'):
  os.environ['KFJAX_COMPILATION_CACHE'] = tempfile.mkdtemp(prefix='kfjax-test-xla-')
  atexit.register(shutil.rmtree, os.environ['KFJAX_COMPILATION_CACHE'], ignore_errors=True)
kfjax.enable_compilation_cache()      # here; pytest-xdist's workers and subprocesses read the
                                      # variable, so they all share the folder
