"""Suspend and resume: the app's state packed as a tar and carried to and from presigned URLs.

``POST /suspend`` asks the app to write its state into an empty directory, packs it as an
uncompressed tar (the files under ``state/``, then ``manifest.json``) and PUTs it to the URL the
operator gave; then the worker ends (``Suspended``). ``POST /resume`` GETs such a tar, extracting
it as it arrives, checks its size and sha256 against what the suspend reported, and only then
hands the files to the app's ``resume``.

The worker never holds the store's credentials: each URL is presigned by the operator for this
session's own object only and expires within minutes. Packing, hashing and extracting run off the
event loop (a GB of state must not stall the probes).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import http.client
import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from aiohttp import web

from kubesessions.api.names import (
    NOT_SUSPENDABLE,
    RESUME_FAILED,
    STATE_CORRUPT,
    STATE_TOO_LARGE,
    SUSPEND_FAILED,
)

from .problems import Problem
from .runner import Runner

log = logging.getLogger(__name__)

RUNNER = web.AppKey("suspension_runner", Runner)
MANIFEST = "manifest.json"
STATE = "state"  # the app's files sit under this folder of the tar
CHUNK = 1 << 20
# The most a presigned transfer may take: a GB at a slow 20 MB/s, with room; the URL's own
# expiry (minutes) bounds it too.
TRANSFER_SECONDS = 900
SOCKET_TIMEOUT = 30  # seconds a connect or one read may wait
# The resume's GET runs in a thread with the standard library (read, hashed and extracted in
# one pass); a pod's proxy settings, if any, are not for the store's presigned URL.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class _Underway:
    """The resume running now, as its answer to come (a dict: resumed; a Problem: failed)."""

    answer: asyncio.Future[dict[str, Any] | Problem] | None = None


UNDERWAY = web.AppKey("resume_underway", _Underway)


def install(app: web.Application, runner: Runner) -> None:
    app[RUNNER] = runner
    app[UNDERWAY] = _Underway()
    app.router.add_post("/suspend", _suspend)
    app.router.add_post("/resume", _resume)


class TooLarge(Exception):
    pass


class _UploadError(Exception):
    """The store refused the upload, or the connection failed: the message says which."""


class _Cut(Exception):
    """The connection to the store failed while the state was being sent."""


@dataclass(frozen=True)
class Packed:
    bytes: int
    sha256: str


def _members(source: Path) -> list[tuple[Path, str]]:
    """``source``'s tree as (path, name in the tar), folders and regular files only."""
    members = []
    for path in sorted(source.rglob("*")):
        name = f"{STATE}/{path.relative_to(source).as_posix()}"
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            raise ValueError(f"suspend left {name!r}, which is not a regular file or a folder")
        members.append((path, name))
    return members


