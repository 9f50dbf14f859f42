"""Fit the score calibration on one part of the accuracy bench and check it on another.

Every case of the reference zoo (``tests/zoo``) is mapped in three modes (with a dummy
input, without, and from a bare state dict as when mapping a checkpoint file) at threshold
0, so every proposed pair counts; ``bench/accuracy.py``'s ``evaluate`` says which predicted
units are right (keys and tensor). The map (:mod:`weightmapper.engine.calibration`) is fitted
on the ``tune`` split: a logistic fit of the features with non-negative coefficients on every
evidence feature, then an isotonic map from its linear score to the observed accuracy. It is
checked on the ``heldout`` split: a reliability table (per bucket of predicted probability:
count, mean predicted, accuracy) and the expected calibration error (ECE: the count-weighted
mean of |accuracy − mean predicted| over the buckets).

With ``--external`` the external-truth set (``bench/external``; truth from other projects'
converters, each case mapped from a ``.safetensors`` file and as a module) joins in: its
cases sorted by name, every other one is fitted on and the rest are held out. It needs the
bench environment (``bash bench/external/setup_env.sh``, see ``docs/bench.md``).

Run:  .bench-venv/bin/python bench/calibrate.py --external [--write] [--cache FILE]
      python bench/calibrate.py [--write] [--cache FILE]      (zoo only)
``--write`` stores the fitted map in ``src/weightmapper/engine/calibration.json``;
``--cache FILE`` keeps the collected units (JSON) so a refit skips the mapping runs.
Exits 0: a benchmark reports, it does not assert.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
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

MODES = ("dummy", "no_dummy", "checkpoint")
FIT_SPLIT = "tune"
CHECK_SPLIT = "heldout"
L2 = 1e-3
"""Ridge penalty of the logistic fit (keeps coefficients finite on separable data)."""
Z_BINS = 40
"""Quantile bins of the linear score the isotonic step is fitted on (its knots)."""
BUCKETS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0)
"""Edges of the reliability table's buckets of predicted probability."""
COMMAND = ".bench-venv/bin/python bench/calibrate.py --external --write"


def collect(split: str) -> list[dict[str, Any]]:
    """Zoo split → one record per predicted unit: features' inputs and whether it is right."""
    from weightmapper.mapper import WeightMapper

    out: list[dict[str, Any]] = []
    for case in cases(None, split):
        if not case.available():
            continue
        source = source_with_weights(case, 0)
        target = case.build_target().eval()
        sd = source.state_dict()
        for mode in MODES:
            try:
                if mode == "checkpoint":
                    mapper = WeightMapper.from_state_dict(sd, target)
                else:
                    dummy = case.dummy_input() if mode == "dummy" else None
                    mapper = WeightMapper(source, target, dummy_input=dummy)
                result = mapper.suggest_mapping(threshold=0.0)
            except Exception as e:  # a case the engine fails on has no units to calibrate
                logging.getLogger(__name__).warning("%s/%s failed: %s", case.name, mode, e)
                continue
            for u in evaluate(case, result, sd, mode).units:
                out.append(
                    {
                        "case": case.name,
                        "mode": mode,
                        "breakdown": u.breakdown,
                        "raw": u.breakdown.get("raw", u.score),
                        "confidence": u.confidence,
                        "multi": u.kind != "pair",
                        "correct": u.correct,
                    }
                )
    return out


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
                        sd = {
                            key: v.detach().contiguous().clone()
                            for key, v in built.source_sd.items()
                        }
                        save_file(sd, path)
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
            info = {p.target: (p.breakdown, False) for p in result.pairs}
            info |= {t: (m.breakdown, True) for m in result.multi for t in m.targets}
            for u in run.units:
                bd, multi = info[u.target]
                halves[k % 2].append(
                    {
                        "case": case.name,
                        "mode": mode,
                        "breakdown": bd,
                        "raw": bd.get("raw", u.score),
                        "confidence": u.confidence,
                        "multi": multi,
                        "correct": u.correct,
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
        )
        for u in units
    ]
    return np.array(x, np.float64), np.array([u["correct"] for u in units], np.float64)


