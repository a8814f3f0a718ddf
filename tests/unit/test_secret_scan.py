"""The secret scanner (``tests/secret_scan.py``) fails a session that prints a secret.

Each test runs a small pytest session with the scanner loaded (``pytester``) whose one
test plants one secret, made the way runs-fleet's real sources make it (the GitHub
simulator's tokens and JIT configs, a generated App key, the Kubernetes Secret data of a
runner config), in one place where output goes. The session must fail with a report
that names the test, the place and the kind, and never shows the secret (pytest's own
warnings summary and failure reports still do: the scanner only judges them); the same
session printing only look-alikes passes.

An inner session's log records also reach the outer test's log capture, and pytester
echoes the inner terminal output (which shows pytest's own warnings summary and failure
reports) to the outer test's stdout: the test that plants secrets there carries the
``prints_fake_secret`` marker for it.
"""

from __future__ import annotations

import asyncio
import base64
import sys
import textwrap

import pytest

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.runner import RunnerConfig
from runs_fleet_core.domain.tokens import report_token
from runs_fleet_core.testing.memory import FakeGitHub
from runs_fleet_github_simulator import GitHubSimulator, generate_app_key
from runs_fleet_k8s import config_files

pytest_plugins = ["pytester"]

WEBHOOK_SECRET = "webhook-secret-of-the-scanner-test"
KEYS = generate_app_key()


def _simulator() -> GitHubSimulator:
    sim = GitHubSimulator(app_public_key=KEYS.public_pem, webhook_secret=WEBHOOK_SECRET)
    sim.add_repository("octo-org/app")
    return sim


def _jit_config() -> str:
    sim = _simulator()
    return sim.encode_jit_config(sim.register_jit_runner("octo-org/app", name="r-1", labels=[]))


def _secret_data() -> str:
    """What a runner config's Kubernetes Secret holds under ``data``: base64 of the
    secret file, which carries the base64 JIT config."""
    config = RunnerConfig(
        runner_name="runs-fleet-7-1",
        job_id=JobId(7),
        repository="octo-org/app",
        jit_config=_jit_config(),
    )
    _, secret = config_files.split(config)
    return base64.b64encode(secret[config_files.SECRET_FILE].encode()).decode()


async def _memory_registration_token() -> str:
    return (await FakeGitHub().registration_token("octo-org/app")).token


def _planted() -> dict[str, tuple[str, str, str | None]]:
    """By kind as the report names it: what the test prints, the secret in it, and the
    kind it is registered as (``None``: found by its shape alone)."""
    sim = _simulator()
    runner_token = report_token(WEBHOOK_SECRET, JobId(7), "runs-fleet-7-1")
    pem = KEYS.private_pem.decode()
    shapes = {
        "PEM private key": pem,
        "GitHub token": sim.issue_token(1).value,
        "GitHub token (classic)": "ghp_" + "a1B2c3D4e5" * 3 + "f6G7h8",
        "GitHub token (fine-grained)": "github_pat_11ABCDEFG0_" + "x1Y2z3" * 10,
        "JIT config": _jit_config(),
        "JIT config (base64-encoded)": _secret_data(),
        "registration token": sim.issue_registration_token(1, "octo-org/app").value,
        "registration token (memory GitHub)": asyncio.run(_memory_registration_token()),
    }
    planted: dict[str, tuple[str, str, str | None]] = {
        kind: (value, value, None) for kind, value in shapes.items()
    }
    planted["webhook secret"] = (f"secret={WEBHOOK_SECRET}", WEBHOOK_SECRET, "webhook secret")
    planted["report token"] = (runner_token, runner_token, "report token")
    planted["App private key"] = (pem, pem, "App private key")
    planted["Authorization header"] = (
        "{'Authorization': 'Bearer admin-token-of-the-operator'}",
        "admin-token-of-the-operator",
        None,
    )
    planted["password in a URL"] = ("redis://:Zq8vVbPp3nA1@127.0.0.1:6379/0", "Zq8vVbPp3nA1", None)
    return planted


def _module(*, register: str = "", setup: str = "", body: str = "pass") -> str:
    """A test module whose fixture runs ``register``, then ``setup`` before and after
    the test (so in setup and teardown), and whose one test runs ``body``."""
    return textwrap.dedent(
        f"""
        import logging, subprocess, sys, warnings
        import pytest
        from tests import secret_scan

        @pytest.fixture(autouse=True)
        def around(tmp_path):
            {register}
            {setup}
            yield
            {setup}

        def test_prints(tmp_path):
            {body}
        """
    )


INI = "[pytest]\nfilterwarnings = default::UserWarning\n"
"""The inner sessions' settings: warnings are recorded, not raised as errors."""


@pytest.fixture(autouse=True)
def _no_installed_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner sessions load the scanner alone: a tenth of the time of loading every
    installed plugin."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def _run(pytester: pytest.Pytester, module: str, *args: str) -> pytest.RunResult:
    pytester.makeini(INI)
    pytester.makepyfile(test_planted=module)
    return pytester.runpytest("-p", "tests.secret_scan", "--log-level=DEBUG", *args)


def _fails_naming(result: pytest.RunResult, where: str, kind: str, secret: str) -> None:
    """The session failed, reporting a ``kind`` secret at ``where`` (then a line
    number), and showed no line of ``secret``."""
    output = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    result.stdout.fnmatch_lines([f"{where}*line *: {kind}: *<{kind}*"])
    # the scanner's report, not pytest's own summary after it (which, on CI, prints a
    # failed assertion's values in full: what the inner test asserted on, not a log)
    report = output.partition("secrets in the output")[2].partition("short test summary")[0]
    assert "secret(s) in the output: the session fails" in report
    for part in secret.splitlines():
        assert part.strip() not in report


