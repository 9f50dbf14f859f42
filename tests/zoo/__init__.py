"""Reference model pairs with exact ground truth, for tests and ``bench/accuracy.py``.

Each :class:`ZooCase` builds a source and a target model (HF transformers models only from
small configs, imported lazily; hand-written re-implementations with other names and
registration orders), a deterministic input, and the true source → target mapping, with
transforms, splits/merges and the keys that have no partner. Categories:

- ``refactor``: the same network under other names (wrapper prefixes, synonyms, flattened,
  ``Sequential`` indices → names, TF-style names, shuffled order); must map 100%.
- ``cross_library``: the same network as two libraries write it (one-to-one).
- ``transform``: pairs that need tensor transforms (transposes, reshapes, fused/split qkv).
- ``trap``: resized head, BatchNorm → GroupNorm, deeper/shallower, backbone in a detector.

One registry holds every case; each belongs to a split (``tune`` or ``heldout``, see
:mod:`zoo.heldout`), and :func:`cases` returns the tuning split unless asked otherwise.

Usage::

    from zoo import cases, get_case
    case = get_case("resnet_tv_to_timm_names")
    src, tgt = case.build_source(), case.build_target()
    tgt.load_state_dict(case.convert_with_ground_truth(src.state_dict()))
"""

from __future__ import annotations

from zoo import (  # noqa: F401  (importing registers the cases)
    cases_hf,
    cases_ports,
    cases_refactor,
    cases_traps,
    cases_vision,
    heldout,
)
from zoo.case import (
    CASES,
    CATEGORIES,
    SPLITS,
    ExpectedMulti,
    Truth,
    ZooCase,
    apply_truth_multi,
    apply_truth_transform,
    cases,
    get_case,
)
from zoo.check import (
    OutputCheck,
    convert_and_compare,
    model_output,
    randomize_,
    source_with_weights,
)

__all__ = [
    "CASES",
    "CATEGORIES",
    "SPLITS",
    "ExpectedMulti",
    "OutputCheck",
    "Truth",
    "ZooCase",
    "apply_truth_multi",
    "apply_truth_transform",
    "cases",
    "convert_and_compare",
    "get_case",
    "model_output",
    "randomize_",
    "source_with_weights",
]
