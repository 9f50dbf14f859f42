"""Prefect test setup: a private PREFECT_HOME set before Prefect is imported, one harness.

The harness (a temporary Prefect server) takes seconds to start, so one serves the whole
session; every flow test is marked ``flows``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before any import of prefect: result storage and the database must not leak between
# test sessions or into the user's home.
_HOME = Path(tempfile.mkdtemp(prefix="wm-prefect-home-"))
# Registered before Prefect is imported, so it runs after Prefect's own exit hooks.
atexit.register(shutil.rmtree, _HOME, True)
os.environ["PREFECT_HOME"] = str(_HOME)
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A temporary Prefect server for the whole session, heartbeat off."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with (
        prefect_test_harness(server_startup_timeout=120),
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield
