"""What a pod runner needs from its node (the process node implements it)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

from kubesessions.api.names import JSON


class PodServices(ABC):
    """What a runner needs from its node."""

    @property
    @abstractmethod
    def image_map(self) -> Mapping[str, str]: ...

    @abstractmethod
    def base_env(self) -> dict[str, str]: ...

    @abstractmethod
    async def lookup(self, kind: str, namespace: str, name: str) -> Mapping[str, str] | None: ...

    @abstractmethod
    async def patch_status(self, pod: JSON, status: JSON) -> JSON | None: ...

    @abstractmethod
    async def event(self, pod: JSON, kind: str, reason: str, message: str) -> None: ...

    @abstractmethod
    async def remove(self, pod: JSON) -> None: ...

    @abstractmethod
    async def service_account_kubeconfig(self, pod: JSON) -> JSON | None:
        """A kubeconfig with a real token of the pod's service account, if it should get one."""
