"""The job's export policy (``checks.require``): which checks an output must pass to be placed.

Levels, weakest first; each names the checks that must have run and passed, and any check
that ran and failed refuses the output at every level but ``none``:

- ``none``: outputs are placed whatever the checks say (they are still run and reported);
- ``loads``: the converted file loaded strictly into the target (``validate`` ran and passed);
- ``proven``: it loads and its outputs equal the source's (``verify`` ran and passed), which
  needs the job to name the source architecture (``source_module``) and a ``dummy_input``.
"""

from __future__ import annotations

REQUIRED: dict[str, tuple[str, ...]] = {
    "none": (),
    "loads": ("validation",),
    "proven": ("validation", "functional"),
}
"""Level → the checks that must have run and passed."""

DEFAULT_REQUIRE = "loads"

CHECK_SETTINGS = {"validation": "validate", "functional": "functional"}
"""Check name (in summaries) → the ``checks:`` switch that turns it on."""


def refusal(require: str, **outcomes: bool | None) -> str | None:
    """Level + each check's outcome (True passed, False failed, None not run) → None when the
    output may be placed, else why not (one line)."""
    if require == "none":
        return None
    failed = [name for name, ok in outcomes.items() if ok is False]
    if failed:
        return f"{' and '.join(failed)} failed (checks.require: {require})"
    missing = [name for name in REQUIRED[require] if outcomes.get(name) is not True]
    if missing:
        return f"{' and '.join(missing)} did not run (checks.require: {require})"
    return None


def problems(require: object, enabled: dict[str, bool]) -> list[str]:
    """``checks.require`` value + which checks are switched on → what is wrong with them."""
    if require not in REQUIRED:
        return [f"require: expected one of {list(REQUIRED)}, found {require!r}"]
    return [
        f"require: {require} needs the {name} check; set checks.{CHECK_SETTINGS[name]}: true "
        "or choose require: none"
        for name in REQUIRED[str(require)]
        if not enabled.get(CHECK_SETTINGS[name], True)
    ]
