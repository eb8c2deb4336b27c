"""Shared pytest configuration: hypothesis profiles and the shared/ data location."""
import os
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
