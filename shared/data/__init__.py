"""Data for layercast: the synthetic street benchmark and the COCO / Cityscapes loaders.

- :mod:`.synth` renders scenes (:func:`~.synth.render_scene`, :class:`~.synth.SyntheticCamera`);
  :mod:`.synth_layout`, :mod:`.synth_background`, :mod:`.synth_objects` and :mod:`.raster` build them.
- :mod:`.writers` writes splits in the real COCO 2017 and Cityscapes layouts (``layercast data synth``).
- :mod:`.coco` and :mod:`.cityscapes` are the torch datasets; :mod:`.transforms` pairs augmentations.
- :mod:`.camera` holds the pinhole model and Cityscapes' disparity conventions; :mod:`.labels` the
  official Cityscapes label table and the COCO categories used.

Nothing is imported here, so ``import layercast.shared.data`` stays cheap (torch loads with the loaders).
"""