def _blocks(size: int, block: int = tarfile.BLOCKSIZE) -> int:
    return -(-size // block) * block


class _Planned:
    """The tar :func:`pack` writes, sized before a byte of it is written: its headers are
    made here (the same ``TarInfo.tobuf`` tar writes) and each file's data padded to blocks,
    so the upload can say its length up front (a presigned PUT needs it) and stream."""

    def __init__(self, source: Path, manifest: dict[str, Any]) -> None:
        self.infos: list[tuple[tarfile.TarInfo, Path]] = []
        self.state_bytes = 0
        for path, name in _members(source):
            info = tarfile.TarInfo(name)
            stat = path.stat()
            info.mode, info.mtime = stat.st_mode & 0o7777, int(stat.st_mtime)
            info.type = tarfile.REGTYPE if path.is_file() else tarfile.DIRTYPE
            info.size = stat.st_size if path.is_file() else 0
            self.infos.append((info, path))
            self.state_bytes += len(self._header(info)) + _blocks(info.size)
        self.files = sum(1 for info, _ in self.infos if info.isfile())
        self.manifest = manifest
        self.bytes = _blocks(
            self.state_bytes + self._manifest_bytes("0" * 64) + 2 * tarfile.BLOCKSIZE, tarfile.RECORDSIZE
        )

    @staticmethod
    def _header(info: tarfile.TarInfo) -> bytes:
        return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")

    def manifest_member(self, state_sha256: str) -> tuple[tarfile.TarInfo, bytes]:
        body = json.dumps(
            {
                **self.manifest,
                "files": self.files,
                "stateBytes": self.state_bytes,
                "stateSha256": state_sha256,
            },
            indent=1,
        ).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime = len(body), int(time.time())
        return info, body

    def _manifest_bytes(self, state_sha256: str) -> int:
        info, body = self.manifest_member(state_sha256)
        return len(self._header(info)) + _blocks(len(body))


class _Sink:
    """What tar writes, hashed, counted and passed on to ``send``."""

    def __init__(self, send: Callable[[bytes], None]) -> None:
        self.send = send
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        self.hash.update(data)
        try:
            self.send(data)
        except OSError as exc:
            raise _Cut(repr(exc)) from None
        return len(data)

    def tell(self) -> int:
        return self.size


def pack(plan: _Planned, send: Callable[[bytes], None]) -> Packed:
    """Tar the planned tree under ``state/``, then the manifest (with the state part's sha256),
    handing the bytes to ``send`` as they are made; exactly ``plan.bytes`` of them."""
    out = _Sink(send)
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        tar.copybufsize = CHUNK  # 16 KiB by default: a GB in 64k small writes
        for info, path in plan.infos:
            if info.isfile():
                with path.open("rb") as f:
                    tar.addfile(info, f)  # its planned size: a file grown since would be cut
                    if os.fstat(f.fileno()).st_size != info.size:
                        raise ValueError(f"the state changed while it was packed: {info.name}")
            else:
                tar.addfile(info)
        info, body = plan.manifest_member(out.hash.hexdigest())
        tar.addfile(info, io.BytesIO(body))
    if out.size != plan.bytes:  # the plan missed a header: the store would refuse a body of another length
        raise ValueError(f"the state changed while it was packed ({out.size} bytes, {plan.bytes} planned)")
    return Packed(out.size, out.hash.hexdigest())


def upload(url: str, source: Path, manifest: dict[str, Any], max_bytes: int) -> Packed:
    """PUT the tar of ``source`` to ``url`` as it is made (no copy of it on disk), in one pass
    that reads, hashes and sends. Raises TooLarge (nothing sent) past ``max_bytes``;
    _UploadError when the store refuses it or the connection fails; ValueError or OSError when
    the state cannot be read."""
    plan = _Planned(source, manifest)
    if plan.bytes > max_bytes:
        raise TooLarge(f"the state is {plan.bytes} bytes, over max_bytes ({max_bytes})")
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.netloc, timeout=SOCKET_TIMEOUT)
    try:
        conn.putrequest(
            "PUT", f"{parts.path}?{parts.query}" if parts.query else parts.path, skip_accept_encoding=True
        )
        conn.putheader("Content-Length", str(plan.bytes))
        conn.putheader("Content-Type", "application/x-tar")
        conn.endheaders()
        packed: Packed | None = None
        cut: _Cut | None = None
        try:
            packed = pack(plan, conn.send)
        except _Cut as exc:
            cut = exc  # a store that refuses may close before the body is in: its answer says why
        try:
            response = conn.getresponse()
            text = response.read()[:300].decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            raise _UploadError(f"uploading the state failed: {cut or repr(exc)}") from None
        if response.status >= 300:
            raise _UploadError(f"the store refused the upload: {response.status} {text}")
        if packed is None:
            raise _UploadError(f"uploading the state failed: {cut}")
        return packed
    finally:
        conn.close()


def unpack(stream: IO[bytes], target: Path) -> tuple[Path, dict[str, Any]]:
    """Extract a packed state as it is read (tar's stream mode: no copy of the tar on disk);
    returns the app's folder and the manifest. Only files and folders inside ``target`` are
    extracted (a state holds nothing else: :func:`pack` refuses links), checked here because
    the ``data`` filter of ``extract`` is missing from the Python 3.11 of Debian bookworm
    (3.11.2), the worker image's base; where it exists it is used as well."""
    root = target.resolve()
    # 1 MiB reads and copies, not tar's 10 KiB and 16 KiB: a GB in a thousand of each.
    with tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK, copybufsize=CHUNK) as tar:  # type: ignore[call-overload]
        for member in tar:
            _check_member(member, root)
            if hasattr(tarfile, "data_filter"):
                tar.extract(member, target, filter="data")
            else:
                tar.extract(member, target)  # the member is checked above
    manifest = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    state = target / STATE
    state.mkdir(exist_ok=True)  # an app that saved nothing still gets its (empty) folder
    return state, manifest


