"""Target specs: the string a user names an architecture with → the nn.Module it builds.

Used by the CLI and job files wherever a target (or a source architecture) is named. The
forms, tried in this order:

- ``transformers:ClassName`` or ``transformers.ClassName`` + a config (``config.json`` or
  the folder holding it): a transformers class built from that config, nothing downloaded;
- a Hugging Face model folder (``config.json`` + weights): the architecture its config
  names (``architectures``, else ``AutoModel``);
- ``timm:NAME`` / ``torchvision:NAME``: a model from those libraries' registries, when
  installed (built without pretrained weights);
- ``path/to/file.py:callable``: a class or factory defined in a Python file;
- ``pkg.module:callable``: a class or factory importable from Python; the current folder
  is importable too (``mynets:Net`` beside ``mynets.py``).

Anything else that exists on disk is a checkpoint of the target architecture. Keyword
arguments go to the callable; for a transformers class they override config fields.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightmapper import hf
from weightmapper.errors import ConfigError

if TYPE_CHECKING:  # torch loads when a module is built: naming specs (--help) stays light
    from torch import nn

SPEC_FORMS: tuple[str, ...] = (
    "pkg.module:callable   a class or factory importable from Python (the current folder "
    "included), e.g. mynets:Net",
    "path/to/file.py:callable   a class or factory defined in a Python file",
    "transformers:ClassName with a config (--target-config config.json|DIR), e.g. "
    "transformers:LlamaForCausalLM",
    "path/to/model-folder   a Hugging Face folder (config.json + weights): its architecture",
    "timm:NAME, torchvision:NAME   a model of those libraries, when installed",
    "path/to/checkpoint   a checkpoint of the target architecture (names and shapes only)",
)
"""Every form a spec may take, one line each, for help and error texts."""

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"^{_IDENT}(\.{_IDENT})+$")
MODULE_SPEC = re.compile(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*$")
"""``package.module:callable.attr``: a module spec by import name."""


# --- registries of model libraries -------------------------------------------------------


def _timm(name: str, kwargs: dict[str, Any]) -> nn.Module:
    timm = _import_library("timm")
    if not timm.is_model(name):
        raise ConfigError(_unknown_model("timm", name, timm.list_models()))
    return timm.create_model(name, pretrained=False, **kwargs)


def _torchvision(name: str, kwargs: dict[str, Any]) -> nn.Module:
    models = _import_library("torchvision").models
    known = models.list_models()
    if name not in known:
        raise ConfigError(_unknown_model("torchvision", name, known))
    return models.get_model(name, weights=None, **kwargs)


LIBRARIES: dict[str, Callable[[str, dict[str, Any]], nn.Module]] = {
    "timm": _timm,
    "torchvision": _torchvision,
}
"""``library:NAME`` specs: library name → builder of a named model (no pretrained weights)."""


def _import_library(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ConfigError(
            f"the spec names a {name} model, but {name} is not installed here ({e}); "
            f"pip install {name}, or name the target another way"
        ) from e


def _unknown_model(library: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=5)
    hint = f"; close names: {', '.join(close)}" if close else ""
    return f"{library} has no model named {name!r}{hint}"


# --- classifying a spec ------------------------------------------------------------------


def _split_file_spec(spec: str) -> tuple[Path, str] | None:
    """``path/to/file.py:callable`` → (file, callable); None for any other form."""
    head, sep, attr = spec.rpartition(":")
    if sep and head.endswith(".py") and attr:
        return Path(head), attr
    return None


def _transformers_class_name(spec: str) -> str | None:
    """``transformers:X`` / ``transformers.X`` → ``X``; None for any other form."""
    for prefix in ("transformers:", "transformers."):
        if spec.startswith(prefix) and re.fullmatch(_IDENT, spec[len(prefix) :]):
            return spec[len(prefix) :]
    return None


def is_module_spec(spec: str, config: str | os.PathLike[str] | None = None) -> bool:
    """Spec string (+ config) → True when it builds a module rather than naming a checkpoint."""
    if config is not None or _transformers_class_name(spec) is not None:
        return True
    if _split_file_spec(spec) is not None:
        return True
    if hf.is_hf_folder(spec):
        return True
    head, sep, _ = spec.partition(":")
    if sep and head in LIBRARIES:
        return True
    return bool(MODULE_SPEC.match(spec)) and not Path(spec).exists()


def spec_problem(spec: Any) -> str | None:
    """Spec from a job file → None when it has a known form, else what is wrong with it."""
    if not isinstance(spec, str) or not spec.strip():
        return f"expected a spec string, found {spec!r}"
    if (
        _transformers_class_name(spec)
        or _split_file_spec(spec)
        or MODULE_SPEC.match(spec)
        or spec.partition(":")[0] in LIBRARIES
        or ("/" in spec or os.sep in spec or spec.startswith("."))
    ):
        return None
    return unknown_spec_message(spec)


def spec_path(spec: str) -> str | None:
    """Spec → the file or folder path it contains (``file.py`` of ``file.py:X``, a model
    folder), None for specs that name importable code or a library model."""
    file_spec = _split_file_spec(spec)
    if file_spec is not None:
        return str(file_spec[0])
    if _transformers_class_name(spec) or MODULE_SPEC.match(spec):
        return None
    if spec.partition(":")[0] in LIBRARIES:
        return None
    return spec


def unknown_spec_message(spec: str, what: str = "target") -> str:
    """A spec that is no known form and no existing path → a message listing the forms."""
    hint = ""
    if spec.endswith(".py"):
        hint = f" Name the callable after a colon, e.g. '{spec}:Net'."
    elif _DOTTED.match(spec):
        mod, _, attr = spec.rpartition(".")
        hint = f" Did you mean '{mod}:{attr}' (a colon before the callable)?"
    forms = "\n  - ".join(SPEC_FORMS)
    return (
        f"{what} {spec!r} is neither an existing checkpoint nor a spec of a known form.{hint}\n"
        f"A {what} can be:\n  - {forms}"
    )


def not_a_checkpoint(spec: str, what: str = "target", flag: str = "--target") -> str | None:
    """An existing path taken as a checkpoint → None, or what it is instead and what to pass.

    A Python file (the callable's name forgotten) and a model's ``config.json`` (weights
    are elsewhere) are common slips that a checkpoint reader would only call unreadable.
    """
    p = Path(spec)
    if not p.is_file():
        return None
    if p.suffix == ".py":
        return (
            f"{what} {spec!r} is a Python file, not a checkpoint; name the callable that builds "
            f"the model after a colon, e.g. '{spec}:Net'"
        )
    if p.name == hf.CONFIG_NAME and hf.is_hf_folder(p.parent):
        return (
            f"{what} {spec!r} is a model config, not a checkpoint; name the folder holding it "
            f"({str(p.parent)!r}), or a transformers class with {flag}-config {spec}"
        )
    return None


def resolve_side(
    spec: str,
    *,
    kwargs: dict[str, Any] | str | None = None,
    config: str | os.PathLike[str] | None = None,
    meta: bool = False,
    what: str = "target",
    flag: str = "--target",
) -> nn.Module | Path:
    """CLI spec (+ kwargs, config) → the module it builds, or the checkpoint path it names.

    ``flag`` names the option the user gave (``--target`` or ``--source``), so errors
    point at ``{flag}-kwargs`` and ``{flag}-config``.
    """
    if is_module_spec(spec, config):
        return build_module(spec, kwargs, config=config, meta=meta, flag=flag)
    path = checkpoint_path(spec, what, flag)
    if kwargs:
        raise ConfigError(
            f"{flag}-kwargs applies to a module spec, but {spec!r} is a checkpoint path; "
            f"drop {flag}-kwargs or name a callable"
        )
    return path


def checkpoint_path(spec: str, what: str = "target", flag: str = "--target") -> Path:
    """A spec taken as a checkpoint → its Path; ConfigError when nothing is there (listing
    the forms a spec takes) or when it is a Python file or a model config instead."""
    if not Path(spec).exists():
        raise ConfigError(unknown_spec_message(spec, what))
    problem = not_a_checkpoint(spec, what, flag)
    if problem is not None:
        raise ConfigError(problem)
    return Path(spec)


# --- building ----------------------------------------------------------------------------


def parse_kwargs(kwargs: dict[str, Any] | str | None, flag: str = "--target") -> dict[str, Any]:
    """Keyword arguments as a dict or JSON text → a dict; ConfigError when malformed."""
    if isinstance(kwargs, str):
        from weightmapper.bounded_json import loads_bounded  # numpy: not for --help

        try:
            kwargs = loads_bounded(kwargs) if kwargs.strip() else {}
        except ValueError as e:
            raise ConfigError(
                f"{flag}-kwargs is not valid JSON ({e}): {kwargs!r}; expected an object such "
                "as '{\"num_classes\": 10}'"
            ) from e
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise ConfigError(
            f"{flag}-kwargs must be a JSON object, got {type(kwargs).__name__}; e.g. "
            "'{\"num_classes\": 10}'"
        )
    return dict(kwargs)


def build_module(
    spec: str,
    kwargs: dict[str, Any] | str | None = None,
    *,
    config: str | os.PathLike[str] | None = None,
    meta: bool = False,
    flag: str = "--target",
) -> nn.Module:
    """Spec (+ kwargs, + config file or folder) → the nn.Module it names, built fresh.

    ``meta`` builds it on the meta device (no memory, no initialisation): enough for
    mapping, not for running. Imports user code named by the user, which is the point of
    a spec; nothing is imported from a checkpoint, nothing is downloaded.
    """
    import torch
    from torch import nn

    kw = parse_kwargs(kwargs, flag)
    with torch.device("meta") if meta else contextlib.nullcontext():
        built = _build(spec, kw, config, flag)
    if not isinstance(built, nn.Module):
        raise ConfigError(
            f"spec {spec!r} returned {type(built).__name__}, expected a torch.nn.Module"
        )
    return built


def _build(spec: str, kw: dict[str, Any], config: str | os.PathLike[str] | None, flag: str) -> Any:
    from torch import nn

    cls_name = _transformers_class_name(spec)
    if cls_name is not None:
        if config is None:
            raise ConfigError(
                f"{spec!r} is a transformers class; give its config with {flag}-config "
                "config.json (or the folder holding it). Nothing is downloaded."
            )
        return hf.build_from_config(hf.model_class(cls_name), hf.load_config(config, kw))
    if hf.is_hf_folder(spec):
        cfg = spec if config is None else config
        return hf.build_from_config(hf.folder_model_class(cfg), hf.load_config(cfg, kw))
    head, sep, name = spec.partition(":")
    if sep and head in LIBRARIES and config is None:
        return LIBRARIES[head](name, kw)
    obj = _resolve_callable(spec)
    if config is not None:
        if not hf.is_transformers_model_class(obj):
            raise ConfigError(
                f"{flag}-config applies to transformers model classes, but {spec!r} names "
                f"{getattr(obj, '__name__', type(obj).__name__)}; pass its arguments with "
                f"{flag}-kwargs instead"
            )
        return hf.build_from_config(obj, hf.load_config(config, kw))
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise ConfigError(f"spec {spec!r} names a {type(obj).__name__}, not a class or function")
    try:
        return obj(**kw)
    except TypeError as e:
        names = re.findall(r"'(\w+)'", str(e)) if "required" in str(e) else []
        example = json.dumps({n: "..." for n in names} or {"num_classes": 10})
        raise ConfigError(
            f"calling {spec} with {kw} failed: {e}. Pass its arguments as a JSON object with "
            f"{flag}-kwargs, e.g. {flag}-kwargs '{example}' (in a job file: kwargs:)"
        ) from e
    except Exception as e:  # user code: any other failure of the constructor is a bad spec
        raise ConfigError(
            f"building {spec} with {str(kw)[:200]} failed: {type(e).__name__}: "
            f"{str(e)[:300]}. Expected arguments the callable accepts; check {flag}-kwargs "
            "(in a job file: kwargs:) against its signature."
        ) from e


def _resolve_callable(spec: str) -> Any:
    """``file.py:attr`` or ``pkg.module:attr`` → the object it names."""
    file_spec = _split_file_spec(spec)
    if file_spec is not None:
        module = _import_file(*file_spec)
        mod_name, attr = str(file_spec[0]), file_spec[1]
    else:
        mod_name, sep, attr = spec.partition(":")
        if not sep or not MODULE_SPEC.match(spec):
            raise ConfigError(unknown_spec_message(spec))
        module = _import_module(mod_name, spec)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in vars(module) if not n.startswith("_"))
            close = difflib.get_close_matches(part, public, n=5)
            hint = f"; close names: {', '.join(close)}" if close else ""
            raise ConfigError(f"{mod_name!r} has no attribute {attr!r} (spec {spec!r}){hint}")
        obj = getattr(obj, part)
    return obj


def _import_module(name: str, spec: str) -> Any:
    """Module name → the module; the current folder is searched too, after installed code."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        top = name.split(".")[0]
        cwd = os.getcwd()
        # A console script does not put the current folder on sys.path (python -m does):
        # a module beside the user is what they mean by `mynets:Net`.
        here = (Path(cwd) / top).is_dir() or (Path(cwd) / f"{top}.py").is_file()
        if e.name == top and here and cwd not in sys.path:
            with _on_path(cwd):
                try:
                    return importlib.import_module(name)
                except ImportError as e2:
                    raise _import_error(name, spec, e2) from e2
        raise _import_error(name, spec, e) from e
    except ImportError as e:
        raise _import_error(name, spec, e) from e


def _import_error(name: str, spec: str, e: ImportError) -> ConfigError:
    return ConfigError(
        f"cannot import {name!r} for spec {spec!r}: {e}. Expected an installed package, a "
        "module in the current folder, or a file named as path/to/file.py:callable."
    )


def _import_file(path: Path, attr: str) -> Any:
    """``path/to/file.py`` → the module it defines (imported once per file content)."""
    if not path.is_file():
        raise ConfigError(
            f"spec file {path} does not exist; expected path/to/file.py:callable with an "
            "existing Python file"
        )
    real = path.resolve()
    digest = hashlib.sha256(str(real).encode()).hexdigest()[:12]
    stem = re.sub(r"\W", "_", real.stem)
    name = f"_weightmapper_spec_{stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, real)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"cannot import {path} as Python source; expected a .py file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        # Its own folder is importable while it runs, as for `python file.py`: sibling
        # modules it imports are found.
        with _on_path(str(real.parent)):
            module_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise ConfigError(
            f"importing {path} for spec {path}:{attr} failed: {type(e).__name__}: {e}"
        ) from e
    return module


@contextlib.contextmanager
def _on_path(folder: str) -> Iterator[None]:
    """Folder → importable for the block, searched after everything else on sys.path."""
    added = folder not in sys.path
    if added:
        sys.path.append(folder)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)
