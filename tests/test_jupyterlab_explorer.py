"""Chapter 14's retrieval explorer, used in JupyterLab the way a reader uses it.

Why this test exists: nbval and the smoke run execute ``book/14_explorer.ipynb`` in a bare kernel,
so they never render an output. A widget app can pass both and still show a reader nothing but its
text fallback (``VBox(children=...)``) when the ipywidgets front end is missing or does not match
the kernel's ipywidgets, or fail only once a control is moved. So this test

1. starts JupyterLab on 127.0.0.1 (a free port, a random token) on the repository itself, with
   throw-away config, data, runtime, settings and workspace folders (the installed lab extensions
   stay visible: they live under ``sys.prefix/share/jupyter``), autosave off and checkpoints in the
   throw-away folder, so that nothing in the repository or the user's settings is read or written;
2. opens the chapter in headless Chromium, driven over the DevTools pipe by ``.ci/check_pages.py``'s
   ``ChromiumPipe`` (no third-party browser driver), which also refuses every request that is not
   for the local server;
3. clears the committed outputs and runs every cell from JupyterLab's own menus (Edit > Clear
   Outputs of All Cells, Run > Run All Cells), clicked with real mouse events, in
   ``APSE_MODE=smoke`` so that it takes a minute or two on 2 cores;
4. checks what a reader sees: no traceback and no error output in any cell, the explorer drawn
   with real ipywidgets controls, and one interaction: another query picked in the query dropdown
   changes the shown ranking (the result image is redrawn by the kernel).

It is bounded by one overall deadline (:data:`DEADLINE_S`); a wait that runs past it fails naming
the step it was in. The browser and the server (and its kernel) are always stopped. Set
``APSE_JUPYTERLAB_SCREENSHOT=path.png`` to keep a screenshot of the explorer after the interaction.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "book/14_explorer.ipynb"
CHECK_PAGES = ROOT / ".ci" / "check_pages.py"
SCREENSHOT_ENV = "APSE_JUPYTERLAB_SCREENSHOT"
#: The whole test, start to stop. Chapter 14 runs in ~80 s in smoke mode on CI's 2 cores; the rest
#: (server, browser, JupyterLab's first load) takes well under a minute.
DEADLINE_S = 360
VIEWPORT = {"width": 1280, "height": 1600}


def _check_pages():
    spec = importlib.util.spec_from_file_location("check_pages", CHECK_PAGES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _skip_reason() -> str | None:
    if _check_pages().find_browser() is None:
        return "needs Debian's chromium (.ci/run installs it)"
    if any(importlib.util.find_spec(name) is None for name in ("jupyterlab", "ipywidgets")):
        return "needs jupyterlab and ipywidgets (requirements.txt)"
    from apse.data import locate_dataset
    try:
        locate_dataset()  # where the notebook will look: data/, $APSE_DATA, ../shared ...
    except FileNotFoundError as exc:
        return f"no FI subset ({exc})"
    return None


SKIP = _skip_reason()


class StepTimeout(AssertionError):
    """A wait that ran out of time; the message names the step."""


class Deadline:
    """One time budget for the whole test. Every wait takes at most what is left of it, so a hang
    anywhere (server, browser, kernel) fails in DEADLINE_S, saying which step it was in, instead of
    eating CI's 90 minutes."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.monotonic()
        self.step = "starting"
        self.steps: list[tuple[str, float]] = []

    def at(self, step: str) -> None:
        self.step = step
        self.steps.append((step, time.monotonic()))
        self.left()

    def summary(self) -> str:
        """How long each step took (printed, so that ``-rP`` shows where the time goes)."""
        ends = [t for _, t in self.steps[1:]] + [time.monotonic()]
        return ", ".join(f"{step.split(' (')[0]}: {end - t:.0f} s"
                         for (step, t), end in zip(self.steps, ends))

    def left(self, cap: float | None = None) -> float:
        left = self.start + self.seconds - time.monotonic()
        if left <= 0:
            raise StepTimeout(self.message(f"the overall deadline of {self.seconds:.0f} s passed"))
        return left if cap is None else min(cap, left)

    def message(self, what: str) -> str:
        return f"{what}, in step {self.step!r}, {time.monotonic() - self.start:.0f} s into the test"


