"""Roles from dataflow against ground truth: the zoo's true pairs and transformers' own names.

Two tables:
- per zoo case (both splits): of the true source → target pairs, how many have a role read
  from the forward pass on both sides, and how many of those disagree (a true pair must play
  one role in both networks);
- per transformers family (models built from tiny configs): how many keys get a role, and how
  many disagree with the role its library's naming convention gives
  (``weightmapper.conventions``).

Run:  python bench/roles.py [--case NAME]      (always exits 0: a benchmark reports)
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

import zoo_path  # noqa: F401  (the reference zoo lives in tests/)
from weightmapper.conventions import load_conventions
from weightmapper.dataflow import dataflow_roles
from zoo import cases

_LM = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
       "num_attention_heads": 2, "vocab_size": 32}  # fmt: skip
FAMILIES = {
    "LlamaForCausalLM": ("LlamaConfig", {**_LM, "num_key_value_heads": 1}),
    "GemmaForCausalLM": ("GemmaConfig", {**_LM, "head_dim": 8, "num_key_value_heads": 1}),
    "Phi3ForCausalLM": ("Phi3Config", {**_LM, "pad_token_id": 0}),
    "PhiForCausalLM": ("PhiConfig", _LM),
    "MixtralForCausalLM": ("MixtralConfig", {**_LM, "num_local_experts": 2, "num_key_value_heads": 1}),
    "GPT2LMHeadModel": ("GPT2Config", {"n_embd": 16, "n_layer": 2, "n_head": 2, "vocab_size": 32}),
    "GPTNeoXForCausalLM": ("GPTNeoXConfig", _LM),
    "FalconForCausalLM": ("FalconConfig", {k: v for k, v in _LM.items() if k != "intermediate_size"}),
    "OPTForCausalLM": ("OPTConfig", {"hidden_size": 16, "ffn_dim": 32, "num_hidden_layers": 2,
                                     "num_attention_heads": 2, "vocab_size": 32,
                                     "word_embed_proj_dim": 16}),
    "BertForMaskedLM": ("BertConfig", _LM),
    "RobertaForMaskedLM": ("RobertaConfig", _LM),
    "ViTForImageClassification": ("ViTConfig", {"hidden_size": 16, "intermediate_size": 32,
                                                "num_hidden_layers": 2, "num_attention_heads": 2,
                                                "image_size": 16, "patch_size": 8,
                                                "num_labels": 3}),
}  # fmt: skip


def zoo_table(name: str | None) -> Table:
    """Zoo cases → table of true pairs with roles on both sides and disagreements."""
    table = Table(title="Roles from dataflow on the zoo's true pairs")
    for col in ("case", "pairs", "roles both sides", "disagree", "s"):
        table.add_column(col, justify="left" if col == "case" else "right")
    totals = [0, 0, 0]
    for case in cases(split=None):
        if (name and case.name != name) or not case.available():
            continue
        t0 = time.perf_counter()
        source, target = case.build_source(), case.build_target()
        x = case.dummy_input()
        rs, rt = dataflow_roles(source, x), dataflow_roles(target, x)
        both = [(s, t) for s, t in case.ground_truth.items() if s in rs and t in rt]
        bad = [(s, t) for s, t in both if rs[s].role != rt[t].role]
        pairs = len(case.ground_truth)
        totals = [totals[0] + pairs, totals[1] + len(both), totals[2] + len(bad)]
        table.add_row(
            case.name, str(pairs), str(len(both)), str(len(bad)), f"{time.perf_counter() - t0:.2f}"
        )
    table.add_row("all", *(str(v) for v in totals), "", style="bold")
    return table


def family_table() -> Table:
    """transformers families → table of keys with roles and disagreements with conventions."""
    table = Table(title="Roles from dataflow against transformers' naming conventions")
    for col in ("model", "keys", "roles", "agree", "disagree"):
        table.add_column(col, justify="left" if col == "model" else "right")
    try:
        import transformers
    except ImportError:
        table.add_row("(transformers is not installed)", "", "", "", "")
        return table
    conventions = load_conventions()
    for model, (config, fields) in FAMILIES.items():
        cfg = getattr(transformers, config)(**fields)
        cfg._attn_implementation = "eager"
        built = getattr(transformers, model)(cfg).eval()
        x = torch.randn(1, 3, 16, 16) if "ViT" in model else torch.randint(0, 32, (1, 6))
        roles = dataflow_roles(built, x)
        keys = list(built.state_dict())
        named, _ = conventions.roles(keys, architectures=[model])
        both = [k for k in keys if k in roles and k in named]
        agree = sum(roles[k].role == named[k].role for k in both)
        table.add_row(model, str(len(keys)), str(sum(k in roles for k in keys)), str(agree),
                      str(len(both) - agree))  # fmt: skip
    return table


def main() -> int:
    """Command line → exit code 0."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--case", help="one zoo case only")
    args = ap.parse_args()
    console = Console()
    console.print(zoo_table(args.case))
    if not args.case:
        console.print(family_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
