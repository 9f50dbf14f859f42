"""A Prefect server for one run: started on loopback, bound to the life of the process.

Without ``PREFECT_API_URL`` Prefect would start a temporary server of its own, lazily, from
whichever thread first needs it, and only stop it from an exit hook: a killed run left it
running. Here the run starts the server itself, before importing Prefect (so the start-up
overlaps the import), and the server ends with its parent in every case:

- ``PR_SET_PDEATHSIG`` (Linux): the kernel sends the server SIGTERM when the process that
  started it dies, SIGKILL included;
- a watchdog thread in the server polls its parent's pid (other systems, and servers
  started from a thread, whose exit would fire the death signal early);
- an exit hook stops it on a normal exit.

The server is the same application Prefect's temporary server runs (API only, no UI, no
background services), on a SQLite database in ``PREFECT_HOME``.

``python -m flows.local_server --parent PID --port PORT`` is the server process itself.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from weightmapper.errors import WeightMapperError

_PR_SET_PDEATHSIG = 1
# Seconds between two checks of the parent pid by the server's watchdog.
_WATCH_INTERVAL = 0.5
# Seconds a stopped server gets to close its database before it is killed.
_STOP_GRACE = 3.0

START_HINT = (
    "Start one with `prefect server start` (in another terminal or under a process "
    "manager) and export PREFECT_API_URL=http://127.0.0.1:4200/api"
)


def health(api_url: str, timeout: float = 2.0) -> str | None:
    """Prefect API URL → None when its server answers ``/health``, else what went wrong."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as r:
            return None if r.status == 200 else f"HTTP {r.status}"
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}"
    except (OSError, ValueError) as e:
        return str(getattr(e, "reason", None) or e)


def require_server(api_url: str, alternatives: str = "", deadline: float = 3.0) -> None:
    """Configured API URL → returns once its server answers; raises after ``deadline`` seconds.

    Raises WeightMapperError saying which URL did not answer and how to start a server
    (then ``alternatives``, a sentence tail such as ", or pass --no-prefect").
    """
    t_end = time.monotonic() + deadline
    problem = health(api_url, timeout=min(2.0, deadline))
    while problem is not None and time.monotonic() < t_end:
        time.sleep(0.25)
        problem = health(api_url, timeout=max(0.1, min(2.0, t_end - time.monotonic())))
    if problem is not None:
        raise WeightMapperError(
            f"no Prefect server answers at PREFECT_API_URL={api_url} ({problem}). "
            f"{START_HINT}{alternatives}."
        )


def free_port() -> int:
    """() → a TCP port on 127.0.0.1 that nothing listens on right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalServer:
    """A started server process: its API URL, and :meth:`wait_ready` / :meth:`stop`."""

    process: subprocess.Popen[bytes]
    port: int
    started: float = field(default_factory=time.monotonic)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def wait_ready(self, timeout: float) -> None:
        """Block until the server answers (or raise WeightMapperError after ``timeout`` s)."""
        t_end = self.started + timeout
        while time.monotonic() < t_end:
            if self.process.poll() is not None:
                raise WeightMapperError(
                    f"the temporary Prefect server exited with code {self.process.returncode} "
                    f"before answering on port {self.port}. {START_HINT}, or pass --no-prefect."
                )
            if health(self.api_url, timeout=1.0) is None:
                return
            time.sleep(0.05)
        self.stop()
        raise WeightMapperError(
            f"the temporary Prefect server did not answer within {timeout:.0f} s. {START_HINT}, "
            "or raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or pass --no-prefect."
        )

    def stop(self) -> None:
        """Terminate the server, give it a moment to close its database, then kill it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=_STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(log_path: str | os.PathLike[str] | None = None) -> LocalServer:
    """() → a server process starting on a free loopback port, bound to this process.

    Call with ``PREFECT_HOME`` and Prefect's settings already in ``os.environ``; the server
    reads them. Its output goes to ``log_path`` (or nowhere). The caller waits with
    :meth:`LocalServer.wait_ready`.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "flows.local_server", "--parent", str(os.getpid())]
    cmd += ["--port", str(port)]
    # The death signal follows the thread that forks: only the main thread lives as long
    # as the process. From another thread the watchdog alone binds the server.
    if threading.current_thread() is threading.main_thread():
        cmd.append("--death-signal")
    env = {
        # A temporary server registers no block types: that imports every installed Prefect
        # collection (prefect-dask brings in distributed, half a second) on each start,
        # and a run keeps its results in local files, not in blocks. A user's setting wins.
        "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
        "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",  # API only: no scheduler or other services
        "PREFECT__SERVER_FINAL": "1",
        # The server runs ``-m flows.local_server``: make this copy of flows importable.
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p
        ),
    }
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]
    server = LocalServer(proc, port)
    atexit.register(server.stop)
    return server


def _set_death_signal(sig: int) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _parent_alive(pid: int) -> bool:
    if os.getppid() != pid:  # re-parented: the parent is gone
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch_parent(pid: int) -> None:
    """Poll the parent pid; when it is gone, stop this server (and kill it if it hangs)."""
    while _parent_alive(pid):
        time.sleep(_WATCH_INTERVAL)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(_STOP_GRACE)
    os._exit(1)


def main(argv: list[str] | None = None) -> int:
    """Server process: bind to the parent, then serve Prefect's API on loopback until told."""
    p = argparse.ArgumentParser(prog="python -m flows.local_server")
    p.add_argument("--parent", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--death-signal", action="store_true")
    args = p.parse_args(argv)
    if args.death_signal:
        _set_death_signal(signal.SIGTERM)
    # The parent may have died before the death signal was set: check once, then watch.
    if not _parent_alive(args.parent):
        return 1
    threading.Thread(target=_watch_parent, args=(args.parent,), daemon=True).start()

    import uvicorn

    uvicorn.run(
        "prefect.server.api.server:create_app",
        factory=True,
        host="127.0.0.1",
        port=args.port,
        log_level="error",
        lifespan="on",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
