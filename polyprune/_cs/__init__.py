"""Private (engine): Continuous Sparsification — the sigmoid-mask parametrization
(:mod:`.soft_masks`), the sparsifier and its temperature schedule (:mod:`.sparsifier`), the
settings of a fit (:mod:`.config`) and the training loop (:mod:`.fit`).

The public names live in :mod:`polyprune.sparsify`.
"""
