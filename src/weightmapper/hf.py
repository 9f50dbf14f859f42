"""Hugging Face model folders and configs: config.json → an architecture; its files → an output.

A Hugging Face model folder holds ``config.json`` beside its weights (``model.safetensors``,
shards and an index, or ``pytorch_model.bin``). Its config names the architecture
(``architectures``, else ``model_type`` through ``AutoModel``); weightmapper builds that
architecture without downloading anything and, when converting onto it, writes the
folder's ``config.json`` (and ``generation_config.json``) beside the converted weights so
``from_pretrained`` loads the output. transformers is imported only when one is used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightmapper.errors import ConfigError

if TYPE_CHECKING:  # torch is imported by what builds modules, not by naming them
    from torch import nn

CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
CARRIED_FILES: tuple[str, ...] = (CONFIG_NAME, GENERATION_CONFIG_NAME)
"""Files of a target's folder written beside converted weights (those that exist)."""


def is_hf_folder(path: str | os.PathLike[str]) -> bool:
    """Path → True when it is a folder with a ``config.json`` naming a model type."""
    p = Path(path)
    cfg = p / CONFIG_NAME
    if not (p.is_dir() and cfg.is_file()):
        return False
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and bool(data.get("model_type") or data.get("architectures"))


def config_path(path: str | os.PathLike[str]) -> Path:
    """``config.json`` file or the folder holding one → the file; ConfigError if absent."""
    p = Path(path)
    file = p / CONFIG_NAME if p.is_dir() else p
    if not file.is_file():
        raise ConfigError(
            f"config {p} does not exist (expected a config.json file or a folder holding one); "
            "pass the Hugging Face config of the model, e.g. --target-config path/to/config.json"
        )
    return file


def read_config_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``config.json`` file or folder → its JSON object; ConfigError when unreadable."""
    file = config_path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"config {file} is not readable JSON ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config {file} holds {type(data).__name__}, expected a JSON object")
    return data


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> Any:
    """``config.json`` file or folder (+ field overrides) → a transformers PretrainedConfig."""
    data = {**read_config_dict(path), **(overrides or {})}
    model_type = data.get("model_type")
    transformers = import_transformers()
    if not model_type:
        raise ConfigError(
            f"config {config_path(path)} has no 'model_type'; expected a Hugging Face "
            "config.json as save_pretrained writes it"
        )
    try:
        return transformers.AutoConfig.for_model(**data)
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"config {config_path(path)}: transformers {transformers.__version__} cannot build "
            f"a config of model_type {model_type!r} ({e}); upgrade transformers or fix the config"
        ) from e


def import_transformers() -> Any:
    """() → the transformers module; ConfigError saying how to install it when absent."""
    try:
        import transformers
    except ImportError as e:
        raise ConfigError(
            "this target needs transformers, which is not installed; pip install transformers"
        ) from e
    return transformers


def model_class(name: str) -> Any:
    """transformers class name (``LlamaForCausalLM``, ``AutoModel``) → the class."""
    transformers = import_transformers()
    try:
        return getattr(transformers, name)
    except AttributeError:
        raise ConfigError(
            f"transformers {transformers.__version__} has no class {name!r}; expected a model "
            "class such as 'LlamaForCausalLM', 'BertModel' or 'AutoModelForCausalLM'"
        ) from None


def is_transformers_model_class(obj: Any) -> bool:
    """Any object → True when it is a transformers model class or Auto class."""
    module = getattr(obj, "__module__", "") or ""
    if not isinstance(obj, type) or not module.startswith("transformers"):
        try:
            import transformers
        except ImportError:
            return False
        return isinstance(obj, type) and issubclass(obj, transformers.PreTrainedModel)
    return hasattr(obj, "from_config") or hasattr(obj, "_from_config")


def build_from_config(cls: Any, config: Any) -> nn.Module:
    """transformers model class (or Auto class) + PretrainedConfig → the model, random init.

    Runs under whatever default device the caller set (``torch.device("meta")`` builds no
    memory). Nothing is downloaded.
    """
    builder = getattr(cls, "_from_config", None) or cls.from_config
    try:
        return builder(config)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ConfigError(
            f"building transformers {cls.__name__} from a {type(config).__name__} failed: {e}. "
            "Check that the config belongs to this model class."
        ) from e


def folder_model_class(path: str | os.PathLike[str]) -> Any:
    """Hugging Face folder or config → the model class its config names.

    ``architectures[0]`` when transformers knows it, else ``AutoModel`` (the base model of
    its ``model_type``).
    """
    data = read_config_dict(path)
    archs = data.get("architectures") or []
    transformers = import_transformers()
    for name in archs:
        if isinstance(name, str) and hasattr(transformers, name):
            return getattr(transformers, name)
    return transformers.AutoModel


def carried_files(config: str | os.PathLike[str]) -> dict[str, bytes]:
    """Config file or model folder → {file name: bytes} to write beside converted weights.

    ``config.json`` always (the given file, or the folder's); ``generation_config.json``
    when the folder (or the config file's folder) has one.
    """
    src = config_path(config)
    out: dict[str, bytes] = {}
    for name in CARRIED_FILES:
        file = src if name == CONFIG_NAME else src.parent / name
        if file.is_file():
            try:
                out[name] = file.read_bytes()
            except OSError as e:
                raise ConfigError(f"cannot read {file}: {e.strerror or e}") from e
    read_config_dict(src)  # a config that is not JSON would make an output that never loads
    return out
