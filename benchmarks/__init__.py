"""polyprune's benchmarks: clients of its public API only (no ``polyprune._*`` import).

Every benchmark runs from the repository root as a module, ``python -m benchmarks.NAME``; the
single-file ones (``recording``, ``scoring``, ``sparsify``, ``demo``, ``handbuilt``) also run as
``python benchmarks/NAME.py``. The paper's claims are the package :mod:`benchmarks.claims`,
which writes ``docs/results.md``. Tests import benchmarks as ordinary modules; benchmarks never
import tests.
"""
