"""Grafting Beam's own interactive cache transforms into a pipeline proto.

The subgraphs are built by the Beam SDK itself (``reify_to_cache`` /
``unreify_from_cache`` over a ``FileBasedCacheManager`` or ``StreamingCache``,
and ``TestStream``), exactly as ``caching/write_cache.py`` and
``read_cache.py`` do, then copied into the target proto under fresh ids.
One module per concept, imports pointing down:

* :mod:`~beaminst.graft.grafter`: the :class:`Grafter` the passes use: which
  template a PCollection needs, and copying a piece into the target
  (identical coders and windowing strategies reused by content);
* :mod:`~beaminst.graft.store`: templates kept on disk across processes;
* :mod:`~beaminst.graft.templates`: building the pieces with the Beam SDK
  (the only module here that imports it);
* :mod:`~beaminst.graft.subgraph`: a built piece and where its key sits;
* :mod:`~beaminst.graft.pickles`: substituting a key inside Beam's pickled payloads.

Importing this package does not import the Beam SDK; with every template a
pipeline needs on disk, instrumenting it never does.
"""

from beaminst.graft.grafter import Grafter, GraftResult, UnsupportedComponentError
from beaminst.graft.subgraph import Subgraph, template_key

__all__ = ["GraftResult", "Grafter", "Subgraph", "UnsupportedComponentError", "template_key"]