# Run in the page: polls a probe (a JavaScript function body returning {done, info}) every 100 ms
# until it is done or the time is up, inside the browser, so that Python keeps reading the DevTools
# pipe (and so keeps answering the paused requests of the page) the whole time.
WAIT_JS = r"""
(async () => {
  const probe = () => { %(probe)s };
  const until = Date.now() + %(ms)d;
  let last = null;
  for (;;) {
    try { last = probe(); } catch (e) { last = {done: false, info: 'probe failed: ' + e}; }
    if ((last && last.done) || Date.now() >= until) return JSON.stringify(last || {done: false});
    await new Promise(r => setTimeout(r, 100));
  }
})()
"""

# JavaScript helpers every probe can use (evaluated once per page).
HELPERS_JS = r"""
window.__apse = {
  panel() { const app = window.jupyterapp; return app && app.shell.currentWidget; },
  kernel() {
    const p = this.panel();
    const k = p && p.sessionContext && p.sessionContext.session && p.sessionContext.session.kernel;
    return k ? {status: k.status, connection: k.connectionStatus} : null;
  },
  prompts() {
    return [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea .jp-InputPrompt')]
      .map(p => p.textContent.trim());
  },
  // What a reader sees as an error: a traceback in a stderr-styled output (JupyterLab renders both
  // error outputs and stderr streams that way; ordinary stderr lines without a traceback are fine).
  shownErrors() {
    return [...document.querySelectorAll(
        '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')]
      .map(e => e.textContent).filter(t => /Traceback|Error\b.*\(most recent call last\)/.test(t))
      .map(t => t.slice(0, 2000));
  },
  // The notebook model's own error outputs (output_type "error"), whatever they look like.
  modelErrors() {
    const p = this.panel();
    if (!p || !p.content || !p.content.model) return [];
    const out = [];
    for (const cell of p.content.model.cells) {
      const json = cell.toJSON();
      for (const o of json.outputs || []) {
        if (o.output_type === 'error') out.push(o.ename + ': ' + o.evalue);
      }
    }
    return out;
  },
  explorer() {
    return document.querySelector('.jp-OutputArea-output .jupyter-widgets.widget-vbox');
  },
  dropdown(label) {
    const root = this.explorer();
    if (!root) return null;
    for (const d of root.querySelectorAll('.widget-dropdown')) {
      const l = d.querySelector('.widget-label');
      if (l && l.textContent.trim() === label) return d.querySelector('select');
    }
    return null;
  },
  resultImage() {
    const root = this.explorer();
    const img = root && root.querySelector('.widget-output img');
    return img && img.complete && img.naturalWidth > 0 ? img : null;
  },
  fingerprint(s) {  // a short stand-in for a long data: URL, to compare before and after
    let h = 0;
    for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0;
    return s.length + ':' + h;
  },
  status() {
    const root = this.explorer();
    const html = root && root.querySelector('.widget-html .widget-html-content');
    return html ? html.innerHTML : null;
  },
};
true
"""

READY_PROBE = r"""
const k = __apse.kernel(), p = __apse.panel();
const cells = __apse.prompts().length;
const ready = !!(p && p.context && p.context.isReady && k && k.status === 'idle'
                 && k.connection === 'connected' && cells > 0);
return {done: ready, info: (k ? k.status + '/' + k.connection : 'no kernel yet') + ', ' + cells
        + ' code cells in the DOM'};
"""

CLEARED_PROBE = r"""
const prompts = __apse.prompts();
const outputs = document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-OutputArea-output').length;
const blank = prompts.filter(p => /^\[\s*\]:$/.test(p)).length;
return {done: blank === prompts.length && outputs === 0,
        info: blank + '/' + prompts.length + ' prompts blank, ' + outputs + ' outputs left'};
"""

STARTED_PROBE = r"""
const prompts = __apse.prompts();
return {done: prompts.some(p => /^\[(\*|\d+)\]:$/.test(p)), info: prompts.join(' ')};
"""

# Done when every code cell has its execution count and none is queued or running ([*]), or when
# an error is shown (JupyterLab then stops the run and leaves the later cells unnumbered).
FINISHED_PROBE = r"""
const prompts = __apse.prompts(), k = __apse.kernel();
const run = prompts.filter(p => /^\[\d+\]:$/.test(p)).length;
const busy = prompts.filter(p => p.includes('*')).length;
const errors = __apse.shownErrors().length + __apse.modelErrors().length;
const idle = !!k && k.status === 'idle';
return {done: idle && busy === 0 && (run === prompts.length || errors > 0),
        info: run + '/' + prompts.length + ' code cells run, ' + busy + ' queued or running, '
              + errors + ' errors, kernel ' + (k ? k.status : 'gone')};
"""

