"""Playing runners that no machine boots here: the simulated runner's protocol, spoken
for each EC2 instance or Kubernetes pod runs-fleet launched (see :mod:`tests.faults.modes`)."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any


class RunnerPlayer:
    """Plays runners with the simulator's runner protocol (see the module docstring)."""

    def __init__(self, job_seconds: float) -> None:
        self.job_seconds = job_seconds
        self.sessions: Counter[str] = Counter()
        """Runner sessions started, by runner name."""
        self.interrupted: list[str] = []
        """Runners whose machine went away while they ran a job."""
        self.problems: list[str] = []
        self._lock = threading.Lock()

    def play(
        self,
        name: str,
        jit_config: str,
        gone: Callable[[], bool],
        after: Callable[[], None] = lambda: None,
    ) -> None:
        """Run one runner session in a thread; ``after`` runs when it ends."""
        with self._lock:
            self.sessions[name] += 1

        def session() -> None:
            try:
                self._play(name, jit_config, gone)
            finally:
                after()

        threading.Thread(target=session, daemon=True).start()

    def _play(self, name: str, jit_config: str, gone: Callable[[], bool]) -> None:
        config = json.loads(base64.b64decode(jit_config))
        try:
            job = self._post(config, "acquire", {"wait_s": 20})
            if job is None:
                self._post(config, "disconnect", {})
                return
            time.sleep(self.job_seconds)
            if gone():
                self.interrupted.append(name)
                self._post(config, "complete", {"conclusion": "cancelled"})
                return
            self._post(config, "complete", {"conclusion": "success"})
        except (OSError, ValueError) as exc:
            self.problems.append(f"{name}: {exc}")

    @staticmethod
    def _post(config: Mapping[str, Any], action: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{config['url']}/_simulator/runners/{action}",
            data=json.dumps(
                {"runner_id": config["runner_id"], "secret": config["secret"]} | body
            ).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return json.loads(text) if response.status == 200 and text else None