def _check_member(member: tarfile.TarInfo, root: Path) -> None:
    if not (member.isfile() or member.isdir()):
        raise ValueError(f"{member.name}: only files and folders may be in a state")
    if member.name.startswith("/") or not (root / member.name).resolve().is_relative_to(root):
        raise ValueError(f"{member.name}: outside the state's folder")
    member.mode &= 0o755  # no set-id bits, whatever the tar says


class _Oversize(Exception):
    """More bytes arrived than the suspend reported: a mismatch already, read no further."""


class _TransferError(Exception):
    """The connection to the store failed mid-way (not the state's fault)."""


class _HashingReader:
    """A response body read as it arrives: counted and hashed, cut off past ``limit`` bytes
    and past ``deadline`` (monotonic)."""

    def __init__(self, source: IO[bytes], limit: int, deadline: float) -> None:
        self.source, self.limit, self.deadline = source, limit, deadline
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = CHUNK) -> bytes:
        if time.monotonic() > self.deadline:
            raise _TransferError(f"the transfer ran past {TRANSFER_SECONDS}s")
        try:
            data = self.source.read(n if n >= 0 else CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            raise _TransferError(repr(exc)) from None
        self.size += len(data)
        if self.size > self.limit:
            raise _Oversize
        self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


@dataclass(frozen=True)
class Fetched:
    bytes: int
    sha256: str
    unpacked: tuple[Path, dict[str, Any]] | None  # None: it could not be unpacked (see why)
    why: str = ""


def fetch(url: str, target: Path, expected: int) -> Fetched:
    """GET the state and extract it into ``target`` in one pass, hashing it as it comes; the
    caller compares size and sha256 before the app sees anything (a mismatch: ``target`` is
    thrown away). Raises Problem(RESUME_FAILED) when the store refuses or the transfer fails."""
    try:
        with _NO_PROXY.open(url, timeout=SOCKET_TIMEOUT) as response:
            reader = _HashingReader(response, expected, time.monotonic() + TRANSFER_SECONDS)
            unpacked, why = None, ""
            try:
                unpacked = unpack(cast(IO[bytes], reader), target)
                reader.drain()  # the tar's end padding is part of what was hashed at suspend
            except _Oversize:
                why = "it is larger than saved"
            except (OSError, ValueError, tarfile.TarError) as exc:
                why = str(exc)
                with contextlib.suppress(_Oversize):
                    reader.drain()  # its size and hash still say whether it is the one saved
            return Fetched(reader.size, reader.hash.hexdigest(), unpacked, why)
    except urllib.error.HTTPError as exc:
        text = exc.read()[:300].decode(errors="replace")
        raise Problem(RESUME_FAILED, f"the store refused the download: {exc.code} {text}") from None
    except (_TransferError, OSError, http.client.HTTPException) as exc:
        raise Problem(RESUME_FAILED, f"downloading the state failed: {exc}") from None


async def _suspend(request: web.Request) -> web.Response:
    runner = request.app[RUNNER]
    body = await _json(request)
    url, max_bytes = _url(body, "url"), body.get("max_bytes")
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1:
        raise Problem("VALIDATION", f"max_bytes must be a whole number of bytes >= 1, got {max_bytes!r}")
    if not runner.app.suspendable():
        raise Problem(NOT_SUSPENDABLE, f"{runner.app.spec} has no suspend(dir) and resume(dir) methods")
    runner.begin_suspend()
    saved: str | None = None
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="suspend-"))
    try:
        state = work / STATE
        state.mkdir()
        await _app_step(runner, runner.app.suspend, state, SUSPEND_FAILED, "suspend")
        manifest = {
            "app": runner.app.spec,
            "appVersion": runner.app.version(),
            "sessionId": runner.session_id,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "suspendSeconds": round(time.monotonic() - started, 3),
        }
        try:
            packed = await asyncio.to_thread(upload, url, state, manifest, max_bytes)
        except TooLarge as exc:
            raise Problem(STATE_TOO_LARGE, f"{exc}: nothing was uploaded, the session goes on") from None
        except _UploadError as exc:
            raise Problem(SUSPEND_FAILED, str(exc)) from None
        except (OSError, ValueError) as exc:
            raise Problem(SUSPEND_FAILED, f"packing the state failed: {exc}") from None
        result = {
            "bytes": packed.bytes,
            "sha256": packed.sha256,
            "seconds": round(time.monotonic() - started, 3),
            "app": runner.app.spec,
            "app_version": manifest["appVersion"],
        }
        saved = json.dumps(result)
        log.info("suspended: %d bytes in %.2fs", packed.bytes, result["seconds"])
        return web.json_response(result)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)
        runner.end_suspend(saved)


