"""Fixtures every test directory may use."""

pytest_plugins = [
    "tests.moto_server",
    "tests.kube_api.fixtures",
    "tests.secret_scan",
    "tests.faults.summary",
]
