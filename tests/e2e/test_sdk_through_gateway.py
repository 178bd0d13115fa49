"""The inference.sh SDK tests of ``tests/compat``, unchanged, against the gateway in its
container (reached through `kubectl port-forward`) and workers in containers."""

from __future__ import annotations

import uuid

import pytest

from ..cluster.conftest import service_account_token
from ..compat.test_sdk import (  # noqa: F401 - collected here, with this directory's fixtures
    client,
    test_app_reference_with_namespace_and_version,
    test_async_client_sequential_calls_on_one_session,
    test_create_reuse_inspect_and_close,
    test_errors_come_out_in_the_sdk_exceptions,
    test_recovery_after_expiry,
    test_stream_updates_end_with_the_result,
    test_wait_false_then_get_task,
)
from ..conftest import Cluster
from .conftest import Release

pytestmark = pytest.mark.e2e


@pytest.fixture
def namespace(release: Release) -> str:
    return release.namespace


@pytest.fixture
def gateway(release: Release) -> Release:
    return release


@pytest.fixture
def token(kube: Cluster, namespace: str) -> str:
    # One namespace for every test here: a ServiceAccount of its own each.
    return service_account_token(kube, namespace, f"sdk-{uuid.uuid4().hex[:6]}", allowed=True)
