"""Prefect flows over weightmapper's pipeline stages: one task per stage, a batch flow.

Importing this package does not import Prefect: :func:`flows.embedded.configure_prefect`
must run first so that Prefect reads a project-local, quiet configuration when it is
imported; :func:`flows.embedded.run_job` does both and runs the batch flow.

- ``flows.tasks``: one task per pipeline stage, cached by the stage's content key.
- ``flows.migrate``: the single-checkpoint flow and the batch flow.
"""

from __future__ import annotations

from flows.embedded import configure_prefect, run_job

__all__ = ["configure_prefect", "run_job"]
