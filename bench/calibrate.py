"""Fit the score calibration on one part of the accuracy bench and check it on another.

Every case of the reference zoo (``tests/zoo``) is mapped in four modes (with a dummy
input, without, from a bare state dict, and from a ``.safetensors`` file whose keys are
stored sorted, as most users start) at threshold 0, so every proposed pair counts, wrong
ones included; ``bench/accuracy.py``'s ``evaluate`` says which predicted units are right
(keys and tensor). The map (:mod:`weightmapper.engine.calibration`) is fitted on the
``tune`` split: a logistic fit of the features (the raw score, the signals, the runner-up
margin, role agreement or conflict, an exact name, a unique shape, a layout assumed from
names; non-negative coefficients on evidence, non-positive on doubts), then an isotonic map
from its linear score to the observed accuracy. It is checked on the ``heldout`` split: a
reliability table (per bucket of predicted probability: count, mean predicted, accuracy),
the expected calibration error (ECE: the count-weighted mean of |accuracy − mean predicted|
over the buckets), how well the probability separates right from wrong (AUC) and how many
wrong pairs are labelled ``high``.

With ``--external`` the external-truth set (``bench/external``; truth from other projects'
converters, each case mapped from a ``.safetensors`` file and as a module) joins in: its
cases sorted by name, every other one is fitted on and the rest are held out. It needs the
bench environment (``bash bench/external/setup_env.sh``, see ``docs/bench.md``).

Run:  .bench-venv/bin/python bench/calibrate.py --external --write   (refit and store)
      python bench/calibrate.py [--write]                              (zoo only)
``--write`` stores the fitted map in ``src/weightmapper/engine/calibration.json``;
``--classes-only`` keeps the stored map's coefficients and knots and refits only the estimates
of the classes that get their own (see ``docs/scores.md``);
``--cache DIR`` keeps the collected units (one JSON file per part) so a refit skips the
mapping runs of the parts already there; ``--collect zoo`` or ``--collect external`` only
collects that part into the cache (two processes can share the work).
Exits 0: a benchmark reports, it does not assert.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import isotonic_regression, minimize

import zoo_path  # noqa: F401  (the reference zoo lives in tests/)
from accuracy import evaluate
from zoo import cases
from zoo.check import source_with_weights

MODES = ("dummy", "no_dummy", "checkpoint", "file")
FIT_SPLIT = "tune"
CHECK_SPLIT = "heldout"
L2 = 1e-2
"""Ridge penalty of the logistic fit (keeps coefficients finite on separable data)."""
Z_BINS = 40
"""Quantile bins of the linear score the isotonic step is fitted on (its knots)."""
PRIOR = 10.0
"""Pseudo-counts (this many right and as many wrong) added to every bin of the isotonic step
and to the two classes with their own estimate, so a bin with no wrong pair is not promised
certainty. Wrong pairs come in clusters (one case's misaligned stage gives tens of wrong
units at once), so a bin's ~300 units are worth far fewer independent trials. With 1–3
pseudo-counts (what cross-validation inside the fitted cases prefers) the map was
overconfident on the held-out cases, which are harder than the fitted ones; 10 is what
carries over (see ``docs/scores.md``)."""
BUCKETS = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0)
"""Edges of the reliability table's buckets of predicted probability."""
COMMAND = "PYTHONPATH=src .bench-venv/bin/python bench/calibrate.py --external --write"


def collect(split: str) -> list[dict[str, Any]]:
    """Zoo split → one record per predicted unit: its evidence and whether it is right."""
    import tempfile

    from safetensors.torch import save_file

    from weightmapper.mapper import WeightMapper

    out: list[dict[str, Any]] = []
    for case in cases(None, split):
        if not case.available():
            continue
        source = source_with_weights(case, 0)
        target = case.build_target().eval()
        sd = source.state_dict()
        for mode in MODES:
            with tempfile.TemporaryDirectory() as d:
                try:
                    if mode == "checkpoint":
                        mapper = WeightMapper.from_state_dict(sd, target)
                    elif mode == "file":
                        path = Path(d) / "source.safetensors"
                        save_file(_plain(sd), path)
                        mapper = WeightMapper.from_checkpoint(path, target)
                    else:
                        dummy = case.dummy_input() if mode == "dummy" else None
                        mapper = WeightMapper(source, target, dummy_input=dummy)
                    result = mapper.suggest_mapping(threshold=0.0)
                except Exception as e:  # a case the engine fails on has no units to calibrate
                    logging.getLogger(__name__).warning("%s/%s failed: %s", case.name, mode, e)
                    continue
            if mode == "file":
                result = _as_written(result, list(sd))
            notes = {p.target: p.note for p in result.pairs}
            for u in evaluate(case, result, sd, mode).units:
                out.append(_record(case.name, mode, u, notes.get(u.target, "")))
    return out