# The explorer drawn as real widgets, with its first ranking (image and tier counts) in place.
WIDGETS_PROBE = r"""
const root = __apse.explorer(), img = __apse.resultImage(), status = __apse.status() || '';
const ok = !!(root && __apse.dropdown('emotion') && __apse.dropdown('query') && img
              && /N-pair/.test(status) && /APSE/.test(status));
return {done: ok, info: root ? 'explorer found; image ' + !!img + ', status ' + status.slice(0, 80)
                             : 'no widget-vbox in any output'};
"""

REPORT_JS = r"""
(() => {
  const root = __apse.explorer();
  const fallback = [...document.querySelectorAll('.jp-Notebook .jp-RenderedText')]
    .map(e => e.textContent.trim()).filter(t => /^(VBox|HBox)\(/.test(t));
  const q = __apse.dropdown('query'), img = __apse.resultImage();
  const count = sel => root ? root.querySelectorAll(sel).length : 0;
  return JSON.stringify({
    shownErrors: __apse.shownErrors(), modelErrors: __apse.modelErrors(), fallback,
    widgets: count('.jupyter-widgets'), dropdowns: count('.widget-dropdown select'),
    sliders: count('.widget-slider'), uploads: count('.widget-upload'),
    outputs: count('.widget-output'), status: __apse.status(),
    query: q ? {index: q.selectedIndex, options: q.options.length,
                text: q.options[q.selectedIndex].textContent} : null,
    image: img ? __apse.fingerprint(img.src) : null,
  });
})()
"""

# Picks the last query of the list (another emotion than the first one) as a reader would: the
# <select> of ipywidgets' Dropdown gets the new selection and a bubbling "change" event, which is
# what its view listens to before it sends the new index to the kernel.
PICK_JS = r"""
(() => {
  const q = __apse.dropdown('query');
  q.focus();
  q.selectedIndex = q.options.length - 1;
  q.dispatchEvent(new Event('input', {bubbles: true}));
  q.dispatchEvent(new Event('change', {bubbles: true}));
  return JSON.stringify({index: q.selectedIndex, text: q.options[q.selectedIndex].textContent});
})()
"""

REDRAWN_PROBE = r"""
const img = __apse.resultImage(), status = __apse.status() || '';
const now = img ? __apse.fingerprint(img.src) : null;
return {done: !!now && now !== %(before)s && /APSE/.test(status),
        info: 'image ' + now + ', status ' + status.slice(0, 80)};
"""


