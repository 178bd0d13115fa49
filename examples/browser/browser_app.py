"""Browser: headless Chromium kept open for the session, driven with Playwright.

Playwright's Python package drives the **system** Chromium (Debian's ``chromium``; its own
browser download is not needed), found at ``/usr/bin/chromium`` or config ``{"executable": ...}``
/ ``CHROMIUM_PATH``. The browser starts once in ``setup`` (so a pooled worker has it running);
each session then uses one page:

- ``start``: ``{"url": ...}`` (default: the app's own site) opens the page;
- ``click``: ``{"selector": "#greet"}``; ``type``: ``{"selector": "#name", "text": "Ada"}``
  (answers the field's DOM value after typing);
- ``screenshot``: ``{}`` -> ``{"png": <base64 PNG>, "width", "height"}``;
- ``close``: closes the page and ends the session.

The site is a small form served by the app itself on loopback (127.0.0.1, a free port): nothing
leaves the machine. Restricted pods: Chromium's own sandbox needs user namespaces (or a setuid
helper) that ``runAsNonRoot`` with all capabilities dropped does not give, so it runs with
``--no-sandbox`` (``{"sandbox": true}`` turns it back on where the node allows it); the pod's
seccomp profile, non-root user and read-only root are the boundary, and it loads only loopback
pages. It needs a writable ``HOME`` (the worker image's is ``/tmp``) and a memory-backed
``/dev/shm`` (an ``emptyDir`` with ``medium: Memory``); where ``/dev/shm`` is missing or under
64 MiB (a container runtime's default), ``--disable-dev-shm-usage`` makes it use ``/tmp``.

A browser that dies mid-session (killed, crashed, out of memory) takes its pages with it: the app
watches the browser's process and, when it goes, says so on stderr and exits the worker, so the
Session fails (WorkerLost) with that line in its message instead of answering every later call
with Playwright's "Target closed".

Suspendable: ``suspend`` saves the open page's URL, the values of its input fields and
Playwright's storage state (cookies, local storage) in ``browser.json`` and ``storage.json``;
``resume`` opens a page in a context made from that storage state, goes back to the URL (a URL
of the app's own site is moved to this worker's site, whose port differs) and types the values
back. What is in the page's memory alone (scripts' variables, text shown but not in a field) is
not kept: a page that needs more saves it in its storage.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from playwright.sync_api import ViewportSize, sync_playwright

from kubesessions_worker import end_session, function

SITE = b"""<!doctype html>
<html><head><title>kube-sessions browser example</title>
<style>body{font:24px sans-serif;margin:40px} input{font:32px monospace;width:560px}
#greeting{font-size:40px;margin-top:30px}</style></head>
<body><h1>Sign the guest book</h1>
<input id="name" placeholder="your name" autocomplete="off">
<button id="greet" onclick="document.getElementById('greeting').textContent =
  'Hello, ' + document.getElementById('name').value + '!'">Greet</button>
<div id="greeting"></div></body></html>
"""
SHM_MIN = 64 * 1024 * 1024
VIEWPORT: ViewportSize = {"width": 800, "height": 400}


class _Site(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(SITE)))
        self.end_headers()
        self.wfile.write(SITE)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the worker logs calls
        pass


def chromium_args() -> list[str]:
    try:
        shm = os.statvfs("/dev/shm")  # noqa: S108 (read, not written: its size)
        small = shm.f_frsize * shm.f_blocks < SHM_MIN
    except OSError:
        small = True
    return ["--disable-dev-shm-usage"] if small else []


# The worker's exit code when its browser died (not 1: setup failures; not 128+n: signals).
BROWSER_LOST = 3


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, command name) of the processes in sight (``/proc/<pid>/stat``:
    readable for any process, unlike ``exe``, which Chromium's undumpable processes hide)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            head, rest = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)
            fields = rest.split()
            found[int(entry)] = (int(fields[1]), fields[0], head.split("(", 1)[1])
        except (OSError, IndexError, ValueError):
            continue
    return found


def browser_pid(worker: int | None = None) -> int | None:
    """The browser's main process: a Chromium descended from the worker (``worker``: its pid,
    this process by default; Chromium runs under Playwright's driver) whose parent is not one
    (its renderers and helpers are its children)."""
    procs = _processes()
    root = os.getpid() if worker is None else worker

    def chromium(pid: int) -> bool:
        return "chrom" in procs.get(pid, (0, "", ""))[2]

    def mine(pid: int) -> bool:
        while pid in procs and pid != root:
            pid = procs[pid][0]
        return pid == root

    return next((p for p in procs if chromium(p) and not chromium(procs[p][0]) and mine(p)), None)


def watch_browser(pid: int, closing: threading.Event) -> None:
    """Exit the worker when the browser's process ``pid`` is gone (unless it is being closed)."""
    while not closing.is_set():
        try:
            gone = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
        except OSError:
            gone = True
        if gone:
            break
        closing.wait(0.5)
    if closing.is_set():
        return
    print(
        f"the browser (chromium, pid {pid}) died mid-session (killed, crashed or out of memory): "
        "its pages are gone; ending the session (start a new one)",
        file=sys.stderr,
        flush=True,
    )
    os._exit(BROWSER_LOST)