def _as_written(result: Any, keys: list[str]) -> Any:
    """A result mapped from a file + the keys as written → the same result under those keys.

    Reading a file strips wrapper prefixes (``module.``, ``_orig_mod.``); the truth is written
    under the keys as saved.
    """
    from weightmapper.checkpoint import strip_wrapper_prefixes
    from weightmapper.result import MappingResult

    stripped, _ = strip_wrapper_prefixes(keys)
    back = dict(zip(stripped, keys, strict=True))
    return MappingResult(
        [replace(p, source=back.get(p.source, p.source)) for p in result.pairs],
        [replace(u, name=back.get(u.name, u.name)) for u in result.unmatched_source],
        list(result.unmatched_target),
        [replace(m, sources=tuple(back.get(k, k) for k in m.sources)) for m in result.multi],
        source_count=result.source_count,
        target_count=result.target_count,
    )


def _plain(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State dict → contiguous copies without shared storage (safetensors refuses ties)."""
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


def _record(case: str, mode: str, u: Any, note: str) -> dict[str, Any]:
    """A scored unit → the record the fit reads."""
    return {
        "case": case,
        "mode": mode,
        "breakdown": u.breakdown,
        "raw": u.breakdown.get("raw", u.score),
        "confidence": u.confidence,
        "multi": u.kind != "pair" if hasattr(u, "kind") else False,
        "stage": u.stage,
        "note": note,
        "correct": bool(u.correct),
    }


def collect_external() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """External-truth cases → (units of every other case by name, units of the rest)."""
    import tempfile
    import warnings

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)  # bench.external is a package of the repository
    from bench.external.evaluate import ModeRun, score_result
    from bench.external.run import load_cases
    from bench.external.truth import derive
    from weightmapper.mapper import WeightMapper

    warnings.filterwarnings("ignore")
    halves: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    usable = [c for _, c in sorted(load_cases().items()) if c.available() is None]
    for k, case in enumerate(usable):
        torch.manual_seed(0)
        try:
            built = case.build()
            target = built.build_target()
            shapes = {key: v.shape for key, v in built.source_sd.items()}
            truth = derive(shapes, built.converter, list(target.state_dict()))
        except Exception as e:  # a case that cannot be built has no units
            logging.getLogger(__name__).warning("%s: %s", case.name, e)
            continue
        for mode in ("file", "module"):
            with tempfile.TemporaryDirectory() as d:
                try:
                    if mode == "file":
                        from safetensors.torch import save_file

                        path = Path(d) / "source.safetensors"
                        save_file(_plain(built.source_sd), path)
                        mapper = WeightMapper.from_checkpoint(path, built.build_target())
                    elif built.source_module is not None:
                        mapper = WeightMapper(
                            built.source_module, built.build_target(), dummy_input=built.inputs
                        )
                    else:
                        mapper = WeightMapper.from_state_dict(built.source_sd, built.build_target())
                    result = mapper.suggest_mapping(threshold=0.0)
                except Exception as e:
                    logging.getLogger(__name__).warning("%s/%s: %s", case.name, mode, e)
                    continue
            run = ModeRun(mode=mode, truth_units=len(truth.units))
            score_result(truth, result, built.source_sd, run)
            info = {p.target: (p.breakdown, False, p.stage, p.note) for p in result.pairs}
            info |= {t: (m.breakdown, True, "multi", "") for m in result.multi for t in m.targets}
            for u in run.units:
                bd, multi, stage, note = info[u.target]
                halves[k % 2].append(
                    {
                        "case": case.name,
                        "mode": mode,
                        "breakdown": bd,
                        "raw": bd.get("raw", u.score),
                        "confidence": u.confidence,
                        "multi": multi,
                        "stage": stage,
                        "note": note,
                        "correct": bool(u.correct),
                    }
                )
    return halves


def design(units: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Units → (feature matrix, 0/1 outcomes)."""
    from weightmapper.engine.calibration import features

    x = [
        features(
            u["breakdown"],
            u["raw"],
            confidence="low" if u["confidence"] == "low" else "high",
            multi=u["multi"],
            stage=u.get("stage", ""),
            note=u.get("note", ""),
        )
        for u in units
    ]
    return np.array(x, np.float64), np.array([u["correct"] for u in units], np.float64)


def fit(
    units: list[dict[str, Any]],
    meta: dict[str, Any],
    *,
    l2: float = L2,
    prior: float = PRIOR,
) -> Any:
    """Training units + provenance (+ ridge penalty, pseudo-counts) → Calibration (logistic,
    then isotonic on its score, then the exact-name floor, the shape-only cap, the estimate of
    shape-only pairs of one lone role and the cap of layouts assumed from names)."""
    from weightmapper.engine.calibration import DOUBTS, EVIDENCE, FEATURES, Calibration

    x, y = design(units)
    n = x.shape[1]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = theta[0] + x @ theta[1:]
        p = 1.0 / (1.0 + np.exp(-z))
        nll = np.sum(np.logaddexp(0.0, z) - y * z) / len(y)
        r = p - y
        g = np.concatenate([[np.mean(r)], x.T @ r / len(y)])
        g[1:] += 2 * l2 * theta[1:]
        return nll + l2 * float(theta[1:] @ theta[1:]), g

    bounds = [(None, None)] + [
        (0.0, None) if f in EVIDENCE else (None, 0.0) if f in DOUBTS else (None, None)
        for f in FEATURES
    ]
    res = minimize(loss, np.zeros(n + 1), jac=True, method="L-BFGS-B", bounds=bounds)
    intercept, coef = float(res.x[0]), dict(zip(FEATURES, map(float, res.x[1:]), strict=True))
    z = intercept + x @ res.x[1:]
    # isotonic step on quantile bins of z: each bin's mean z is a knot, its accuracy (with
    # ``prior`` pseudo-counts, so a bin without a wrong pair does not promise certainty) the value
    order = np.argsort(z, kind="stable")
    bins = [b for b in np.array_split(order, min(Z_BINS, len(order))) if len(b)]
    zb = np.array([z[b].mean() for b in bins])
    yb = np.array([(y[b].sum() + prior) / (len(b) + 2 * prior) for b in bins])
    wb = np.array([len(b) for b in bins], np.float64)
    pb = isotonic_regression(yb, weights=wb).x
    keep = np.concatenate([[True], np.diff(zb) > 1e-9])
    knots_z, knots_p = zb[keep], np.maximum.accumulate(np.clip(pb[keep], 0.0, 1.0))
    if len(knots_z) < 2:
        knots_z, knots_p = np.array([zb[0], zb[0] + 1.0]), np.array([pb[0], pb[0]])
    # exact names with equal shapes: their own smoothed accuracy is their least probability
    exact = x[:, FEATURES.index("exact")] > 0.5
    exact_p = (y[exact].sum() + prior) / (exact.sum() + 2 * prior) if exact.any() else 0.0
    # pairs resting on their shape alone: their own smoothed accuracy is their most
    alone = x[:, FEATURES.index("shape_only")] > 0.5
    shape_only_p = (y[alone].sum() + prior) / (alone.sum() + 2 * prior) if alone.any() else 1.0
    # pairs whose one-per-network role both sides agree on (the head, the final norm), names
    # or not: their accuracy is what such a pair resting on its shape alone gets instead of the
    # cap (few pairs rest on shape and role alone; the role, not the names, is the evidence)
    role = x[:, FEATURES.index("role_unique")] > 0.5
    role_only_p = (y[role].sum() + prior) / (role.sum() + 2 * prior) if role.any() else None
    # layouts assumed from names: their own smoothed accuracy is their most
    assumed = x[:, FEATURES.index("assumed")] > 0.5
    assumed_p = (y[assumed].sum() + prior) / (assumed.sum() + 2 * prior) if assumed.any() else 1.0
    return Calibration(
        intercept,
        coef,
        tuple(round(float(v), 6) for v in knots_z),
        tuple(round(float(v), 6) for v in knots_p),
        meta,
        round(float(exact_p), 6),
        round(float(shape_only_p), 6),
        None if role_only_p is None else round(float(role_only_p), 6),
        round(float(assumed_p), 6),
    )


def predict(cal: Any, units: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Calibration + units → (probabilities, 0/1 outcomes)."""
    x, y = design(units)
    return cal.probabilities(x), y


def reliability(cal: Any, units: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float]:
    """Calibration + units → (reliability rows per bucket, expected calibration error)."""
    p, y = predict(cal, units)
    rows = []
    ece = 0.0
    for lo, hi in pairwise(BUCKETS):
        m = (p >= lo) & ((p < hi) if hi < 1.0 else (p <= hi))
        if not m.any():
            rows.append({"bucket": f"{lo:.2f}–{hi:.2f}", "count": 0})
            continue
        acc, mean = float(y[m].mean()), float(p[m].mean())
        ece += m.sum() / len(y) * abs(acc - mean)
        rows.append(
            {"bucket": f"{lo:.2f}–{hi:.2f}", "count": int(m.sum()), "mean": mean, "acc": acc}
        )
    return rows, float(ece)


def separation(cal: Any, units: list[dict[str, Any]]) -> dict[str, float]:
    """Calibration + units → AUC (chance a right unit outscores a wrong one), wrong units,
    wrong units labelled ``high``, and right units labelled ``high`` (fraction)."""
    from weightmapper.engine.margins import is_ambiguous
    from weightmapper.result import CONFIDENT_SCORE

    p, y = predict(cal, units)
    right, wrong = p[y > 0.5], p[y < 0.5]
    auc = float("nan")
    if len(right) and len(wrong):
        ranks = np.argsort(np.argsort(np.concatenate([wrong, right]), kind="stable")) + 1.0
        # ties share their mean rank
        allp = np.concatenate([wrong, right])
        for v in np.unique(allp):
            m = allp == v
            ranks[m] = ranks[m].mean()
        auc = float(ranks[len(wrong) :].sum() - len(right) * (len(right) + 1) / 2)
        auc /= len(right) * len(wrong)
    high = np.array(
        [
            u["confidence"] not in ("low", "ambiguous")
            and not is_ambiguous(u["breakdown"])
            and pi >= CONFIDENT_SCORE
            for u, pi in zip(units, p, strict=True)
        ],
        bool,
    )
    return {
        "auc": auc,
        "wrong": int((y < 0.5).sum()),
        "wrong_high": int((high & (y < 0.5)).sum()),
        "right_high": float(high[y > 0.5].mean()) if (y > 0.5).any() else float("nan"),
    }


def _names(units: list[dict[str, Any]]) -> str:
    return ", ".join(sorted({u["case"] for u in units}))


def _features() -> tuple[str, ...]:
    from weightmapper.engine.calibration import FEATURES

    return FEATURES


def exact_floor(cal: Any, units: list[dict[str, Any]]) -> tuple[int, float, float]:
    """Calibration + units → (exact-name equal-shape units, their least probability, accuracy)."""
    x, y = design(units)
    col = _features().index("exact")
    m = x[:, col] > 0.5
    if not m.any():
        return 0, float("nan"), float("nan")
    return int(m.sum()), float(cal.probabilities(x[m]).min()), float(y[m].mean())


def render(name: str, rows: list[dict[str, Any]], ece: float, n: int) -> list[str]:
    """Reliability rows → markdown lines."""
    out = [
        f"### {name} ({n} units): ECE {ece:.4f}",
        "",
        "| predicted | count | mean predicted | accuracy |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        if r["count"]:
            out.append(f"| {r['bucket']} | {r['count']} | {r['mean']:.3f} | {r['acc']:.3f} |")
        else:
            out.append(f"| {r['bucket']} | 0 | | |")
    return out


def load_parts(cache: Path | None, *, external: bool, only: str | None) -> dict[str, Any]:
    """Cache directory (or None) → the collected units of every part, collecting what is missing."""
    parts: dict[str, Any] = {}
    wanted = [("zoo", (FIT_SPLIT, CHECK_SPLIT))] if only in (None, "zoo") else []
    if external and only in (None, "external"):
        wanted.append(("external", ("external_fit", "external_check")))
    for part, names in wanted:
        path = cache / f"{part}.json" if cache is not None else None
        if path is not None and path.exists():
            parts.update(json.loads(path.read_text()))
            continue
        if part == "zoo":
            got = {split: collect(split) for split in names}
        else:
            got = dict(zip(names, collect_external(), strict=True))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(got))
        parts.update(got)
    return parts


def main(argv: list[str] | None = None) -> int:
    """Command line → exit code 0 (tables printed; ``--write`` stores the map)."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--write", action="store_true", help="store the fitted map in the package")
    ap.add_argument("--cache", type=Path, help="directory keeping the collected units")
    ap.add_argument(
        "--collect", choices=("zoo", "external"), help="only collect this part into --cache"
    )
    ap.add_argument(
        "--classes-only",
        action="store_true",
        help="keep the stored map's coefficients and knots; refit only the estimates of the "
        "classes that get their own (exact names, shape alone, shape and a lone role, layouts "
        "assumed from names)",
    )
    ap.add_argument(
        "--external",
        action="store_true",
        help="add the external-truth set (half fit, half held out)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    data = load_parts(
        args.cache, external=args.external or args.collect == "external", only=args.collect
    )
    if args.collect:
        print(f"collected {args.collect}: {', '.join(f'{k} {len(v)}' for k, v in data.items())}")
        return 0
    ext_fit, ext_check = data.get("external_fit", []), data.get("external_check", [])
    train, check = data[FIT_SPLIT] + ext_fit, data[CHECK_SPLIT] + ext_check
    described = (
        f"reference zoo split {FIT_SPLIT!r} ({len(data[FIT_SPLIT])} units; modes "
        f"{', '.join(MODES)})"
    )
    held = f"zoo split {CHECK_SPLIT!r} ({len(data[CHECK_SPLIT])} units)"
    if ext_fit or ext_check:
        described += (
            f" + external-truth cases {_names(ext_fit)} ({len(ext_fit)} units; modes file, module)"
        )
        held += f" + external-truth cases {_names(ext_check)} ({len(ext_check)} units)"
    meta = {
        "fitted": dt.date.today().isoformat(),
        "data": f"fitted on {described}; checked on {held}",
        "command": COMMAND if ext_fit else "python bench/calibrate.py --write",
    }
    meta["l2"], meta["pseudo_counts"] = L2, PRIOR
    cal = fit(train, meta)
    if args.classes_only:
        from weightmapper.engine.calibration import DATA, load

        kept = load.__wrapped__(DATA)
        meta["data"] = f"{kept.meta.get('data', '')}; class estimates refitted on {described}"
        meta["map_fitted"] = kept.meta.get("map_fitted", kept.meta.get("fitted", "?"))
        meta["command"] += " --classes-only"
        cal = replace(
            kept,
            meta=meta,
            exact_p=cal.exact_p,
            shape_only_p=cal.shape_only_p,
            role_only_p=cal.role_only_p,
            assumed_p=cal.assumed_p,
        )
    rows_fit, ece_fit = reliability(cal, train)
    rows_chk, ece_chk = reliability(cal, check)
    sep_fit, sep_chk = separation(cal, train), separation(cal, check)
    n_exact, floor, acc_exact = exact_floor(cal, train + check)
    cal = replace(
        cal,
        meta={
            **meta,
            "ece_fit": round(ece_fit, 4),
            "ece_heldout": round(ece_chk, 4),
            "auc_heldout": round(sep_chk["auc"], 4),
            "wrong_high_heldout": sep_chk["wrong_high"],
        },
    )
    lines = [
        *render(
            f"fit: zoo split {FIT_SPLIT} + half the external cases", rows_fit, ece_fit, len(train)
        ),
        _sep_line(sep_fit),
        "",
        *render(
            f"held out: zoo split {CHECK_SPLIT} + the other external cases",
            rows_chk,
            ece_chk,
            len(check),
        ),
        _sep_line(sep_chk),
        "",
        f"exact name, equal shape: {n_exact} units, least probability {floor:.3f}, "
        f"accuracy {acc_exact:.3f}",
        "coefficients: "
        + ", ".join(f"{k}={v:.3f}" for k, v in cal.coef.items())
        + f", intercept={cal.intercept:.3f}",
    ]
    from weightmapper.engine.calibration import DATA, load

    stored = load.__wrapped__(DATA)
    lines += [
        "",
        f"the stored map ({stored.meta.get('fitted', '?')}) on the same units: fit ECE "
        f"{reliability(stored, train)[1]:.4f}, held-out ECE {reliability(stored, check)[1]:.4f}; "
        + _sep_line(separation(stored, check)),
    ]
    parts = {
        "zoo held out": data[CHECK_SPLIT],
        "external held out": ext_check,
        "external fitted": ext_fit,
    }
    for mode in MODES:
        parts[f"zoo held out, mode {mode}"] = [u for u in data[CHECK_SPLIT] if u["mode"] == mode]
    for name, units in parts.items():
        if units:
            rows, ece = reliability(cal, units)
            lines += ["", *render(name, rows, ece, len(units)), _sep_line(separation(cal, units))]
    print("\n".join(lines))
    if args.write:
        DATA.write_text(json.dumps(cal.to_dict(), indent=1) + "\n")
        print(
            f"wrote {DATA.name}; the CLI guide shows scores: regenerate it with "
            "WEIGHTMAPPER_UPDATE_DOCS=1 python -m pytest tests/integration/test_cli_guide.py"
        )
    return 0


def _sep_line(sep: dict[str, float]) -> str:
    return (
        f"AUC {sep['auc']:.3f}; wrong units {sep['wrong']}, of them labelled high "
        f"{sep['wrong_high']}; right units labelled high {sep['right_high']:.1%}"
    )


if __name__ == "__main__":
    sys.exit(main())
