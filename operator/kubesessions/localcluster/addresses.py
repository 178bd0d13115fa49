"""Loopback addresses for the process node's pods: one 127.<block>.0.0/16 block per live node."""

from __future__ import annotations

import fcntl
import ipaddress
from pathlib import Path
from typing import IO


class AddressPool:
    """Loopback addresses for this node's pods, within its block 127.<block>.0.0/16.

    Block 0 gives 127.0.0.2 upward. Addresses skip .0, .1 and .255 of each /24.
    """

    def __init__(self, block: int = 0) -> None:
        self._prefix = f"127.{block}."
        self._free: list[str] = []
        self._next = int(ipaddress.ip_address(f"{self._prefix}0.2"))
        self._used: set[str] = set()

    def take(self) -> str:
        while self._free:
            ip = self._free.pop(0)
            if ip not in self._used:
                self._used.add(ip)
                return ip
        while True:
            ip = str(ipaddress.ip_address(self._next))
            self._next += 1
            if not ip.startswith(self._prefix):
                raise RuntimeError(f"no loopback addresses left in {self._prefix}0.0/16")
            if int(ip.rsplit(".", 1)[1]) in (0, 1, 255) or ip in self._used:
                continue
            self._used.add(ip)
            return ip

    def claim(self, ip: str) -> bool:
        if ip in self._used or not ip.startswith(self._prefix):
            return False
        self._used.add(ip)
        return True

    def release(self, ip: str) -> None:
        if ip in self._used:
            self._used.discard(ip)
            self._free.append(ip)


def claim_address_block(lock_dir: Path) -> tuple[int, IO[bytes]]:
    """The lowest 127.<block>.0.0/16 no other live process node on this machine holds.

    Two local clusters must not hand out the same pod IPs (a probe or call would reach the
    other cluster's pod). Each node holds an flock on its block's file for its lifetime, so
    a crashed node frees its block by itself.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    for block in range(255):
        handle = (lock_dir / f"block-{block}.lock").open("wb")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return block, handle
    raise RuntimeError(f"all 255 loopback address blocks are held by process nodes ({lock_dir})")
