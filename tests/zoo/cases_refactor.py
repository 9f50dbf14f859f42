"""Refactors: the same network saved under other names (wrappers, synonyms, flattening, TF style).

The truth is the key map recorded while building the refactored model; the unit tests prove it
by equal outputs. Every refactor should be mapped 100% correctly.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn

from zoo.case import ModelInput, Truth, declare, truth_from_pairs
from zoo.cases_hf import (
    HEADS,
    HIDDEN,
    KV_HEADS,
    LAYERS,
    POSITIONS,
    VOCAB,
    D,
    token_ids,
)
from zoo.cases_vision import EFF_DEPTH, RESNET, images
from zoo.nets_effnet import TimmEffNet
from zoo.nets_resnet import TvResNet
from zoo.nets_text import HandBert, HandLlama, LMConfig
from zoo.nets_vgg import VggLike
from zoo.relocate import Relocated, Wrapped, rename_leaf_tensors


def _llama() -> nn.Module:
    return HandLlama(LMConfig(VOCAB, D, LAYERS, HEADS, KV_HEADS, HIDDEN), tied=True)


def _bert() -> nn.Module:
    return HandBert(VOCAB, POSITIONS, D, LAYERS, HEADS, HIDDEN)


def _truth_of(build: Callable[[], nn.Module], *, refactored_is_source: bool) -> Callable[[], Truth]:
    """Builder of a refactored model (with ``key_map``) → truth function for either direction."""

    def truth() -> Truth:
        key_map: dict[str, str] = getattr(build(), "key_map")  # noqa: B009 (set at build)
        if refactored_is_source:
            return truth_from_pairs((new, old) for old, new in key_map.items())
        return truth_from_pairs(key_map.items())

    return truth


def _refactor(
    name: str,
    plain: Callable[[], nn.Module],
    refactored: Callable[[], nn.Module],
    *,
    refactored_is_source: bool,
    dummy_input: Callable[[], ModelInput],
) -> None:
    declare(
        name,
        refactored if refactored_is_source else plain,
        plain if refactored_is_source else refactored,
        dummy_input,
        _truth_of(refactored, refactored_is_source=refactored_is_source),
    )


# --- wrapper prefixes ----------------------------------------------------------------------


def _resnet() -> nn.Module:
    return TvResNet(RESNET)


def _wrapped(build: Callable[[], nn.Module], prefix: str) -> Callable[[], nn.Module]:
    """Builder + prefix → a builder of the same model held under that prefix."""
    return lambda: Wrapped(build(), prefix)


for name, plain, wrapper, refactored_is_source, inputs in (
    # case, plain model, the prefix it is saved under, whether the wrapped one is the source
    ("refactor_ddp_module_prefix", _resnet, "module", True, images),
    ("refactor_compiled_orig_mod_prefix", _llama, "_orig_mod", True, token_ids),
    ("refactor_model_prefix", _bert, "model", False, token_ids),
    ("refactor_backbone_body_prefix", _resnet, "backbone.body", False, images),
):
    _refactor(
        name,
        plain,
        _wrapped(plain, wrapper),
        refactored_is_source=refactored_is_source,
        dummy_input=inputs,
    )


# --- renamed layers ------------------------------------------------------------------------

_SYNONYMS = (
    (re.compile(r"^bn(\d*)$"), r"norm\1"),
    (re.compile(r"^fc$"), "linear"),
    (re.compile(r"^downsample$"), "shortcut"),
    (re.compile(r"^layer(\d+)$"), r"stage\1"),
)


def synonym_path(path: str) -> str:
    """ResNet module path → synonyms (bn→norm, fc→linear, downsample→shortcut, ...)."""
    out = []
    for seg in path.split("."):
        for pat, rep in _SYNONYMS:
            seg = pat.sub(rep, seg)
        out.append(seg)
    return ".".join(out)


def flat_path(path: str) -> str:
    """Module path → one flat attribute name (``layer1.0.conv1`` → ``layer1_0_conv1``)."""
    return path.replace(".", "_")


def sequential_names(model: nn.Module) -> Callable[[str], str]:
    """Model → a path renamer: Sequential indices become type names (``0`` → ``conv2d0``)."""
    table: dict[str, str] = {"": ""}
    for path, mod in model.named_modules():
        for name, child in mod.named_children():
            full = f"{path}.{name}" if path else name
            seg = (
                f"{type(child).__name__.lower()}{name}" if isinstance(mod, nn.Sequential) else name
            )
            table[full] = f"{table[path]}.{seg}" if path else seg
    return lambda p: table[p]


_LLAMA_RENAMES = (
    ("transformer.h.", "decoder.layers."),
    ("transformer.wte", "decoder.embed_tokens"),
    ("transformer.ln_f", "decoder.final_norm"),
    (".attn.", ".attention."),
    (".mlp.", ".ffn."),
    ("norm_1", "norm1"),
    ("norm_2", "norm2"),
    ("lm_head", "output"),
)


def llama_path(path: str) -> str:
    """litgpt-like Llama module path → another library's names."""
    for old, new in _LLAMA_RENAMES:
        path = path.replace(old, new)
    return path


def _seq_renamed() -> nn.Module:
    vgg = VggLike()
    return Relocated(vgg, sequential_names(vgg))


def _tf_effnet() -> nn.Module:
    net = TimmEffNet(EFF_DEPTH)
    net.key_map = rename_leaf_tensors(net)  # type: ignore[assignment]
    return net


_refactor(
    "refactor_synonyms_shuffled",
    lambda: TvResNet(RESNET),
    lambda: Relocated(TvResNet(RESNET), synonym_path, order_seed=0),
    refactored_is_source=False,
    dummy_input=images,
)
_refactor(
    "refactor_flattened_names",
    lambda: TvResNet(RESNET),
    lambda: Relocated(TvResNet(RESNET), flat_path),
    refactored_is_source=True,
    dummy_input=images,
)
_refactor(
    "refactor_sequential_to_named",
    VggLike,
    _seq_renamed,
    refactored_is_source=False,
    dummy_input=images,
)
_refactor(
    "refactor_tf_style_names",
    lambda: TimmEffNet(EFF_DEPTH),
    _tf_effnet,
    refactored_is_source=True,
    dummy_input=lambda: images(8),
)
_refactor(
    "refactor_llama_renamed_shuffled",
    _llama,
    lambda: Relocated(_llama(), llama_path, order_seed=1),
    refactored_is_source=False,
    dummy_input=token_ids,
)


def _everything_at_once() -> nn.Module:
    """ResNet saved as a flattened, TF-named, shuffled export inside a DDP wrapper."""
    base = TvResNet(RESNET)
    # rename first, so the views are what forward calls and what gets relocated
    tf = rename_leaf_tensors(base)
    moved = Relocated(base, lambda p: f"module.{flat_path(p)}", order_seed=3)
    moved.key_map = {old: moved.key_map[mid] for old, mid in tf.items()}
    return moved


_refactor(
    "refactor_everything_at_once",
    lambda: TvResNet(RESNET),
    _everything_at_once,
    refactored_is_source=True,
    dummy_input=images,
)