async def _resume(request: web.Request) -> web.Response:
    runner = request.app[RUNNER]
    body = await _json(request)
    url = _url(body, "url")
    sha256, size = body.get("sha256"), body.get("bytes")
    if not isinstance(sha256, str) or len(sha256) != 64:
        raise Problem("VALIDATION", "sha256 must be the state's sha256 as 64 hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise Problem("VALIDATION", f"bytes must be the state's size in bytes (>= 1), got {size!r}")
    if not runner.app.suspendable():
        raise Problem(NOT_SUSPENDABLE, f"{runner.app.spec} has no suspend(dir) and resume(dir) methods")
    underway = request.app[UNDERWAY]
    if underway.answer is not None:
        # Asked again while it runs (an operator that restarted mid-resume): that resume's
        # answer, when it comes. Neither a second resume nor "resumed" before the state is in.
        first = await asyncio.shield(underway.answer)
        if isinstance(first, Problem):
            raise first
        return web.json_response(first)
    runner.begin_resume()
    answer = underway.answer = asyncio.get_running_loop().create_future()
    said: dict[str, Any] | Problem = Problem(RESUME_FAILED, "the resume was interrupted")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="resume-"))
    try:
        got = await asyncio.to_thread(fetch, url, work / "x", size)
        if (got.bytes, got.sha256) != (size, sha256.lower()):
            raise Problem(
                STATE_CORRUPT,
                f"the state fetched is {got.bytes} bytes with sha256 {got.sha256}, "
                f"not the {size} bytes with sha256 {sha256} saved: nothing was handed to the app",
            )
        if got.unpacked is None:
            raise Problem(STATE_CORRUPT, f"the state cannot be unpacked: {got.why}")
        state, manifest = got.unpacked
        if manifest.get("app") != runner.app.spec:
            log.warning("resuming state saved by %s into %s", manifest.get("app"), runner.app.spec)
        await _app_step(runner, runner.app.resume, state, RESUME_FAILED, "resume")
        seconds = round(time.monotonic() - started, 3)
        log.info("resumed %d bytes of state in %.2fs", size, seconds)
        said = {"seconds": seconds}
        return web.json_response(said)
    except Problem as problem:
        said = problem
        raise
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)
        runner.end_resume(f"{said.code}: {said.detail}" if isinstance(said, Problem) else None)
        underway.answer = None
        answer.set_result(said)


async def _app_step(
    runner: Runner, step: Callable[[Path], Awaitable[None]], state: Path, code: str, what: str
) -> None:
    """The app's own suspend or resume, under the call timeout; its error is the answer."""
    try:
        async with asyncio.timeout(runner.call_timeout):
            await step(state)
    except TimeoutError:
        raise Problem(code, f"the app's {what} ran past {runner.call_timeout:g}s") from None
    except Exception as exc:
        log.warning("the app's %s failed: %s: %s", what, type(exc).__name__, exc, exc_info=exc)
        raise Problem(code, f"the app's {what} raised {type(exc).__name__}: {exc}") from None


def _url(body: dict[str, Any], field: str) -> str:
    url = body.get(field)
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise Problem("VALIDATION", f"{field} must be an http(s) URL (the presigned one for this session)")
    return url


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read())
    except ValueError as exc:
        raise Problem("VALIDATION", f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Problem("VALIDATION", "the body must be a JSON object")
    return body
