"""The README's commands, run as written, so the README cannot drift from the code.

Every ```sh, ```python and ```ts block runs in order in one bash session (so `eval`, `export` and
background jobs carry over from block to block), from the repository root, with the
project's `.venv/bin` off PATH (the README's own activation line must put it there). Python
blocks run through `python` of that session; TypeScript blocks through tsx with the JavaScript
SDK that `make compat-js` installs from tests/compat/js's lock file (skipped where there is no
Node.js). Changes made to the text before it runs:
- `KUBESESSIONS_LOCALCLUSTER_DIR` points at a temporary directory, so the README's `up` starts
  a cluster of this test's own and every later command finds it;
- the gateway's port 8000 becomes a free port, as another process may hold 8000.
A block after `<!-- doctest: skip (reason) -->` is not run (each is reported as a skipped test
with its reason); one after `<!-- doctest: last (reason) -->` runs after all the others, once
the background jobs the README started are stopped.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubesessions.localcluster import cluster

from ..conftest import REPO

pytestmark = pytest.mark.cluster

README = REPO / "README.md"
JS = "tests/compat/js"  # the JavaScript SDK's pinned install (make compat-js)
RUN_TIMEOUT = 480  # seconds: a cluster start, an operator, a gateway and a few sessions
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*doctest:\s*(skip|last)\s*(.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    mode: str  # "run", "skip" or "last"
    reason: str = ""


def readme_blocks(text: str) -> list[Block]:
    """The sh and python blocks, with the doctest marker of each (on the line before its fence,
    blank lines between allowed)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        language = fence.group(1)
        if language in ("sh", "bash", "python", "ts"):
            before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = MARKER.match(before.strip())
            mode, reason = (marker.group(1), marker.group(2).strip("() ")) if marker else ("run", "")
            if marker:
                assert reason, f"README line {i}: a doctest marker needs its reason in parentheses"
            if language == "ts" and mode == "run" and shutil.which("node") is None:
                mode, reason = "skip", "no Node.js on this machine to run TypeScript"
            blocks.append(Block(i + 1, language, "\n".join(lines[i + 1 : end]), mode, reason))
        i = end + 1
    return blocks


def script(blocks: list[Block], port: int) -> str:
    """One bash script: each block, then the background jobs stopped, then the `last` blocks."""
    parts = [
        "set -Eeo pipefail",
        "__line=0",
        'trap \'printf "\\nREADME block at line %s failed (exit %s): %s\\n" $__line $? "$BASH_COMMAND" >&2\' ERR',
        "stop_jobs() { jobs -p | xargs -r kill 2>/dev/null || true; wait 2>/dev/null || true; }",
        "trap stop_jobs EXIT",
    ]

    def emit(block: Block) -> None:
        text = re.sub(r"\b8000\b", str(port), block.text)
        parts.append(f"__line={block.line}")
        if block.language == "python":
            parts.append(f"python - <<'README_PYTHON'\n{text}\nREADME_PYTHON")
        elif block.language == "ts":
            # Beside the SDK in node_modules, so that its import resolves; .mts: an ES module.
            where = f"{JS}/node_modules/.readme/line-{block.line}.mts"
            parts.append(f"make --no-print-directory compat-js >&2 && mkdir -p {JS}/node_modules/.readme")
            parts.append(f"cat > {where} <<'README_TS'\n{text}\nREADME_TS")
            parts.append(f"{JS}/node_modules/.bin/tsx {where}")
        else:
            parts.append(text)
        # On a line of its own: the block's last output may not end with a newline.
        parts.append(f"printf '\\nREADME block at line {block.line}: ok\\n' >&2")

    for block in (b for b in blocks if b.mode == "run"):
        emit(block)
    parts.append("stop_jobs")
    for block in (b for b in blocks if b.mode == "last"):
        emit(block)
    return "\n".join(parts) + "\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(state_dir: Path) -> dict[str, str]:
    """This machine's environment as a newcomer's shell would have it: no KUBECONFIG, no
    activated venv; the test's state directory in place of `.localcluster`."""
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["KUBESESSIONS_LOCALCLUSTER_DIR"] = str(state_dir)
    return env


BLOCKS = readme_blocks(README.read_text())


def test_readme_has_blocks_to_run() -> None:
    runnable = [b for b in BLOCKS if b.mode != "skip"]
    assert len(runnable) >= 8, f"only {len(runnable)} README blocks found to run: the parser or README broke"
    assert any(b.mode == "last" for b in BLOCKS), "the README's `localcluster down` block is not marked last"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.mode == "skip"], ids=lambda b: f"line-{b.line}")
def test_readme_block_not_run_here(block: Block) -> None:
    pytest.skip(f"README line {block.line}: {block.reason}")


def test_readme_commands_work(tmp_path: Path) -> None:
    state_dir = tmp_path / "cluster"
    runnable = [b for b in BLOCKS if b.mode != "skip"]
    (tmp_path / "readme.sh").write_text(script(BLOCKS, _free_port()))
    log = tmp_path / "readme.log"
    with log.open("wb") as out:
        # Its own process group: the operator and gateway the README starts in the background
        # belong to it, so whatever is left can be stopped by this one id.
        proc = subprocess.Popen(
            ["bash", str(tmp_path / "readme.sh")],
            cwd=REPO,
            env=_environment(state_dir),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        code: int | None = proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        _stop(proc)
        if cluster.StateDir(state_dir).load() is not None:
            cluster.down(cluster.StateDir(state_dir), log=lambda _: None)
    output = log.read_text(errors="replace")
    tail = "\n".join(output.splitlines()[-40:])
    assert code is not None, (
        f"the README's commands did not finish within {RUN_TIMEOUT}s; output ends:\n{tail}"
    )
    failed = re.findall(r"^README block at line \d+ failed .*$", output, re.MULTILINE)
    assert code == 0, f"{failed[-1] if failed else f'exit {code}'}; the output ends:\n{tail}"
    done = {int(n) for n in re.findall(r"^README block at line (\d+): ok$", output, re.MULTILINE)}
    assert done == {b.line for b in runnable}, (
        f"blocks that did not run: {sorted({b.line for b in runnable} - done)}"
    )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the script's process group (its background jobs too), SIGKILL what outlives 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _group_alive(proc.pid):
            return
        os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)  # no event tells when a process group is empty
