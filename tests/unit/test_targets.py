"""Target specs: every form builds its module; a wrong spec says which forms exist."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from weightmapper.cli.main import main
from weightmapper.errors import ConfigError
from weightmapper.targets import (
    LIBRARIES,
    build_module,
    is_module_spec,
    resolve_side,
    spec_problem,
)
from zoo.hf import TINY_LLAMA

NET_PY = """
from torch import nn


class Net(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(width, 2)
"""


def _llama_config(folder: Path, **extra: object) -> Path:
    from transformers import LlamaConfig

    cfg = LlamaConfig(**TINY_LLAMA, **extra)
    folder.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(folder)
    return folder / "config.json"


def test_module_in_the_current_folder_is_importable(tmp_path, monkeypatch) -> None:
    (tmp_path / "wm_cwd_nets.py").write_text(NET_PY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    module = build_module("wm_cwd_nets:Net", '{"width": 3}')
    assert module.fc.in_features == 3
    assert str(tmp_path) not in sys.path  # searched for the import, not left behind


def test_python_file_spec_with_a_sibling_import(tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "models"
    pkg.mkdir()
    (pkg / "wm_sibling_layers.py").write_text(NET_PY)
    (pkg / "net.py").write_text(
        "from wm_sibling_layers import Net\n\ndef build(width=5):\n    return Net(width)\n"
    )
    monkeypatch.chdir(tmp_path)
    assert is_module_spec("models/net.py:build")
    module = build_module("models/net.py:build")
    assert module.fc.in_features == 5
    # The same file is imported once: a second spec reuses the module.
    assert type(build_module("./models/net.py:build", {"width": 2})) is type(module)


def test_wrong_specs_list_the_forms_with_hints(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        resolve_side("mynets.Net")
    msg = str(e.value)
    assert "Did you mean 'mynets:Net'" in msg
    assert "transformers:ClassName" in msg and "file.py:callable" in msg and "timm:NAME" in msg
    with pytest.raises(ConfigError, match=r"'nets.py:Net'"):
        resolve_side("nets.py")
    with pytest.raises(ConfigError, match=r"no attribute 'Nte'.*close names: Net"):
        (tmp_path / "wm_typo_nets.py").write_text(NET_PY)
        build_module("wm_typo_nets.py:Nte")


def test_missing_constructor_argument_names_the_kwargs_flag(tmp_path, monkeypatch) -> None:
    (tmp_path / "wm_kw_nets.py").write_text(NET_PY)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        build_module("wm_kw_nets:Net")
    assert "--target-kwargs" in str(e.value) and '{"width": "..."}' in str(e.value)
    with pytest.raises(ConfigError, match="--source-kwargs"):
        build_module("wm_kw_nets:Net", flag="--source")


def test_transformers_class_with_a_config_builds_on_meta(tmp_path) -> None:
    pytest.importorskip("transformers")
    cfg = _llama_config(tmp_path / "cfg")
    for spec in ("transformers:LlamaForCausalLM", "transformers.LlamaForCausalLM"):
        model = build_module(spec, config=cfg, meta=True)
        assert type(model).__name__ == "LlamaForCausalLM"
        assert {p.device.type for p in model.parameters()} == {"meta"}
    # A folder holding config.json works as well; kwargs override config fields.
    model = build_module("transformers:LlamaModel", {"num_hidden_layers": 1}, config=cfg.parent)
    assert len(model.layers) == 1 and next(model.parameters()).device.type == "cpu"
    with pytest.raises(ConfigError, match="--target-config"):
        build_module("transformers:LlamaForCausalLM")
    with pytest.raises(ConfigError, match="no class 'LlamaForCasualLM'"):
        build_module("transformers:LlamaForCasualLM", config=cfg)
    with pytest.raises(ConfigError, match="--target-config applies to transformers"):
        build_module("torch.nn:Linear", {"in_features": 2, "out_features": 2}, config=cfg)


def test_a_hugging_face_folder_builds_its_architecture(tmp_path) -> None:
    pytest.importorskip("transformers")
    _llama_config(tmp_path / "hf", architectures=["LlamaForCausalLM"])
    assert is_module_spec(str(tmp_path / "hf"))
    model = build_module(str(tmp_path / "hf"), meta=True)
    assert type(model).__name__ == "LlamaForCausalLM"
    # No known architecture: the base model of its model_type.
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg["architectures"] = ["SomethingElse"]
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    assert type(build_module(str(tmp_path / "hf"), meta=True)).__name__ == "LlamaModel"
    assert not is_module_spec(str(tmp_path))  # a folder without config.json is a checkpoint


@pytest.mark.parametrize("library", ["timm", "torchvision"])
def test_library_specs_skip_cleanly_when_absent(library, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, library, None)  # import fails as when not installed
    assert is_module_spec(f"{library}:resnet18")
    with pytest.raises(ConfigError, match=f"{library} is not installed.*pip install {library}"):
        build_module(f"{library}:resnet18")


def test_library_registry_builds_and_suggests_names(monkeypatch) -> None:
    calls = []

    def create_model(name, pretrained=False, **kwargs):
        calls.append((name, pretrained, kwargs))
        return nn.Linear(2, kwargs.get("num_classes", 1))

    fake = types.SimpleNamespace(
        is_model=lambda n: n in {"resnet18", "resnet50"},
        list_models=lambda: ["resnet18", "resnet50"],
        create_model=create_model,
    )
    monkeypatch.setitem(sys.modules, "timm", fake)
    assert build_module("timm:resnet50", {"num_classes": 7}).out_features == 7
    assert calls == [("resnet50", False, {"num_classes": 7})]
    with pytest.raises(ConfigError, match=r"no model named 'resnet5'.*resnet50"):
        build_module("timm:resnet5")
    vision = types.SimpleNamespace(
        models=types.SimpleNamespace(
            list_models=lambda: ["vit_b_16"],
            get_model=lambda name, weights, **kw: nn.Linear(1, 1) if weights is None else None,
        )
    )
    monkeypatch.setitem(sys.modules, "torchvision", vision)
    assert isinstance(build_module("torchvision:vit_b_16"), nn.Linear)
    assert set(LIBRARIES) == {"timm", "torchvision"}


def test_job_file_spec_checks() -> None:
    for ok in ("a.b:C", "transformers:BertModel", "transformers.BertModel", "x/y.py:Net", "./hf"):
        assert spec_problem(ok) is None, ok
    assert "Did you mean 'a.b:C'" in (spec_problem("a.b.C") or "")
    assert spec_problem(3) is not None


def test_cli_map_onto_a_transformers_class(tmp_path, capsys) -> None:
    pytest.importorskip("transformers")
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = _llama_config(tmp_path / "cfg")

    model = LlamaForCausalLM(LlamaConfig.from_json_file(cfg))
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "old.pt")
    code = main(
        [
            "map",
            str(tmp_path / "old.pt"),
            "--target",
            "transformers:LlamaForCausalLM",
            "--target-config",
            str(cfg),
            "--out",
            str(tmp_path / "mapping.json"),
            "--quiet",
            "--min-coverage",
            "1.0",
        ]
    )
    assert code == 0, capsys.readouterr().err
    pairs = json.loads((tmp_path / "mapping.json").read_text())["pairs"]
    assert {p["source"]: p["target"] for p in pairs}["model.norm.weight"] == "model.norm.weight"


def test_cli_errors_exit_2_with_the_forms(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.save({"w": torch.zeros(2)}, tmp_path / "src.pt")
    assert main(["map", "src.pt", "--target", "mynets.Net", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'mynets:Net'" in err and "Traceback" not in err
    (tmp_path / "wm_cli_nets.py").write_text(NET_PY)
    assert main(["map", "src.pt", "--target", "wm_cli_nets:Net", "--quiet"]) == 2
    assert "--target-kwargs" in capsys.readouterr().err


def test_job_files_take_the_same_forms(tmp_path) -> None:
    pytest.importorskip("transformers")
    from weightmapper.pipeline.config import load_job
    from weightmapper.pipeline.stages import build_architecture

    _llama_config(tmp_path / "job" / "cfg")
    (tmp_path / "job" / "nets.py").write_text(NET_PY)
    (tmp_path / "job" / "job.yaml").write_text(
        "sources: [old/*.pt]\n"
        "source_module: {spec: nets.py:Net, kwargs: {width: 3}}\n"
        "target: {module: transformers:LlamaForCausalLM, config: cfg}\n"
        "output: {dir: out}\n"
    )
    m = load_job(tmp_path / "job" / "job.yaml").migrations[0]
    assert m.target.module is not None and m.source_module is not None
    assert m.target.module.config == tmp_path / "job" / "cfg"
    assert m.source_module.spec == f"{tmp_path / 'job' / 'nets.py'}:Net"
    target = build_architecture(m.target.module, meta=True)
    assert type(target).__name__ == "LlamaForCausalLM"
    assert build_architecture(m.source_module).fc.in_features == 3
    # The config takes part in the stage keys by content, never by path.
    assert m.target.module.to_dict()["config"]["model_type"] == "llama"
    (tmp_path / "bad.yaml").write_text(
        "sources: [x.pt]\ntarget: {module: mynets.Net}\noutput: {dir: out}\n"
    )
    with pytest.raises(ConfigError, match="Did you mean 'mynets:Net'"):
        load_job(tmp_path / "bad.yaml")


def test_a_python_file_or_a_model_config_as_checkpoint_says_what_to_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """They used to be refused as unreadable checkpoints, with no word on the spec forms."""
    nets = tmp_path / "nets.py"
    nets.write_text("import torch\n")
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    ckpt = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2)}, str(ckpt))
    cases = [
        (["validate", str(ckpt), "--target", str(nets)], f"'{nets}:Net'"),
        (["map", str(nets), "--target", str(ckpt)], f"'{nets}:Net'"),
        (["map", str(ckpt), "--target", str(folder / "config.json")], "name the folder"),
    ]
    for argv, hint in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert hint in err and "not a checkpoint" in err and "Traceback" not in err
