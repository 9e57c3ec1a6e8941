"""Features of a frozen backbone, computed once per image and view, kept in a sharded store.

:mod:`.store` holds the rows (:class:`~.store.FeatureStore`: shards and their index;
:class:`~.store.FeatureRows`: reading them); :mod:`.extraction` is the feature pass that
fills the store from the images (:func:`~.extraction.fill_store`), over any
:class:`~.extraction.Encoder`.
"""