class Lab:
    """One JupyterLab page in a headless Chromium (``check_pages.ChromiumPipe``)."""

    def __init__(self, browser, deadline: Deadline):
        self.browser, self.deadline = browser, deadline
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.call("Target.attachToTarget",
                                    {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")
        self.call("Fetch.enable", {"patterns": [{"urlPattern": "*"}]})
        self.call("Emulation.setDeviceMetricsOverride",
                  {**VIEWPORT, "deviceScaleFactor": 1, "mobile": False})

    def call(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        return self.browser.call(method, params, session=self.session,
                                 timeout=self.deadline.left(timeout))

    def evaluate(self, expression: str, timeout: float = 30):
        res = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                             "returnByValue": True}, timeout=timeout)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise AssertionError(self.deadline.message(
                f"script failed: {(d.get('exception') or {}).get('description') or d.get('text')}"))
        return res["result"].get("value")

    def open(self, url: str) -> None:
        nav = self.call("Page.navigate", {"url": url})
        assert not nav.get("errorText"), self.deadline.message(f"navigation failed: {nav}")
        seconds = self.deadline.left(90)
        if self.browser.wait_event("Page.loadEventFired", self.session, seconds) is None:
            raise StepTimeout(self.deadline.message(f"the page did not load in {seconds:.0f} s"))
        self.wait("window.jupyterapp (JupyterLab started)",
                  "return {done: !!(window.jupyterapp && window.jupyterapp.shell)};", 90)
        self.evaluate(HELPERS_JS)

    def wait(self, what: str, probe: str, cap: float):
        """Wait (in the page) until ``probe`` says done; fail naming ``what`` and the step."""
        # The page gives up 3 s before the deadline does, so that its answer (with what it saw
        # last) still arrives and the failure says what was awaited.
        seconds = max(0.5, self.deadline.left(cap) - 3)
        out = json.loads(self.evaluate(WAIT_JS % {"probe": probe, "ms": int(seconds * 1000)},
                                       timeout=seconds + 15))
        if not out.get("done"):
            raise StepTimeout(self.deadline.message(
                f"waited {seconds:.0f} s for {what}; last seen: {out.get('info')}"))
        return out.get("info")

    def click(self, what: str, find: str, cap: float = 20) -> None:
        """Click the element that the JavaScript expression ``find`` returns, with real (trusted)
        mouse events at its centre: Lumino's menus act on mousedown / mousemove / mouseup."""
        probe = (f"const el = ({find}); if (!el) return {{done: false}};"
                 "const r = el.getBoundingClientRect();"
                 "return {done: r.width > 0 && r.height > 0, "
                 "info: [r.left + r.width / 2, r.top + r.height / 2]};")
        x, y = self.wait(what, probe, cap)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent",
                      {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def menu(self, menu: str, item: str) -> None:
        """Open a menu of JupyterLab's menu bar and click one of its items, by their labels."""
        self.click(f"the {menu!r} menu", "[...document.querySelectorAll('.lm-MenuBar-item')].find("
                   f"e => e.textContent.trim() === {json.dumps(menu)})")
        self.click(f"the {item!r} item of the {menu!r} menu",
                   "[...document.querySelectorAll('.lm-Menu .lm-Menu-item')].find(e => "
                   f"(e.querySelector('.lm-Menu-itemLabel') || e).textContent.trim() === "
                   f"{json.dumps(item)})")

    def screenshot(self, path: Path) -> None:
        self.evaluate("__apse.explorer().closest('.jp-Cell').scrollIntoView({block: 'start'});")
        self.wait("the result image after scrolling", "return {done: !!__apse.resultImage()};", 20)
        shot = self.call("Page.captureScreenshot", {"format": "png"})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc): the kernel runs in a session of its own, so the
    server's process group does not hold it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill(pids: list[int], group: bool = False) -> None:
    for pid in pids:
        try:
            (os.killpg if group else os.kill)(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Server:
    """``jupyter lab`` on 127.0.0.1 in a session of its own, with throw-away Jupyter folders."""

    def __init__(self, tmp: Path, deadline: Deadline):
        self.deadline, self.port, self.token = deadline, _free_port(), secrets.token_hex(24)
        dirs = {name: tmp / name for name in ("config", "data", "runtime", "ipython", "workspaces",
                                              "checkpoints")}
        for d in dirs.values():
            d.mkdir(parents=True)
        settings = dirs["config"] / "lab" / "user-settings" / "@jupyterlab"
        # No autosave (the run would otherwise write outputs into the repository's notebook), every
        # cell in the DOM (windowing would leave off-screen cells out of the checks), no news fetch.
        overrides = {"docmanager-extension/plugin": {"autosave": False},
                     "notebook-extension/tracker": {"windowingMode": "none"},
                     "apputils-extension/notification": {"fetchNews": "false",
                                                         "checkForUpdates": False}}
        for plugin, values in overrides.items():
            path = settings / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = {**os.environ, "APSE_MODE": "smoke", "JUPYTER_CONFIG_DIR": str(dirs["config"]),
               "JUPYTER_DATA_DIR": str(dirs["data"]), "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
               "IPYTHONDIR": str(dirs["ipython"]), "PYTHONUNBUFFERED": "1"}
        # --allow-root: CI runs as root, and the server refuses to start as root without it.
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
               "--ip=127.0.0.1", f"--port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={ROOT}",
               f"--LabApp.workspaces_dir={dirs['workspaces']}",
               f"--LabApp.user_settings_dir={settings.parent}",
               "--LabApp.expose_app_in_browser=True",
               "--LabApp.news_url=", f"--FileCheckpoints.checkpoint_dir={dirs['checkpoints']}"]
        self.log_path = tmp / "jupyterlab.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}/"

    def wait_ready(self) -> None:
        status = f"{self.url}api/status?token={self.token}"
        while True:
            self.deadline.left()
            if self.proc.poll() is not None:
                raise AssertionError(self.deadline.message(
                    f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}"))
            try:
                with urllib.request.urlopen(status, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            # polling a server that is starting up; the condition is the answer above
            time.sleep(0.25)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Ask the server to shut down (it stops its kernels), then kill whatever is left: its
        process group, and the kernel's, which runs in a session of its own."""
        below = _descendants(self.proc.pid)
        if self.proc.poll() is None:
            try:
                req = urllib.request.Request(f"{self.url}api/shutdown", method="POST",
                                             headers={"Authorization": f"token {self.token}"})
                urllib.request.urlopen(req, timeout=5).close()
            except (urllib.error.URLError, OSError):
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        _kill([self.proc.pid], group=True)
        _kill(below, group=True)
        _kill(below)
        self.proc.wait()
        self._log.close()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.fi_subset
@pytest.mark.skipif(SKIP is not None, reason=str(SKIP))
def test_explorer_in_jupyterlab(tmp_path):
    deadline = Deadline(DEADLINE_S)
    check_pages = _check_pages()
    notebook = ROOT / NOTEBOOK
    before_file = _digest(notebook)
    server = browser = None
    try:
        deadline.at("starting JupyterLab")
        server = Server(tmp_path, deadline)
        server.wait_ready()

        deadline.at("opening the notebook in Chromium")
        browser = check_pages.ChromiumPipe(check_pages.find_browser(), server.url)
        lab = Lab(browser, deadline)
        lab.open(f"{server.url}lab/tree/{NOTEBOOK}?token={server.token}")

        deadline.at("waiting for the kernel")
        lab.wait("the notebook and an idle kernel", READY_PROBE, 90)

        deadline.at("clearing the committed outputs (Edit > Clear Outputs of All Cells)")
        lab.menu("Edit", "Clear Outputs of All Cells")
        lab.wait("every output cleared", CLEARED_PROBE, 20)

        deadline.at("running all cells (Run > Run All Cells)")
        lab.menu("Run", "Run All Cells")
        lab.wait("the first cell to start", STARTED_PROBE, 30)
        lab.wait("every cell to finish", FINISHED_PROBE, 300)

        deadline.at("checking the outputs")
        report = json.loads(lab.evaluate(REPORT_JS))
        errors = report["shownErrors"] + report["modelErrors"]
        assert not errors, "a cell failed in JupyterLab:\n" + "\n---\n".join(errors)
        assert not report["fallback"], f"widgets shown as text, not rendered: {report['fallback']}"
        lab.wait("the explorer's widgets and its first ranking", WIDGETS_PROBE, 30)
        report = json.loads(lab.evaluate(REPORT_JS))
        assert (report["dropdowns"], report["sliders"], report["uploads"]) == (2, 1, 1), report
        assert report["outputs"] == 1 and report["widgets"] >= 8, report
        assert report["query"]["options"] > 1, report

        deadline.at("picking another query in the explorer")
        picked = json.loads(lab.evaluate(PICK_JS))
        assert picked["index"] != report["query"]["index"], picked
        lab.wait("the ranking to be redrawn for the new query",
                 REDRAWN_PROBE % {"before": json.dumps(report["image"])}, 60)
        after = json.loads(lab.evaluate(REPORT_JS))
        assert after["query"]["text"] == picked["text"], (picked, after["query"])
        assert after["image"] != report["image"], "the shown results did not change"
        assert "d62728" not in (after["status"] or ""), f"the explorer shows an error: {after}"
        assert not after["shownErrors"] + after["modelErrors"], after

        if os.environ.get(SCREENSHOT_ENV):
            deadline.at("saving the screenshot")
            lab.screenshot(Path(os.environ[SCREENSHOT_ENV]))
    except (StepTimeout, TimeoutError, RuntimeError) as err:
        what = str(err) if isinstance(err, StepTimeout) else deadline.message(f"DevTools: {err}")
        log = server.log_tail() if server is not None else ""
        pytest.fail(f"{what}\n--- JupyterLab log (last lines) ---\n{log}")
    finally:
        deadline.steps.append(("stopping the browser and the server", time.monotonic()))
        if browser is not None:
            browser.close()
        if server is not None:
            server.stop()
    assert _digest(notebook) == before_file, f"{NOTEBOOK} was written during the test (autosave?)"
    print(f"JupyterLab test, {time.monotonic() - deadline.start:.0f} s: {deadline.summary()}")
