"""The Job controller: one pod per Job from its template, the Job's status following its
pod, and the TTL-after-finished cleanup.

Simplifications (runs-fleet's runner Jobs have one pod and ``completions: 1``): failed
pods are replaced at once rather than after an exponential back-off, and pods carry no
tracking finalizer. As in Kubernetes, a pod deleted before it finished counts as failed,
``backoffLimit`` (default 6) decides when the Job gives up, and a suspended Job has no pod.
"""

from __future__ import annotations

import copy
import datetime as dt

from tests.kube_api.controllers import TERMINAL, ControllerBase, condition, controller_ref, is_ready
from tests.kube_api.resources import JOBS, PODS
from tests.kube_api.store import Event, Obj, namespace_of, parse_time


def finished(job: Obj) -> str | None:
    """``Complete`` or ``Failed`` once the Job is over."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond["type"])
    return None


class JobController(ControllerBase):
    def reset(self) -> None:
        super().reset()
        self._outcomes: dict[str, dict[str, str]] = {}

    def observe(self, event: Event) -> None:
        if event.plural == JOBS.plural and event.type != "DELETED":
            self.dirty.add((namespace_of(event.obj), event.obj["metadata"]["name"]))
            return
        if event.plural != PODS.plural:
            return
        ref = controller_ref(event.obj)
        if ref is None or ref.get("kind") != "Job":
            return
        self.dirty.add((namespace_of(event.obj), str(ref["name"])))
        outcomes = self._outcomes.setdefault(str(ref["uid"]), {})
        pod_uid = str(event.obj["metadata"]["uid"])
        phase = (event.obj.get("status") or {}).get("phase")
        if phase in TERMINAL:
            outcomes.setdefault(pod_uid, str(phase))
        elif event.type == "DELETED":
            outcomes.setdefault(pod_uid, "Failed")

    def _live(self, job: Obj) -> list[Obj]:
        return [
            pod
            for pod in self.owned_pods(job)
            if (pod.get("status") or {}).get("phase") not in TERMINAL
        ]

    def _finish(self, job: Obj, status: Obj, succeeded: bool) -> None:
        """Stop the Job's remaining pods and mark it ``Complete`` or ``Failed``."""
        for pod in self._live(job):
            self.delete_pod(pod)
        now = self.store.clock.timestamp()
        if succeeded:
            why = ("CompletionsReached", "Reached expected number of succeeded pods")
            kinds = ("SuccessCriteriaMet", "Complete")
            status["completionTime"] = now
        else:
            why = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
            kinds = ("FailureTarget", "Failed")
        conditions = list(status.get("conditions") or [])
        status["conditions"] = conditions + [condition(kind, "True", now, *why) for kind in kinds]

    def _run(self, job: Obj, status: Obj, succeeded: int) -> bool:
        """Start the pods the Job is missing; ``True`` if one was created."""
        spec, name = job["spec"], job["metadata"]["name"]
        status.setdefault("startTime", self.store.clock.timestamp())
        completions = int(spec.get("completions") or 1)
        wanted = min(int(spec.get("parallelism", 1)), completions - succeeded)
        labels = {"batch.kubernetes.io/job-name": name, "job-name": name}
        created = False
        for _ in range(wanted - len(self._live(job))):
            created = self.create_pod(job, f"{name}-", spec["template"], labels) or created
        return created

    def sync(self, namespace: str, name: str) -> bool:
        job = self.store.get(JOBS, namespace, name)
        if job is None:
            return False
        if finished(job):
            return self.expire(job)
        spec, status = job["spec"], dict(job.get("status") or {})
        outcomes = self._outcomes.setdefault(str(job["metadata"]["uid"]), {})
        succeeded = sum(1 for phase in outcomes.values() if phase == "Succeeded")
        failed = sum(1 for phase in outcomes.values() if phase == "Failed")
        did = False
        if succeeded >= int(spec.get("completions") or 1):
            self._finish(job, status, succeeded=True)
        elif failed > int(spec.get("backoffLimit", 6)):
            self._finish(job, status, succeeded=False)
        elif spec.get("suspend"):
            for pod in self._live(job):
                self.delete_pod(pod)
        else:
            did = self._run(job, status, succeeded)
        active = self._live(job)
        status.update(
            active=len(active),
            ready=sum(1 for pod in active if is_ready(pod)),
            succeeded=succeeded,
            failed=failed,
            terminating=0,
            uncountedTerminatedPods={},
        )
        status = {
            key: value
            for key, value in status.items()
            if value or key in ("ready", "terminating", "uncountedTerminatedPods")
        }
        if status != job.get("status"):
            updated = copy.deepcopy(job)
            updated["status"] = status
            did = self.write(JOBS, updated) or did
        return did

    def expire(self, job: Obj) -> bool:
        """Delete a finished Job (and its pods) once ``ttlSecondsAfterFinished`` passed."""
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is None:
            return False
        status = job.get("status") or {}
        ended = status.get("completionTime") or next(
            (
                c["lastTransitionTime"]
                for c in status.get("conditions") or []
                if c["type"] == "Failed"
            ),
            None,
        )
        if ended is None or self.store.clock.now() < parse_time(ended) + dt.timedelta(seconds=ttl):
            return False
        self.store.delete(
            JOBS, namespace_of(job), job["metadata"]["name"], propagation="Background"
        )
        self._outcomes.pop(str(job["metadata"]["uid"]), None)
        return True

    def sweep(self) -> bool:
        """Expire the finished Jobs whose time has come (called as time passes)."""
        did = False
        for job in self.store.items(JOBS):
            if finished(job):
                did = self.expire(job) or did
        return did
