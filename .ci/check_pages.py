#!/usr/bin/env python3
"""Open every page of the built book in headless Chromium, with no network, and check it as a reader.

    python3 .ci/check_pages.py [_build/html] [--jobs 2] [--screenshots DIR] [--file-urls] [PAGE ...]

For each HTML page (``_static/`` and ``_sources/`` excepted) it fails when

* a formula is not typeset: the page has math (Sphinx's ``.math`` elements) but no MathJax output
  (``mjx-container``) for one of them, MathJax reports a TeX error (``mjx-merror``, e.g. an undefined
  macro), or raw TeX delimiters (``$$``, ``\\(``, ``\\[``, ``$..\\..$``) are left in the text outside
  code;
* an image does not load (``naturalWidth == 0`` once the page has loaded);
* a JavaScript error is thrown (uncaught exception, rejected promise, or ``console.error``);
* a visible code block, printed output or table (a printed data frame, a table of the prose) is
  wider than its column at 1280 px, so that a reader would have to scroll it sideways (the
  solutions' dropdowns are opened; hidden-input cells stay closed).

Requests that would leave the machine are refused (the pages are served from 127.0.0.1 by a
throw-away local server, or opened as file:// with ``--file-urls``) and listed as notes, so a page
that needs the internet to show its formulas fails here.

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``): nothing
beyond the standard library and Debian's ``chromium`` is needed. One browser per job, 2 jobs at most.
Exit status 0 when every page passes, 1 otherwise, 2 when no browser or no page was found.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import re
import select
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-extensions", "--disable-default-apps", "--mute-audio",
    "--disable-dev-shm-usage", "--hide-scrollbars",
    # No network: every host name fails to resolve, and anything that still tries goes to a closed
    # port; loopback stays direct (Chromium never proxies it). The DevTools Fetch domain below also
    # refuses every request that is not for the book, and records it.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
]
PAGE_TIMEOUT = 30.0        # seconds for one page to load
SETTLE_BUDGET_MS = 8000    # then at most this long for MathJax and the images to finish

# Run in the page once it has loaded: waits for MathJax's typesetting and the images, then reports.
CHECK_SCRIPT = r"""
(async () => {
  const budget = %(budget)d;
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const within = (p, ms) => Promise.race([p, sleep(ms)]);
  const t0 = Date.now();
  const left = () => Math.max(0, budget - (Date.now() - t0));
  const out = {mathjax: null, math: 0, typeset: 0, untypeset: [], merrors: [], raw: [], images: 0,
               broken: [], notes: [], wide: []};
  const mathEls = Array.from(document.querySelectorAll('.math'));
  out.math = mathEls.length;
  // MathJax 3 defines window.MathJax as its config object first; the loaded library has .version.
  while (out.math && !(window.MathJax && MathJax.version && MathJax.startup) && left() > 0) await sleep(50);
  if (window.MathJax && MathJax.version) {
    out.mathjax = MathJax.version;
    if (MathJax.startup && MathJax.startup.promise) {
      try { await within(MathJax.startup.promise, left()); } catch (e) { out.notes.push('MathJax: ' + e); }
    }
  }
  // Images: lazy ones are made eager so the check does not depend on scrolling.
  const imgs = Array.from(document.images);
  imgs.forEach(img => { if (img.loading === 'lazy') img.loading = 'eager'; });
  await within(Promise.all(imgs.map(img => img.complete ? null :
      new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); }))), left());
  out.images = imgs.length;
  for (const img of imgs) {
    if (!img.complete || img.naturalWidth === 0) out.broken.push(img.getAttribute('src') || '(no src)');
  }
  // Formulas.
  for (const el of mathEls) {
    if (el.querySelector('mjx-container') || el.tagName.toLowerCase() === 'mjx-container') out.typeset++;
    else out.untypeset.push(el.textContent.trim().slice(0, 80));
  }
  for (const err of document.querySelectorAll('mjx-merror')) {
    out.merrors.push((err.getAttribute('data-mjx-error') || err.textContent).slice(0, 120));
  }
  // An undefined macro (say \R without the book's macros) is not an merror: MathJax's noundefined
  // extension prints its name in red. Find those in MathJax's own MathML of each formula.
  try {
    if (window.MathJax && MathJax.startup && MathJax.startup.document && MathJax.startup.toMML) {
      for (const item of MathJax.startup.document.math) {
        const mml = MathJax.startup.toMML(item.root);
        const undef = mml.match(/<mtext[^>]*mathcolor="red"[^>]*>([^<]*)<\/mtext>/);
        if (undef) out.merrors.push('undefined macro ' + undef[1] + ' in ' + String(item.math).slice(0, 60));
      }
    }
  } catch (e) { out.notes.push('could not inspect MathJax output: ' + e); }
  // Code a reader sees whole: no visible code block or printed output scrolls sideways. The
  // solutions' dropdowns are opened (a reader opens them); hidden-input cells stay closed.
  for (const d of document.querySelectorAll('details.sd-dropdown')) d.open = true;
  await sleep(50);
  for (const pre of document.querySelectorAll('pre')) {
    if (pre.closest('details:not([open])') || pre.offsetParent === null || !pre.clientWidth) continue;
    if (pre.scrollWidth > pre.clientWidth + 2) {
      const line = pre.textContent.split('\n').reduce((a, b) => (b.length > a.length ? b : a), '');
      out.wide.push(`${pre.scrollWidth - pre.clientWidth} px too wide: ${line.trim().slice(0, 90)}`);
    }
  }
  // Tables too (printed data frames, the prose's tables): the widest row must fit its column.
  out.wideTables = [];
  const main = document.querySelector('main') || document.body;
  for (const t of document.querySelectorAll('table')) {
    if (t.closest('details:not([open])') || t.offsetParent === null) continue;
    let box = t.parentElement;
    while (box && box !== document.body && !box.clientWidth) box = box.parentElement;
    const limit = Math.min(box ? box.clientWidth : main.clientWidth, main.clientWidth);
    if (t.scrollWidth > limit + 2) {
      const head = (t.querySelector('tr') || t).textContent.replace(/\s+/g, ' ').trim().slice(0, 80);
      out.wideTables.push(`${t.scrollWidth - limit} px too wide: ${head}`);
    }
  }
  const skip = new Set(['PRE', 'CODE', 'SCRIPT', 'STYLE', 'TEXTAREA', 'MJX-CONTAINER', 'NOSCRIPT', 'KBD', 'SAMP']);
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode(node) {
    for (let p = node.parentElement; p; p = p.parentElement) {
      if (skip.has(p.tagName.toUpperCase()) || p.classList.contains('highlight')) return NodeFilter.FILTER_REJECT;
    }
    return NodeFilter.FILTER_ACCEPT;
  }});
  const rawTex = /\$\$|\\\(|\\\)|\\\[|\\\]|\$[^$\n]*\\[A-Za-z]+[^$\n]*\$/;
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const m = n.textContent.match(rawTex);
    if (m) {
      const i = Math.max(0, m.index - 30);
      out.raw.push(n.textContent.slice(i, m.index + 50).replace(/\s+/g, ' ').trim());
    }
  }
  return JSON.stringify(out);
})()
"""


class ChromiumPipe:
    """A headless Chromium driven by the DevTools protocol over --remote-debugging-pipe (fds 3/4)."""

    def __init__(self, binary: str, allowed_prefix: str):
        self.allowed_prefix = allowed_prefix
        self.profile = tempfile.mkdtemp(prefix="apse-check-pages-")
        to_child_r, self._to_child_w = os.pipe()
        self._from_child_r, from_child_w = os.pipe()

        def wire_fds():  # in the child, before exec: the protocol pipe must be fds 3 and 4
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-pipe",
               "about:blank"]
        # A session (process group) of its own, so that close() can end the renderers and helpers
        # with the browser even when the browser itself hangs or has died.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=wire_fds, close_fds=False,
                                     start_new_session=True)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict] = []

    # -- protocol ---------------------------------------------------------------------------------
    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child_w, json.dumps(msg).encode() + b"\0")
        return self._next_id

    def _read_one(self, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._from_child_r], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._from_child_r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe (crashed?)")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        msg = json.loads(raw)
        if msg.get("method") == "Fetch.requestPaused":
            self._on_request(msg)
        return msg

    def _on_request(self, msg: dict) -> None:
        p, session = msg["params"], msg.get("sessionId")
        url = p["request"]["url"]
        if url.startswith(self.allowed_prefix) or url.startswith(("data:", "blob:", "about:")):
            self._send("Fetch.continueRequest", {"requestId": p["requestId"]}, session)
        else:
            self.events.append({"method": "apse.blocked", "sessionId": session, "params": {"url": url}})
            self._send("Fetch.failRequest", {"requestId": p["requestId"], "errorReason": "InternetDisconnected"},
                       session)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = PAGE_TIMEOUT) -> dict:
        want = self._send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read_one(max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise TimeoutError(f"{method}: no answer in {timeout:.0f} s")
            if msg.get("id") == want:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error'].get('message')}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str, session: str, timeout: float) -> dict | None:
        for i, ev in enumerate(self.events):
            if ev.get("method") == method and ev.get("sessionId") == session:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read_one(max(0.0, deadline - time.monotonic()))
            if msg is None:
                return None
            if msg.get("method") == method and msg.get("sessionId") == session:
                return msg
            if "method" in msg:
                self.events.append(msg)

    def close(self) -> None:
        try:
            self._send("Browser.close")
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - closing a browser that may be gone already
            pass
        try:  # whatever of its process group is left (a hung browser, an orphaned renderer)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        for fd in (self._to_child_w, self._from_child_r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    # -- one page ---------------------------------------------------------------------------------
    def check(self, url: str, screenshot: Path | None = None) -> dict:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.events = [e for e in self.events if e.get("sessionId") != session]
        try:
            for method in ("Page.enable", "Runtime.enable", "Log.enable"):
                self.call(method, session=session)
            self.call("Fetch.enable", {"patterns": [{"urlPattern": "*"}]}, session=session)
            self.call("Emulation.setDeviceMetricsOverride",
                      {"width": 1280, "height": 2000, "deviceScaleFactor": 1, "mobile": False}, session=session)
            nav = self.call("Page.navigate", {"url": url}, session=session)
            if nav.get("errorText"):
                return {"errors": [f"navigation failed: {nav['errorText']}"], "notes": []}
            loaded = self.wait_event("Page.loadEventFired", session, PAGE_TIMEOUT)
            if loaded is None:
                return {"errors": [f"page did not finish loading in {PAGE_TIMEOUT:.0f} s"], "notes": []}
            res = self.call("Runtime.evaluate", {"expression": CHECK_SCRIPT % {"budget": SETTLE_BUDGET_MS},
                                                 "awaitPromise": True, "returnByValue": True},
                            session=session, timeout=SETTLE_BUDGET_MS / 1000 + 20)
            if "exceptionDetails" in res:
                return {"errors": [f"check script failed: {res['exceptionDetails'].get('text')}"], "notes": []}
            report = json.loads(res["result"]["value"])
            time.sleep(0.2)  # let late console messages arrive
            self.call("Runtime.evaluate", {"expression": "1"}, session=session)
            if screenshot is not None:
                shot = self.call("Page.captureScreenshot", {"format": "png"}, session=session)
                import base64
                screenshot.write_bytes(base64.b64decode(shot["data"]))
            return self._verdict(report, session)
        finally:
            try:
                self.call("Target.closeTarget", {"targetId": target}, timeout=10)
            except (TimeoutError, RuntimeError):
                pass
            self.events = [e for e in self.events if e.get("sessionId") != session]

    def _verdict(self, r: dict, session: str) -> dict:
        errors, notes = [], list(r.get("notes", []))
        for ev in [e for e in self.events if e.get("sessionId") == session]:
            m, p = ev.get("method"), ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                text = (d.get("exception") or {}).get("description") or d.get("text", "")
                errors.append(f"JavaScript error: {text.splitlines()[0] if text else d} "
                              f"({d.get('url', '')}:{d.get('lineNumber', '?')})")
            elif m == "Runtime.consoleAPICalled" and p.get("type") == "error":
                args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                errors.append(f"console.error: {args[:200]}")
            elif m == "apse.blocked":
                notes.append(f"refused (no network): {p['url'][:120]}")
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                entry = p["entry"]
                if entry.get("source") == "network" and "ERR_INTERNET_DISCONNECTED" in entry.get("text", ""):
                    continue  # the refused request, noted above
                if entry.get("url", "").endswith("/favicon.ico"):
                    continue  # the browser asks for one on its own; the book sets none
                errors.append(f"browser error ({entry.get('source')}): {entry.get('text', '')[:200]} "
                              f"{entry.get('url', '')}")
        if r["math"]:
            if not r["mathjax"]:
                errors.append(f"{r['math']} formulas, but MathJax did not load (none typeset)")
            elif r["untypeset"]:
                errors.append(f"{len(r['untypeset'])} of {r['math']} formulas not typeset, e.g. "
                              f"{r['untypeset'][0]!r}")
        for e in r["merrors"]:
            errors.append(f"MathJax error in a formula: {e}")
        for raw in r["raw"][:5]:
            errors.append(f"raw TeX left in the text: {raw!r}")
        for src in r["broken"]:
            errors.append(f"image did not load: {src}")
        for wide in r.get("wide", []):
            errors.append(f"code scrolls sideways ({wide})")
        for wide in r.get("wideTables", []):
            errors.append(f"table scrolls sideways ({wide})")
        return {"errors": errors, "notes": notes, "math": r["math"], "typeset": r["typeset"],
                "images": r["images"], "mathjax": r["mathjax"]}


def find_browser() -> str | None:
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D401 - silence the access log
        pass


def serve(root: Path) -> tuple[socketserver.TCPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


_REFRESH = re.compile(r"""<meta[^>]+http-equiv=["']?refresh["']?[^>]*content=["']?\d+;\s*url=([^"'>]+)""", re.I)


def redirect_target(root: Path, page: str) -> str | None:
    """The page a meta-refresh page (jupyter-book's index.html) sends the reader to, else None."""
    match = _REFRESH.search((root / page).read_text(errors="replace")[:4000])
    return None if match is None else match.group(1).strip()


def list_pages(root: Path, only: list[str]) -> list[str]:
    pages = sorted(str(p.relative_to(root)) for p in root.rglob("*.html")
                   if p.relative_to(root).parts[0] not in ("_static", "_sources", "_images"))
    if only:
        pages = [p for p in pages if any(p == o or p.endswith("/" + o) or Path(p).stem == o for o in only)]
    return pages


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", nargs="?", default="_build/html", help="the built book (default _build/html)")
    ap.add_argument("pages", nargs="*", help="check only these pages (file name, stem or relative path)")
    ap.add_argument("--jobs", type=int, default=2, help="browsers in parallel (1 or 2)")
    ap.add_argument("--screenshots", type=Path, help="write a 1280x2000 PNG of each page here")
    ap.add_argument("--file-urls", action="store_true", help="open the pages as file:// (no local server)")
    args = ap.parse_args(argv)

    root = Path(args.html).resolve()
    pages = list_pages(root, args.pages)
    if not pages:
        print(f"check_pages: no HTML pages under {root}", file=sys.stderr)
        return 2
    binary = find_browser()
    if binary is None:
        print("check_pages: no Chromium found (apt-get install chromium, or set CHROMIUM)", file=sys.stderr)
        return 2
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)

    server = None
    if args.file_urls:
        base = root.as_uri() + "/"
    else:
        server, base = serve(root)
    jobs = max(1, min(2, args.jobs, len(pages)))
    browsers = [ChromiumPipe(binary, base) for _ in range(jobs)]  # started here, not in the threads
    shares = [pages[i::jobs] for i in range(jobs)]
    results: dict[str, dict] = {}
    start = time.monotonic()

    def run(browser: ChromiumPipe, share: list[str]) -> None:
        for page in share:
            target = redirect_target(root, page)
            if target is not None:  # a redirect: its target must exist, and is checked as a page
                dest = (root / page).parent / target.split("#")[0]
                results[page] = {"errors": [] if dest.is_file() else [f"redirects to a missing page: {target}"],
                                 "notes": [f"redirects to {target}"], "seconds": 0.0}
                continue
            shot = args.screenshots / (page.replace("/", "__").removesuffix(".html") + ".png") \
                if args.screenshots else None
            t = time.monotonic()
            try:
                results[page] = browser.check(base + page, shot)
            except (TimeoutError, RuntimeError) as err:
                results[page] = {"errors": [f"check aborted: {err}"], "notes": []}
            results[page]["seconds"] = time.monotonic() - t

    try:
        with ThreadPoolExecutor(jobs) as pool:
            for f in [pool.submit(run, b, s) for b, s in zip(browsers, shares)]:
                f.result()
    finally:
        for b in browsers:
            b.close()
        if server is not None:
            server.shutdown()

    failed = 0
    for page in pages:
        r = results.get(page, {"errors": ["not checked"], "notes": []})
        status = "FAIL" if r["errors"] else "ok"
        failed += bool(r["errors"])
        detail = (f"{r.get('typeset', 0)}/{r.get('math', 0)} formulas typeset, {r.get('images', 0)} images"
                  if "math" in r else "")
        print(f"{status:4} {page}  {detail}  ({r.get('seconds', 0):.1f} s)")
        for e in r["errors"]:
            print(f"       error: {e}")
        for n in sorted(set(r["notes"])):
            print(f"       note:  {n}")
    mj = {r.get("mathjax") for r in results.values() if r.get("mathjax")}
    print(f"check_pages: {len(pages) - failed} of {len(pages)} pages ok, {failed} failing "
          f"(MathJax {', '.join(sorted(mj)) or 'not used'}, {time.monotonic() - start:.0f} s, {binary})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
