"""The embedded default world, in one package: generator, writer, palette, exact detector and colour classifier.

* :mod:`reca.shapeworld.world`: scenes, the palette, rendering, and the world
  recipes that sample and caption scenes by GenEval's prompt rules;
* :mod:`reca.shapeworld.writer`: ``reca make-world``, the ``data/raw`` tree the
  pipeline starts from;
* :mod:`reca.shapeworld.detector`: the exact detector and palette colour
  classifier that score generated world images under GenEval's rules.

The world builds on GenEval's rules (``reca.evaluation``); nothing in
``reca.evaluation`` imports the world: the ``evaluate`` stage picks this
world's detector or a learned one.
"""