class BrowserApp:
    setup_runs = 0

    def setup(self, config: dict[str, Any]) -> None:
        self.site = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
        threading.Thread(target=self.site.serve_forever, name="site", daemon=True).start()
        self.site_url = f"http://127.0.0.1:{self.site.server_address[1]}/"
        self.playwright = sync_playwright().start()
        executable = config.get("executable") or os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
        self.browser = self.playwright.chromium.launch(
            executable_path=executable,
            chromium_sandbox=bool(config.get("sandbox", False)),
            args=chromium_args(),
        )
        self.closing = threading.Event()
        pid = browser_pid()
        if pid is not None:
            threading.Thread(
                target=watch_browser, args=(pid, self.closing), name="browser-watch", daemon=True
            ).start()
        self.page: Any = None
        # A page opened ahead (its renderer started): the session's `start` only navigates.
        self.spare: Any = self.browser.new_page(viewport=VIEWPORT)
        BrowserApp.setup_runs += 1
        self.setup_at = time.time()

    def _page(self) -> Any:
        if self.page is None:
            raise RuntimeError("no page open: call start first")
        return self.page

    @function
    def start(self, input: dict[str, Any]) -> dict[str, Any]:
        if self.page is not None:
            self.page.close()
        self.page, self.spare = self.spare or self.browser.new_page(viewport=VIEWPORT), None
        self.page.goto(str(input.get("url") or self.site_url))
        return {
            "url": self.page.url,
            "title": self.page.title(),
            "setupRuns": BrowserApp.setup_runs,
            "setupAt": self.setup_at,
        }

    def run(self, input: dict[str, Any]) -> dict[str, Any]:
        return self.start(input)

    @function
    def click(self, input: dict[str, Any]) -> dict[str, Any]:
        page = self._page()
        page.click(str(input["selector"]))
        return {"clicked": input["selector"], "text": page.inner_text("body")}

    @function
    def type(self, input: dict[str, Any]) -> dict[str, Any]:
        page = self._page()
        selector = str(input["selector"])
        page.type(selector, str(input.get("text", "")))
        return {"selector": selector, "value": page.input_value(selector)}

    @function
    def screenshot(self, input: dict[str, Any]) -> dict[str, Any]:
        page = self._page()
        png = page.screenshot(type="png")
        size = page.viewport_size or {}
        return {
            "png": base64.b64encode(png).decode(),
            "width": size.get("width"),
            "height": size.get("height"),
        }

    def suspend(self, dir: Path) -> None:
        state: dict[str, Any] = {"site": self.site_url, "url": None, "inputs": {}}
        if self.page is not None:
            self.page.context.storage_state(path=str(dir / "storage.json"))
            state["url"] = self.page.url
            state["inputs"] = dict(
                self.page.eval_on_selector_all("input[id]", "els => els.map(e => [e.id, e.value])")
            )
        (dir / "browser.json").write_text(json.dumps(state))

    def resume(self, dir: Path) -> None:
        state = json.loads((dir / "browser.json").read_text())
        if state["url"] is None:  # suspended before any page was opened
            return
        # A page of its own context (closed with it), made from the saved storage state.
        self.page = self.browser.new_page(viewport=VIEWPORT, storage_state=str(dir / "storage.json"))
        url = str(state["url"])
        if url.startswith(state["site"]):
            url = self.site_url + url[len(state["site"]) :]
        self.page.goto(url)
        for field, value in state["inputs"].items():
            self.page.fill(f"#{field}", value)

    @function
    def close(self, input: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """As a function (``{}``): close the page and end the session. Called by the worker with
        no input when it shuts down: close the browser and the site too."""
        if self.page is not None:
            self.page.close()
            self.page = None
        if input is None:
            self.closing.set()
            self.browser.close()
            self.playwright.stop()
            self.site.shutdown()
            return None
        end_session()
        return {"closed": True}