PLANTED = _planted()


@pytest.mark.parametrize("kind", list(PLANTED))
def test_a_planted_secret_of_each_kind_fails_the_session(
    pytester: pytest.Pytester, kind: str
) -> None:
    printed, secret, registered = PLANTED[kind]
    register = f"secret_scan.register_secret({secret!r}, {registered!r})" if registered else ""
    result = _run(pytester, _module(register=register, body=f"print({printed!r})"))
    result.assert_outcomes(passed=1)
    shown_kind = kind.partition(" (")[0] if "(base64" not in kind else kind
    _fails_naming(result, "test_planted.py::test_prints: Captured stdout call", shown_kind, secret)


TOKEN = PLANTED["GitHub token"][1]
LOGGED = f"logging.getLogger('runs_fleet').debug('token %s', {TOKEN!r})"
PLACES = {
    "Captured stderr setup": {"setup": f"print({TOKEN!r}, file=sys.stderr)"},
    "Captured log call": {"body": LOGGED},
    "Captured stdout teardown": {"setup": f"print({TOKEN!r})"},
    "failure report (call)": {"body": f"assert not {TOKEN!r}"},
    "warning": {"body": f"warnings.warn('token ' + {TOKEN!r})"},
}


@pytest.mark.parametrize("where", list(PLACES))
@pytest.mark.prints_fake_secret(
    "GitHub token",
    reason="the inner session's planted token also reaches this test's output: its log "
    "record this test's log capture, and pytest's echo of its warnings summary and failure "
    "report this test's stdout",
)
def test_a_secret_in_any_phase_or_section_fails_the_session(
    pytester: pytest.Pytester, where: str
) -> None:
    result = _run(pytester, _module(**PLACES[where]))
    _fails_naming(result, f"test_planted.py::test_prints: {where}", "GitHub token", TOKEN)


def test_a_secret_in_a_watched_process_log_fails_the_session(pytester: pytest.Pytester) -> None:
    argv = [sys.executable, "-c", "import sys; print(sys.argv[1])", TOKEN]
    body = f"""log = tmp_path / 'server.log'
            secret_scan.watch_file(log)
            with log.open('w') as out:
                subprocess.run({argv!r}, stdout=out, check=True)
            agents = tmp_path / 'runners' / 'r-1'
            agents.mkdir(parents=True)
            secret_scan.watch_dir(tmp_path)
            (agents / 'agent.log').write_text('ready\\n' + {WEBHOOK_SECRET!r})"""
    register = f"secret_scan.register_secret({WEBHOOK_SECRET!r}, 'webhook secret')"
    result = _run(pytester, _module(register=register, body=body))
    result.assert_outcomes(passed=1)
    during = "(written during test_planted.py::test_prints)"
    _fails_naming(result, f"*server.log {during}", "GitHub token", TOKEN)
    _fails_naming(result, f"*agent.log {during}", "webhook secret", WEBHOOK_SECRET)


LOOK_ALIKES = [
    "an 'Authorization: Bearer <admin token>' header is required",
    "X-Hub-Signature-256: sha256=" + "0f" * 32,
    "RUNS_FLEET_GITHUB_WEBHOOK_SECRET_FILE is not set",
    "job 4242: runner runs-fleet-4242-1 (ghs_ tokens are cached), url redis://127.0.0.1:6379/0",
    "-----BEGIN PUBLIC KEY-----",
    base64.b64encode(b'{"runner_name": "runs-fleet-1-1", "labels": ["linux"]}').decode(),
    "ABCDEFGHIJKLMNOPQRSTUVWXYZABC",
]


def test_a_session_that_prints_only_look_alikes_passes(pytester: pytest.Pytester) -> None:
    register = f"secret_scan.register_secret({WEBHOOK_SECRET!r}, 'webhook secret')"
    body = "; ".join(f"print({text!r})" for text in LOOK_ALIKES)
    quiet = "logging.getLogger('runs_fleet').debug('delivery d-1: signature checked')"
    result = _run(pytester, _module(register=register, body=body, setup=quiet))
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "secret scan: no secret in the output (3 captured outputs and 0 log files checked; "
            "log records from level DEBUG, botocore, boto3, s3transfer from INFO)"
        ]
    )


def test_a_marked_test_may_print_a_fake_secret_of_its_kind_only(pytester: pytest.Pytester) -> None:
    marked = _module(body=f"print({TOKEN!r})").replace(
        "def test_prints",
        "@pytest.mark.prints_fake_secret('GitHub token', reason='a sample')\ndef test_prints",
    )
    result = _run(pytester, marked)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        ["*Captured stdout call, line 1: GitHub token: *[[]allowed: a sample[]]"]
    )
    other = marked.replace(repr(TOKEN), repr(PLANTED["JIT config"][1]))
    assert _run(pytester, other).ret == pytest.ExitCode.TESTS_FAILED


def test_a_marker_without_a_reason_is_a_usage_error(pytester: pytest.Pytester) -> None:
    marked = _module().replace(
        "def test_prints", "@pytest.mark.prints_fake_secret('GitHub token')\ndef test_prints"
    )
    result = _run(pytester, marked)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "needs the kind of secret and a reason" in result.stderr.str()
