"""Distinct types for the identifiers that are easy to mix up.

A run id, a job id and a runner id are all "some id"; one system reported the run id
where the job id was meant and completed the wrong records. ``NewType`` costs nothing
at run time and lets mypy catch the swap.
"""

from __future__ import annotations

from typing import NewType

JobId = NewType("JobId", int)
"""GitHub's ``workflow_job.id``: one job of a workflow run."""

RunId = NewType("RunId", str)
"""The workflow run id from the ``runs-fleet=<run_id>`` label."""

RunnerId = NewType("RunnerId", str)
"""The provider's id of one runner: an instance id, a pod or Job name, a local name."""


def runner_name_for(job_id: JobId, attempt: int) -> str:
    """The deterministic runner name for a cold-started runner of ``job_id``.

    The same job and attempt always give the same name, which is what makes runner
    creation idempotent across re-deliveries and replicas (providers use it as the
    Kubernetes Job name, the EC2 client token and tag, the local work dir).
    """
    return f"runs-fleet-{job_id}-{attempt}"
