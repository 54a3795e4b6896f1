"""Submit a plait pipeline to a Ray cluster as a Ray Job, and wait for it boundedly.

A Ray Job runs a shell entrypoint (``plait run examples/...:Pipeline --executor ray ...``) as
a driver on the cluster, with the submitter's ``working_dir`` uploaded and ``pip`` packages
installed by Ray. The submitter only needs HTTP access to the dashboard (port 8265).

Errors raised here, under plait's one base:

```
PlaitError
└── JobError                 a Ray job could not be submitted or did not succeed
    ├── JobSubmissionError   job server unreachable, token rejected, submission refused
    └── JobFailedError       the job ended FAILED or STOPPED; carries the tail of its logs
        └── JobTimeoutError  not finished within timeout_s (the job is stopped first)
```
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.exceptions import AuthenticationError
from ray.job_submission import JobStatus, JobSubmissionClient

from plait.errors import ConfigError, PlaitError
from plait_ray.auth import auth_headers

__all__ = [
    "DEFAULT_EXCLUDES",
    "DEFAULT_PASS_ENV",
    "JobError",
    "JobFailedError",
    "JobResult",
    "JobSubmissionError",
    "JobTimeoutError",
    "submit_pipeline_job",
    "wait_for_job",
]

#: Provider keys copied from the submitter's environment when set (see ``pass_env``).
DEFAULT_PASS_ENV: tuple[str, ...] = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")

#: Never uploaded with ``working_dir`` (gitignore syntax). Ray caps the upload at 100 MiB, and
#: a virtualenv alone is far larger; outputs and checkpoints belong in storage, not the upload.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".venv",
    "venv",
    ".git",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    "*.egg-info",
    "node_modules",
)

_LOG_TAIL_LINES = 40


class JobError(PlaitError):
    """A Ray job could not be submitted or did not succeed."""


class JobSubmissionError(JobError):
    """The job server could not be reached, rejected the token, or refused the job."""


class JobFailedError(JobError):
    """The job ended without succeeding.

    Attributes:
        job_id: The Ray submission id.
        status: The job's last status.
        logs_tail: The last lines of the driver's logs.
    """

    def __init__(self, message: str, *, job_id: str, status: JobStatus, logs_tail: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.status = status
        self.logs_tail = logs_tail

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields would be lost by the default pickling of exceptions.
        return (_rebuild_job_failed, (type(self), str(self), self.job_id, self.status,
                                      self.logs_tail))


class JobTimeoutError(JobFailedError):
    """The job did not finish within ``timeout_s``; it was stopped."""


def _rebuild_job_failed(
    cls: type[JobFailedError], message: str, job_id: str, status: JobStatus, logs_tail: str
) -> JobFailedError:
    return cls(message, job_id=job_id, status=status, logs_tail=logs_tail)


@dataclass(frozen=True)
class JobResult:
    """Where a submitted job stands.

    Attributes:
        job_id: The Ray submission id (``raysubmit_...``).
        status: ``SUCCEEDED`` after a successful wait; ``PENDING`` when not waited for.
        logs: The driver's full logs after a wait; empty when not waited for.
    """

    job_id: str
    status: JobStatus
    logs: str


def submit_pipeline_job(
    address: str,
    entrypoint: str,
    *,
    working_dir: str | Path,
    requirements: Sequence[str] | None = None,
    env_vars: Mapping[str, str] | None = None,
    pass_env: Sequence[str] = DEFAULT_PASS_ENV,
    excludes: Sequence[str] = DEFAULT_EXCLUDES,
    wait: bool = True,
    timeout_s: float = 600,
    poll_interval_s: float = 1.0,
) -> JobResult:
    """Submit ``entrypoint`` as a Ray Job and, by default, wait for it to succeed.

    Environment variables named in ``pass_env`` are copied from this process into the job's
    ``runtime_env`` when they are set. Anything in ``runtime_env`` -- API keys included -- is
    stored with the job and shown in plain text by the Jobs API and the dashboard's job page
    to everyone who can reach the dashboard, and Ray's ``runtime_env_agent`` logs print them
    too. For shared or production clusters pass ``pass_env=()`` and give the workers their
    keys from a cluster-side secret, or a key file they read themselves (``plait run
    --env-file PATH``; see ``cluster/README.md``).

    Ray token auth is handled from ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
    ``~/.ray/auth_token``; see :mod:`plait_ray.auth`.

    Example:
        >>> result = submit_pipeline_job(  # doctest: +SKIP
        ...     "http://head-node:8265",
        ...     "plait run examples/06_ray_dataset.py:Pipeline --input in.parquet "
        ...     "--output s3://bucket/out.parquet --executor ray",
        ...     working_dir=".",
        ...     requirements=["/shared/dist/plait_pipelines-0.1.0-py3-none-any.whl"],
        ... )
        >>> result.status  # doctest: +SKIP
        <JobStatus.SUCCEEDED: 'SUCCEEDED'>

    Args:
        address: The dashboard URL, e.g. ``"http://127.0.0.1:8265"``.
        entrypoint: Shell command the job runs, from the root of ``working_dir``.
        working_dir: Local directory to upload, or a remote URI (``s3://...zip``) Ray fetches.
        requirements: pip requirement strings installed for the job; None to install nothing.
            plait itself is this project's wheel (``make wheel``), by a path every node can
            read or a URL -- not ``pyplait`` from the index, an unrelated package.
        env_vars: Extra environment variables for the job; they override ``pass_env``.
        pass_env: Names of variables to copy from this process's environment if set.
        excludes: gitignore-style patterns left out of the ``working_dir`` upload.
        wait: Wait for the job to finish; if False, return right after submission.
        timeout_s: Longest time to wait; the job is stopped when it is exceeded.
        poll_interval_s: Time between status checks while waiting.

    Returns:
        The job's id, status and (after a wait) logs.

    Raises:
        ConfigError: ``working_dir`` does not exist, or a timeout is not positive.
        JobSubmissionError: The job server is unreachable or rejected the request.
        JobFailedError: The job ended FAILED or STOPPED (message ends with its logs).
        JobTimeoutError: The job did not finish within ``timeout_s``.
    """
    if timeout_s <= 0:
        raise ConfigError(f"timeout_s must be > 0, got {timeout_s}. Use wait=False not to wait.")
    runtime_env = _runtime_env(working_dir, requirements, env_vars, pass_env, excludes)
    client = _connect(address)
    try:
        job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
    except (AuthenticationError, RuntimeError, OSError, ValueError) as exc:
        # requests' errors derive from OSError, Ray's HTTP errors from RuntimeError.
        raise JobSubmissionError(
            f"The Ray job server at {address} refused the job {entrypoint!r}: {exc}"
        ) from exc
    if not wait:
        return JobResult(job_id=job_id, status=JobStatus.PENDING, logs="")
    return wait_for_job(client, job_id, timeout_s, poll_interval_s=poll_interval_s)


def wait_for_job(
    client: JobSubmissionClient,
    job_id: str,
    timeout_s: float,
    *,
    poll_interval_s: float = 1.0,
    stop_on_timeout: bool = True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> JobResult:
    """Poll a job until it finishes, for at most ``timeout_s`` seconds.

    Args:
        client: A connected ``JobSubmissionClient``.
        job_id: The submission id returned by ``submit_job``.
        timeout_s: Longest time to wait.
        poll_interval_s: Time between status checks.
        stop_on_timeout: Stop the job when the wait times out, so nothing keeps spending
            LLM budget unobserved.
        clock: Monotonic clock; injectable so tests need not sleep.
        sleep: Sleep function matching ``clock``.

    Returns:
        The result of a job that ``SUCCEEDED``, with its full logs.

    Raises:
        JobFailedError: The job ended FAILED or STOPPED.
        JobTimeoutError: It was still running after ``timeout_s``.
    """
    deadline = clock() + timeout_s
    status = client.get_job_status(job_id)
    while not status.is_terminal():
        remaining = deadline - clock()
        if remaining <= 0:
            if stop_on_timeout:
                client.stop_job(job_id)
            logs = client.get_job_logs(job_id)
            raise JobTimeoutError(
                f"Ray job {job_id} was still {status} after {timeout_s:g} s"
                f"{' and has been stopped' if stop_on_timeout else ''}. Raise timeout_s, or "
                f"submit with wait=False and check it later.{_tail_block(logs)}",
                job_id=job_id, status=status, logs_tail=_tail(logs),
            )
        sleep(min(poll_interval_s, remaining))
        status = client.get_job_status(job_id)
    logs = client.get_job_logs(job_id)
    if status != JobStatus.SUCCEEDED:
        reason = client.get_job_info(job_id).message or "no reason given"
        raise JobFailedError(
            f"Ray job {job_id} ended {status}: {reason}. See the driver log below, or "
            f"`ray job logs {job_id}`.{_tail_block(logs)}",
            job_id=job_id, status=status, logs_tail=_tail(logs),
        )
    return JobResult(job_id=job_id, status=status, logs=logs)


def _runtime_env(
    working_dir: str | Path,
    requirements: Sequence[str] | None,
    env_vars: Mapping[str, str] | None,
    pass_env: Sequence[str],
    excludes: Sequence[str],
) -> dict[str, Any]:
    env: dict[str, str] = {name: os.environ[name] for name in pass_env if os.environ.get(name)}
    env.update(env_vars or {})
    runtime_env: dict[str, Any] = {"working_dir": _working_dir(working_dir)}
    if excludes:
        runtime_env["excludes"] = list(excludes)
    if requirements:
        runtime_env["pip"] = list(requirements)
    if env:
        runtime_env["env_vars"] = env
    return runtime_env


def _working_dir(working_dir: str | Path) -> str:
    if isinstance(working_dir, str) and "://" in working_dir:
        return working_dir  # a remote package URI; Ray fetches it on the cluster
    path = Path(working_dir).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(
            f"working_dir {str(working_dir)!r} is not a directory. Pass the project directory "
            "to upload (e.g. '.'), or a remote package URI such as 's3://bucket/pkg.zip'."
        )
    return str(path)


def _connect(address: str) -> JobSubmissionClient:
    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except AuthenticationError as exc:
        raise JobSubmissionError(
            f"The Ray cluster at {address} rejected the auth token: {exc}"
        ) from exc
    except (OSError, RuntimeError, ValueError) as exc:
        raise JobSubmissionError(
            f"Cannot reach the Ray job server at {address}: {exc}. Pass the dashboard URL "
            "(default port 8265, e.g. 'http://head-node:8265'); through Kubernetes, use "
            "`kubectl port-forward svc/<cluster>-head-svc 8265:8265` first."
        ) from exc


def _tail(logs: str) -> str:
    return "\n".join(logs.splitlines()[-_LOG_TAIL_LINES:])


def _tail_block(logs: str) -> str:
    tail = _tail(logs)
    return f"\n--- last lines of the driver log ---\n{tail}" if tail else ""
