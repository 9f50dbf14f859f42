"""Naming conventions of known libraries, kept as data: tensor names → roles and layouts.

A checkpoint alone carries only names. Libraries name the roles of their tensors, and lay out
fused tensors, in ways that are stable and documented; each convention is one YAML file
(schema in ``docs/conventions.md``) that says which module path plays which role and how the
library stores its tensors (RoPE row order, fused q/k/v rows, ``Conv1D`` transposition, gate/up
order, norm weights stored as offsets). Users add their own with ``--conventions FILE``.

    conventions = load_conventions()
    found = conventions.identify(keys)        # best-fitting conventions, with coverage
    roles = conventions.roles(keys)           # key → KeyRole, from the best fit
"""

from weightmapper.conventions.registry import (
    LAYOUT_CHOICES,
    ROLES,
    Convention,
    ConventionSet,
    Identified,
    KeyRole,
    Layout,
    RoleRule,
    load_conventions,
    parse_convention,
)

__all__ = [
    "LAYOUT_CHOICES",
    "ROLES",
    "Convention",
    "ConventionSet",
    "Identified",
    "KeyRole",
    "Layout",
    "RoleRule",
    "load_conventions",
    "parse_convention",
]
