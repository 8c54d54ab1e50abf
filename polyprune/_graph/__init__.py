"""Private (engine): what a model computes, read from its traced :mod:`torch.fx` graph.

- :mod:`.trace`: tracing up to a named layer, what is upstream of it, which weights can reach it;
- :mod:`.ops`: THE op table, one entry per operation (its receptive-field rule and its channel
  behaviour), read by every analysis below;
- :mod:`.field`, :mod:`.interpret`: receptive fields and their propagation over the graph;
- :mod:`.paths`: which kernels lie on an input→unit path (effective masks);
- :mod:`.regions`: which mask elements can reach a unit;
- :mod:`.run`: forward passes stopped right after a layer, and reading one unit of a map;
- :mod:`.probe`: measuring a unit's field empirically, without tracing.

Nothing here imports polyprune's public modules.
"""