def fit(
    units: list[dict[str, Any]], meta: dict[str, Any], external: set[str], *, balance: bool
) -> Any:
    """Training units + provenance → Calibration (logistic, then isotonic on its score)."""
    from weightmapper.engine.calibration import DOUBTS, EVIDENCE, FEATURES, Calibration

    x, y = design(units)
    n = x.shape[1]
    # with ``balance`` each source of truth (the zoo, the external set) weighs as much as the
    # other; by default every unit counts once
    ext = np.array([u["case"] in external for u in units])
    sw = np.ones(len(units))
    if balance and ext.any() and (~ext).any():
        sw[ext] = (~ext).sum() / ext.sum()
    sw *= len(units) / sw.sum()

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = theta[0] + x @ theta[1:]
        p = 1.0 / (1.0 + np.exp(-z))
        nll = np.sum(sw * (np.logaddexp(0.0, z) - y * z)) / len(y)
        r = sw * (p - y)
        g = np.concatenate([[np.mean(r)], x.T @ r / len(y)])
        g[1:] += 2 * L2 * theta[1:]
        return nll + L2 * float(theta[1:] @ theta[1:]), g

    bounds = [(None, None)] + [
        (0.0, None) if f in EVIDENCE else (None, 0.0) if f in DOUBTS else (None, None)
        for f in FEATURES
    ]
    res = minimize(loss, np.zeros(n + 1), jac=True, method="L-BFGS-B", bounds=bounds)
    intercept, coef = float(res.x[0]), dict(zip(FEATURES, map(float, res.x[1:]), strict=True))
    z = intercept + x @ res.x[1:]
    # isotonic step on quantile bins of z: each bin's mean z is a knot
    order = np.argsort(z, kind="stable")
    bins = [b for b in np.array_split(order, min(Z_BINS, len(order))) if len(b)]
    zb = np.array([z[b].mean() for b in bins])
    yb = np.array([np.average(y[b], weights=sw[b]) for b in bins])
    wb = np.array([sw[b].sum() for b in bins])
    pb = isotonic_regression(yb, weights=wb).x
    keep = np.concatenate([[True], np.diff(zb) > 1e-9])
    knots_z, knots_p = zb[keep], np.maximum.accumulate(np.clip(pb[keep], 0.0, 1.0))
    if len(knots_z) < 2:
        knots_z, knots_p = np.array([zb[0], zb[0] + 1.0]), np.array([pb[0], pb[0]])
    return Calibration(
        intercept,
        coef,
        tuple(round(float(v), 6) for v in knots_z),
        tuple(round(float(v), 6) for v in knots_p),
        meta,
    )


def reliability(cal: Any, units: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float]:
    """Calibration + units → (reliability rows per bucket, expected calibration error)."""
    x, y = design(units)
    z = cal.intercept + x @ np.array([cal.coef.get(f, 0.0) for f in _features()])
    p = cal.from_z(z)
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
    z = cal.intercept + x[m] @ np.array([cal.coef.get(f, 0.0) for f in _features()])
    return int(m.sum()), float(cal.from_z(z).min()), float(y[m].mean())


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


def main(argv: list[str] | None = None) -> int:
    """Command line → exit code 0 (tables printed; ``--write`` stores the map)."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--write", action="store_true", help="store the fitted map in the package")
    ap.add_argument("--cache", type=Path, help="JSON file keeping the collected units")
    ap.add_argument(
        "--balance", action="store_true", help="weigh the zoo and the external set equally"
    )
    ap.add_argument(
        "--external",
        action="store_true",
        help="add the external-truth set (half fit, half held out)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    data: dict[str, list[dict[str, Any]]]
    if args.cache is not None and args.cache.exists():
        data = json.loads(args.cache.read_text())
    else:
        data = {split: collect(split) for split in (FIT_SPLIT, CHECK_SPLIT)}
        if args.external:
            data["external_fit"], data["external_check"] = collect_external()
        if args.cache is not None:
            args.cache.write_text(json.dumps(data))
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
    cal = fit(train, meta, {u["case"] for u in ext_fit}, balance=args.balance)
    rows_fit, ece_fit = reliability(cal, train)
    rows_chk, ece_chk = reliability(cal, check)
    parts = {"zoo held out": data[CHECK_SPLIT], "external held out": ext_check}
    n_exact, floor, acc_exact = exact_floor(cal, train + check)
    cal = type(cal)(
        cal.intercept,
        cal.coef,
        cal.knots_z,
        cal.knots_p,
        {**meta, "ece_fit": round(ece_fit, 4), "ece_heldout": round(ece_chk, 4)},
    )
    lines = [
        *render(f"fit: split {FIT_SPLIT}", rows_fit, ece_fit, len(train)),
        "",
        *render("held out (all)", rows_chk, ece_chk, len(check)),
        "",
        f"exact name, equal shape: {n_exact} units, least probability {floor:.3f}, "
        f"accuracy {acc_exact:.3f}",
        "coefficients: "
        + ", ".join(f"{k}={v:.3f}" for k, v in cal.coef.items())
        + f", intercept={cal.intercept:.3f}",
    ]
    for name, units in parts.items():
        if units:
            rows, ece = reliability(cal, units)
            lines += ["", *render(name, rows, ece, len(units))]
    print("\n".join(lines))
    if args.write:
        from weightmapper.engine.calibration import DATA

        DATA.write_text(json.dumps(cal.to_dict(), indent=1) + "\n")
        print(f"wrote {DATA.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
