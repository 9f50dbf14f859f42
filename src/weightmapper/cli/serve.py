"""`weightmapper serve JOB.yaml --cron "0 2 * * *"`: serve a job as a Prefect deployment."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from weightmapper.errors import ConfigError, WeightMapperError

HELP = "serve a YAML job as a Prefect deployment on a cron schedule (needs a Prefect server)"
DESCRIPTION = """\
Register a YAML migration job as a Prefect deployment on the configured Prefect server
(PREFECT_API_URL) and run it on a cron schedule, until stopped (Ctrl-C or SIGTERM). Runs
can also be started by hand from the Prefect UI or with `prefect deployment run`. Each run
is the same batch flow as `weightmapper migrate`; it ends Failed when a checkpoint failed
or failed a check, and publishes a summary and the mapping of each checkpoint as Prefect
artifacts.

A schedule needs a server that outlives this command: start one first.

example:
  prefect server start &                        # or a shared Prefect server
  export PREFECT_API_URL=http://127.0.0.1:4200/api
  weightmapper serve configs/nightly.yaml --cron "0 2 * * *"
  prefect deployment run 'weightmapper-migrate-job/nightly'   # a run now, from elsewhere
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the serve command's arguments on its parser."""
    parser.add_argument("job", type=Path, help="YAML job file")
    parser.add_argument(
        "--cron", required=True, help='cron schedule, e.g. "0 2 * * *" (02:00 every day)'
    )
    parser.add_argument("--name", default=None, help="deployment name (default: the job's name)")
    parser.add_argument(
        "--threshold", type=float, default=None, help="override every migration's threshold"
    )
    parser.add_argument(
        "--timezone", default=None, help="IANA time zone of the schedule (default UTC)"
    )


def run(args: argparse.Namespace) -> int:
    """Parsed arguments → serves until stopped, then 0; bad job, cron or server → exit 2."""
    from weightmapper.pipeline.config import load_job

    job_path = args.job.expanduser().resolve()
    job = load_job(job_path)  # a bad job stops here, before anything is registered
    # Imported late: flows configures Prefect's environment before importing it.
    from flows.embedded import configure_prefect
    from flows.local_server import START_HINT, require_server

    configure_prefect(job.store)
    schedule = _cron_schedule(args.cron, args.timezone)
    api_url = os.environ.get("PREFECT_API_URL")
    if not api_url:
        raise WeightMapperError(
            "serve needs a running Prefect server, and PREFECT_API_URL is not set. "
            f"{START_HINT}. (`weightmapper migrate` needs no server: it starts a temporary "
            "one per run, which cannot keep a schedule.)"
        )
    require_server(api_url)

    from flows.migrate import migrate_job_file
    from prefect.deployments.runner import EntrypointType

    parameters: dict[str, object] = {"job_path": str(job_path)}
    if args.threshold is not None:
        parameters["threshold"] = args.threshold
    migrate_job_file.serve(
        name=args.name or job.name,
        schedule=schedule,
        parameters=parameters,
        description=f"weightmapper migrate {job_path}",
        # Runs import the flow by module name: the job file is never executed as a script.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return 0


def _cron_schedule(cron: str, timezone: str | None) -> object:
    """Cron text (+ time zone) → Prefect's CronSchedule; a bad one → ConfigError."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        return CronSchedule(cron=cron, timezone=timezone or "UTC")
    except ValidationError as e:
        reason = "; ".join(str(err.get("msg", "")) for err in e.errors())
        raise ConfigError(
            f'--cron "{cron}" (timezone {timezone or "UTC"}) is not a valid schedule: {reason}. '
            'Expected five fields "minute hour day-of-month month day-of-week", '
            'e.g. "0 2 * * *" for 02:00 every day, and an IANA zone such as Europe/Berlin.'
        ) from e
