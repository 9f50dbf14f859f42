"""Small model families for the demo and the pipeline benchmark.

Each family has an "old" architecture (the one checkpoints were trained with) and a
re-implementation with other names and module structure that computes the same function:

- :mod:`~weightmapper.examples.cnn`: ``OldCNN`` (one ``nn.Sequential``) → ``RefactoredCNN``
  (stem + stages of conv/BatchNorm blocks + head).
- :mod:`~weightmapper.examples.transformer`: ``OldTransformer`` (GPT-style names) →
  ``NewTransformer`` (other names, other nesting).
- :mod:`~weightmapper.examples.resnet`: a ResNet-50-shaped network in torchvision-style
  names → a refactored one, for the pipeline benchmark.

:func:`~weightmapper.examples.generate.ensure_example_checkpoints` writes a handful of
deterministic source checkpoints per family.
"""
