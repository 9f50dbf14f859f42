"""One Prefect task per node of the stage graph: thin wrappers whose cache key is the stage's.

The stage functions cache by content in the ArtifactStore; Prefect's cache here only
skips the call (and shows ``Cached`` in the UI). The cache policy derives Prefect's key
from the stage's own key plus a generation token of its artifact, so a deleted artifact
is recomputed instead of returning a reference to a missing file. Concurrent runs never
compute one artifact twice: the store locks each key while it is computed (the other run
waits, then reads it), and keys with a Prefect record are also held under ``SERIALIZABLE``
isolation with a file lock manager.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.locking.filesystem import FileSystemLockManager

from weightmapper.atomic import atomic_write_text
from weightmapper.pipeline import graph
from weightmapper.pipeline.config import Migration
from weightmapper.pipeline.graph import WorkItem
from weightmapper.pipeline.stages import Stage
from weightmapper.pipeline.store import ArtifactStore

log = logging.getLogger(__name__)


def stage_of(inputs: dict[str, Any]) -> Stage:
    """A task's inputs (node name, migration, item, earlier results) → the stage input."""
    node = graph.NODES[inputs["node"]]
    return node.build(inputs["migration"], inputs["item"], inputs["results"])


def run_node(
    store: ArtifactStore,
    node: str,
    migration: Migration,
    item: WorkItem | None,
    results: dict[str, Any],
) -> Any:
    """Store + a graph node and what it reads → the stage's result; the body of every task.

    Earlier results arrive as a plain dict (of futures when submitted): every task runner,
    Dask's included, resolves futures inside dicts.
    """
    stage = stage_of({"node": node, "migration": migration, "item": item, "results": results})
    return graph.run(store, stage)


@dataclass
class StageCachePolicy(CachePolicy):
    """Cache policy of the stage tasks: the stage's content key while its result exists."""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        """Task inputs → ``<stage>-<sha256>``: a key with a record while the artifact lives."""
        store: ArtifactStore = inputs["store"]
        try:
            stage = stage_of(inputs)
            key = stage.key(store)
            present = stage.present(store, key)
        except Exception as e:  # the task itself will raise the real error with context
            log.debug("no cache key for %s: %s", inputs.get("node"), e)
            return None
        return prefect_key(store, stage.name, key, present)


def prefect_key(store: ArtifactStore, stage: str, key: str, present: bool) -> str:
    """Stage key + whether its artifact exists → the key of Prefect's cache record.

    Prefect's record holds a reference to the artifact, so it is valid exactly as long as
    the artifact it was written with. Each time an artifact is (re)made, a new generation
    token is drawn and kept beside it in the store; Prefect's key includes the token, so a
    record made before an artifact was deleted is never found again.
    """
    token_path = store.root / "prefect-keys" / stage / f"{key}.token"
    token = ""
    if present:
        with contextlib.suppress(OSError):
            token = token_path.read_text().strip()
    if not token:
        token = uuid.uuid4().hex
        atomic_write_text(token_path, token)
    scoped = hashlib.sha256(f"{store.root}\0{key}\0{token}".encode()).hexdigest()
    return f"{stage}-{scoped}"


class SafeFileSystemLockManager(FileSystemLockManager):
    """Prefect's file lock manager, tolerant of a lock file not written yet or left by the dead.

    Prefect 3.8 creates a lock file empty and writes its holder afterwards; another thread
    or process reading it in between fails with "EOF while parsing" (seen in our concurrent
    flow test). Such a file means "locked, holder unknown yet": read it again shortly.

    A run killed inside a task (SIGKILL, OOM) never releases its lock, and Prefect's locks
    here have no expiry: the next run would wait for that key forever. Each lock therefore
    also records the process and host holding it; a lock whose process is gone from this
    host is removed as stale.
    """

    def _get_lock_info(self, key: str, use_cache: bool = True) -> Any:
        for _ in range(200):
            try:
                return super()._get_lock_info(key, use_cache)
            except ValueError:
                time.sleep(0.01)
        return super()._get_lock_info(key, use_cache)

    def acquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        if not super().acquire_lock(key, holder, acquire_timeout, hold_timeout):
            return False
        path = Path(self._lock_path_for_key(key))
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(path.read_text())
            record.update(pid=os.getpid(), host=_HOST)
            # In place, as Prefect writes it: readers retry a file caught mid-write.
            path.write_text(json.dumps(record))
        return True

    def is_locked(self, key: str, use_cache: bool = False) -> bool:
        info = self._get_lock_info(key, use_cache=use_cache)
        if info and info.get("host") == _HOST and not _alive(info.get("pid")):
            log.info("removing the lock of %s left by process %s, which is gone", key, info["pid"])
            with contextlib.suppress(OSError):
                Path(info["path"]).unlink()
            self._locks.pop(key, None)
            return False
        return bool(super().is_locked(key, use_cache))

    def remove_stale(self) -> int:
        """Remove every lock whose process is gone from this host → how many were removed.

        A killed run's lock on a key no later run uses would otherwise stay forever.
        """
        removed = 0
        for path in Path(self.lock_files_directory).glob("*.lock"):
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(path.read_text())
                if info.get("host") == _HOST and not _alive(info.get("pid")):
                    path.unlink()
                    removed += 1
        return removed


_HOST = socket.gethostname()


def _alive(pid: Any) -> bool:
    """A pid recorded in a lock → whether that process still exists (unknown: assume so)."""
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def make_tasks(store: ArtifactStore) -> dict[str, Task]:
    """Store → graph node name → Prefect task (``run_node`` named after the node), with
    results persisted and keys locked in the store."""
    locks = SafeFileSystemLockManager(store.root / "locks" / "prefect")
    locks.remove_stale()
    policy = StageCachePolicy().configure(isolation_level="SERIALIZABLE", lock_manager=locks)
    return {
        node.name: task(
            run_node,
            name=node.name,
            cache_policy=policy,
            persist_result=True,
            task_run_name=node.name,
        )
        for node in graph.GRAPH
    }
