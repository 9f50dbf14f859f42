"""Embedded Prefect: a project-local, quiet Prefect home set up before Prefect is imported.

No server needs starting: without ``PREFECT_API_URL`` a run starts a temporary server on a
SQLite database in ``PREFECT_HOME``, bound to its own life (``flows.local_server``).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Quiet, local and offline unless the user has chosen otherwise in the environment.
_DEFAULTS = {
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_ENABLED": "false",
    # A fresh database on a small, busy machine takes longer than the default 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


def configure_prefect(store_root: str | os.PathLike[str]) -> Path:
    """Artifact store root → the PREFECT_HOME set for this process (``<store>/prefect``).

    Must run before ``import prefect``: Prefect reads its settings at import. The home is
    made absolute and created (a relative or missing home fails with a misleading
    time-out). An explicit ``PREFECT_HOME`` or ``PREFECT_API_URL`` in the environment wins.
    """
    home = Path(os.environ.get("PREFECT_HOME") or Path(store_root) / "prefect")
    home = home.expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(home)
    for k, v in _DEFAULTS.items():
        os.environ.setdefault(k, v)
    return home


class _DropReportedFailures(logging.Filter):
    """Drop Prefect's task/flow failure records whose exception is one of ours.

    Our errors (a refused or corrupt checkpoint) are already reported in the batch
    summary with their message; Prefect would add a full traceback on stderr for each.
    Unexpected exceptions still log as usual.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from weightmapper.errors import WeightMapperError

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, WeightMapperError)


def _quiet_reported_failures() -> None:
    """Install :class:`_DropReportedFailures` on Prefect's run loggers (once)."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropReportedFailures) for f in logger.filters):
            logger.addFilter(_DropReportedFailures())


def _silence(prefix: str) -> None:
    """Logger name prefix → no record from those loggers reaches any root handler.

    Levels alone are not enough: sqlalchemy sets levels on its per-instance pool loggers.
    """
    for name in list(logging.root.manager.loggerDict):
        if name == prefix or name.startswith(prefix + "."):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda record: not record.name.startswith(prefix))


_TEARDOWN_PACKAGES = ("aiosqlite", "sqlalchemy", "prefect")


def _drop_teardown_unraisables() -> None:
    """Exceptions raised while the embedded server's objects are garbage-collected (after
    the batch has finished and been reported) → dropped; any other goes to the usual hook."""
    previous = sys.unraisablehook
    if getattr(previous, "_weightmapper_teardown", False):
        return

    def hook(unraisable: Any) -> None:
        frames = traceback.extract_tb(unraisable.exc_traceback) if unraisable.exc_traceback else []
        files = [f.filename for f in frames]
        what = repr(unraisable.object)
        # Installed packages only ("site-packages/prefect/..."): a project checked out in a
        # folder named like one of them must still see its own exceptions.
        if any(
            f"packages{os.sep}{pkg}{os.sep}" in f for f in files for pkg in _TEARDOWN_PACKAGES
        ) or any(f"{pkg}." in what for pkg in _TEARDOWN_PACKAGES):
            return
        previous(unraisable)

    hook._weightmapper_teardown = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


@contextlib.contextmanager
def prefect_server(home: Path, while_starting: Callable[[], Any] | None = None) -> Iterator[str]:
    """Prefect home → the API URL of a server that answers, for the duration of the block.

    With ``PREFECT_API_URL`` in the environment that server is used, and a server that
    does not answer within 3 s is an error saying how to start one. Otherwise a temporary
    server is started on loopback for this run (its output in ``<home>/server.log``),
    bound to this process's life, and stopped when the block ends. Its URL is exported
    so that worker processes (Dask) use it instead of starting servers of their own.
    Prefect is imported, and ``while_starting`` called, while the server starts: its start-up
    (seconds of imports in its own process) overlaps the caller's.
    """
    from flows import local_server

    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        local_server.require_server(
            configured,
            ", or unset PREFECT_API_URL to let weightmapper start a temporary server for "
            "the run, or pass --no-prefect to run without Prefect",
        )
        if while_starting is not None:
            while_starting()
        yield configured
        return
    timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"))
    server = local_server.start(log_path=home / "server.log")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        import prefect  # noqa: F401  (imported while the server starts)

        if while_starting is not None:
            while_starting()
        server.wait_ready(timeout)
        yield server.api_url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def _import_flows() -> None:
    """Import the flows, the stages they run (torch) and what Prefect's engine imports on
    its first flow run: seconds, spent while the temporary server starts rather than after
    it answers."""
    import flows.migrate  # noqa: F401

    for name in ("prefect.flow_engine", "prefect.artifacts", "fastapi.encoders"):
        with contextlib.suppress(ImportError):  # only a head start: Prefect imports them anyway
            importlib.import_module(name)


def run_job(job: Any) -> Any:
    """JobConfig → BatchSummary, run as the Prefect batch flow against a server that answers.

    Sets up the project-local Prefect environment first, then starts a temporary server
    (or checks the configured one) while Prefect is imported. The summary's time is the
    wall time of all of it, Prefect's import and the server's start-up included.
    """
    t0 = time.perf_counter()
    from weightmapper.pipeline.store import ArtifactStore

    ArtifactStore(job.store).ensure_writable()  # before Prefect makes its home inside it
    home = configure_prefect(job.store)
    try:
        with prefect_server(home, while_starting=_import_flows) as api_url:
            from flows.migrate import run_batch_flow

            _quiet_reported_failures()
            summary = run_batch_flow(job, api_url)
        summary.seconds = time.perf_counter() - t0
        return summary
    except RuntimeError as e:
        if "Prefect" not in str(e):
            raise
        from weightmapper.errors import WeightMapperError

        raise WeightMapperError(
            f"Prefect could not run the batch flow ({e}). Its home is {home}. Rerun with "
            "--no-prefect to run the same stages without Prefect, or start a server "
            "(`prefect server start`) and export PREFECT_API_URL."
        ) from e
    finally:
        # The client's database pool may be torn down at interpreter exit and log a
        # cancelled rollback as an ERROR with a traceback; it is harmless, so keep it quiet.
        # Its aiosqlite connections may also be collected mid-close ("Task was destroyed but
        # it is pending", an ignored exception in Connection.close): the same teardown.
        _silence("sqlalchemy.pool")
        _silence("asyncio")
        _drop_teardown_unraisables()
