"""pytest plugin: with SPIKELOOP_NO_SKIP=1 (set by .ci/run) a skipped test fails the run, unless it is
marked `gpu` or `serial_hw` (hardware this machine may lack). A test that skips because a declared
dependency is missing (an importorskip, a missing tool) would otherwise pass CI without running.

Loaded by tests/conftest.py; `python -m pytest -p skip_guard` loads it in other test trees.
"""

from __future__ import annotations

import os

import pytest

ALLOWED_MARKERS = ("gpu", "serial_hw")
ENV = "SPIKELOOP_NO_SKIP"

_forbidden: list[tuple[str, str]] = []


def _enabled() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


def pytest_runtest_logreport(report):
    if not (report.skipped and _enabled()) or hasattr(report, "wasxfail"):
        return
    if any(m in report.keywords for m in ALLOWED_MARKERS):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    _forbidden.append((report.nodeid, reason))


def pytest_terminal_summary(terminalreporter):
    if _forbidden:
        terminalreporter.section(f"{ENV}: skipped tests not marked {' or '.join(ALLOWED_MARKERS)}")
        for nodeid, reason in _forbidden:
            terminalreporter.line(f"{nodeid}: {reason}")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    if _forbidden and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
