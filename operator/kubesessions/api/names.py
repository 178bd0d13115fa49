"""Every name on the wire, in one place: the API group and version, the labels and annotations
on Sessions and their children, the worker's port, the HTTP headers and the token's key.

Standard library only, and nothing else of ours: the client and the worker import this module
without bringing in the operator's dependencies (tests/unit/test_layers.py checks both).
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]  # a decoded JSON object: every body on the wire, every Kubernetes object

# -- the API ------------------------------------------------------------------------------
GROUP = "kubesessions.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# -- labels on the children (pods, Services, Secrets) and on pool workers -----------------
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "kube-sessions"
SESSION_LABEL = f"{GROUP}/session"
APP_LABEL = f"{GROUP}/app"
POOL_LABEL = f"{GROUP}/pool"  # on an unclaimed pool worker: its App's name
# Pods with this label may call workers (the workers' NetworkPolicy).
CLIENT_LABEL = (f"{GROUP}/client", "true")
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"

# -- annotations --------------------------------------------------------------------------
LAST_ACTIVITY = f"{GROUP}/last-activity"  # on the worker pod: RFC 3339, UTC, milliseconds
# On a Session: close it (the value says why); set by the gateway, acted on by the operator.
CLOSE_ANNOTATION = f"{GROUP}/close"
# On a one-shot call's Session, set with the close: the call's outcome, for its retries and readers.
OUTCOME_ANNOTATION = f"{GROUP}/outcome"
ONE_SHOT_ANNOTATION = f"{GROUP}/one-shot"  # on a Session made for one call: that call's id
KEEPALIVE_ANNOTATION = f"{GROUP}/keepalive"  # on a Session: a keepalive to pass on
KEEPALIVE_SEEN = f"{GROUP}/keepalive-seen"  # on the pod: the last keepalive passed on
CREATED_BY_ANNOTATION = f"{GROUP}/created-by"  # on a Session the gateway made: who asked
TEMPLATE_HASH = f"{GROUP}/template-hash"  # on a pool worker: what it was built from
SETUP_TIMEOUT_ANNOTATION = f"{GROUP}/setup-timeout"  # on a worker pod: seconds it may take to be ready
CLAIMED_BY = f"{GROUP}/claimed-by"  # on a claimed pool worker: the Session's uid
CLAIMED_AT = f"{GROUP}/claimed-at"
# On a Session: suspend it now / wake it (value: RFC 3339 time of the request); set by a user
# (kubectl annotate), the gateway or the client; the operator removes each when it acts on it.
SUSPEND_REQUESTED = f"{GROUP}/suspend-requested"
RESUME_REQUESTED = f"{GROUP}/resume-requested"

# -- the worker -----------------------------------------------------------------------------
WORKER_PORT = 8080
WORKER_CONTAINER = "worker"
WORKER_POLICY = "kube-sessions-workers"  # the workers' NetworkPolicy
TOKEN_KEY = "token"  # noqa: S105 - the key in the Secret, not a secret
POOL_ENV = "KUBESESSIONS_POOL"  # set on a pool worker: its App's name
GPU_RESOURCE = "nvidia.com/gpu"

# -- HTTP -----------------------------------------------------------------------------------
CALL_ID_HEADER = "Idempotency-Key"  # one per logical call, the same on every retry


# -- suspended state (the state store) ------------------------------------------------------
STATE_STORE_SECRET = "kube-sessions-state-store"  # noqa: S105 - the Secret holding the store settings
STATE_STORE_ENV_PREFIX = "KUBESESSIONS_STATE_STORE_"  # + ENDPOINT, BUCKET, REGION, ACCESS_KEY_ID, ...
STATE_STORE_KEYS = ("ENDPOINT", "BUCKET", "REGION", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY")
STATE_PREFIX = "sessions/"
# The worker's answers about suspend and resume: the ``code`` of its problem+json bodies.
BUSY = "BUSY"  # 409 to /suspend: a call is running or queued (it won; try again when idle)
SUSPENDING = "SUSPENDING"  # 409 to a call while the worker suspends (the gateway wakes it after)
NOT_SUSPENDABLE = "NOT_SUSPENDABLE"  # 409: the app has no suspend/resume methods
RESUME_REFUSED = "RESUME_REFUSED"  # 409 to /resume: the worker has run calls or resumed already
STATE_TOO_LARGE = "STATE_TOO_LARGE"  # 413: the packed state is over max_bytes; nothing uploaded
STATE_CORRUPT = "STATE_CORRUPT"  # 422: the downloaded state's size or sha256 is not the one given
SUSPEND_FAILED = "SUSPEND_FAILED"  # 500: the app's suspend raised, or the upload failed
RESUME_FAILED = "RESUME_FAILED"  # 500: the app's resume raised, or the download failed


def state_key(namespace: str, name: str, uid: str) -> str:
    """The object key of a suspended Session's state: its uid in the key means a Session made
    again under the same name never reads the old one's state."""
    return f"{STATE_PREFIX}{namespace}/{name}/{uid}/state.tar"
