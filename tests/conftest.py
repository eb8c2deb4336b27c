"""Shared pytest configuration: hypothesis profiles, the shared/ data location, and a per-test
watchdog so that a hang fails the run instead of stalling CI."""
import faulthandler
import os
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Profiles (python-zstandard style): `default` for developers, `ci` for CI (selected by
# HYPOTHESIS_PROFILE=ci or CI=true), `expensive` by hand for long runs.
settings.register_profile("default", deadline=None, max_examples=100,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=150, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("expensive", deadline=None, max_examples=5000,
                          suppress_health_check=[HealthCheck.too_slow])
_profile = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default")
settings.load_profile(_profile)

REPO = Path(__file__).resolve().parent.parent
# ../shared beside the checkout holds the DeepDTA models and data (see shared/models/README.md).
SHARED = Path(os.environ.get("DNNZ_SHARED", REPO.parent / "shared"))


def pytest_collection_modifyitems(config, items):
    if os.environ.get("DNNZ_SLOW_TESTS", "") not in ("", "0"):
        return
    skip = pytest.mark.skip(reason="slow test: set DNNZ_SLOW_TESTS=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir():
    if not (SHARED / "models").is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set DNNZ_SHARED)")
    return SHARED


# Per-test hard time limit (DNNZ_TEST_TIMEOUT seconds, default 1200; 0 turns it off). A hang inside
# one C call cannot be interrupted by a Python signal handler, so a faulthandler watchdog thread
# prints every thread's traceback and ends the process: CI fails at once and names the test. The
# fuzzers add a much shorter per-input limit (tests/_container_edit.py: deadline).
_TEST_TIMEOUT = float(os.environ.get("DNNZ_TEST_TIMEOUT", "1200") or 0)


def _real_stderr(config):
    """The terminal's stderr: pytest's output capture redirects fd 2 to a file that is lost when the
    watchdog ends the process, but keeps a duplicate of the original (a private attribute: fall
    back to fd 2 if it moves)."""
    capman = config.pluginmanager.getplugin("capturemanager")
    fd = getattr(getattr(getattr(capman, "_global_capturing", None), "err", None), "targetfd_save", None)
    return fd if isinstance(fd, int) else sys.__stderr__


def pytest_configure(config):
    try:  # the fuzzers' per-input watchdog prints there too
        import _container_edit
    except ImportError:  # pragma: no cover - tests/ not on sys.path
        return
    _container_edit.WATCHDOG_FILE = _real_stderr(config)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    edit = sys.modules.get("_container_edit")
    if _TEST_TIMEOUT > 0:
        faulthandler.dump_traceback_later(_TEST_TIMEOUT, exit=True, file=_real_stderr(item.config))
        if edit is not None:
            edit.TEST_DEADLINE = time.monotonic() + _TEST_TIMEOUT
    try:
        yield
    finally:
        if _TEST_TIMEOUT > 0:
            faulthandler.cancel_dump_traceback_later()
            if edit is not None:
                edit.TEST_DEADLINE = None
