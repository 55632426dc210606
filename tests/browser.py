"""Open a page in headless Chromium over the DevTools protocol: images and console errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--remote-allow-origins=*"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


# Where each element named in `boxes` lies on the page (CSS px from the page's top left) and
# whether it is shown at all; with every image's place too.
_BOXES = """JSON.stringify((sel => {
  const box = e => { const r = e.getBoundingClientRect(), s = getComputedStyle(e);
    return {x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height,
            shown: s.display !== 'none' && s.visibility !== 'hidden' && +s.opacity > 0}; };
  const out = {};
  for (const q of sel) { const e = document.querySelector(q); out[q] = e ? box(e) : null; }
  out.images = Array.from(document.images).map(i => ({...box(i), w_nat: i.naturalWidth}));
  out.page = {w: document.documentElement.scrollWidth, h: document.documentElement.scrollHeight};
  return out; })(SELECTORS))"""


def inspect_page(path: Path, timeout: float = 60.0, boxes: list[str] | None = None) -> dict:
    """Load a local HTML file; return its images' sizes and the console errors. With `boxes`
    (CSS selectors), also where those elements and the images lie on a 1280 px wide page and
    a full-page PNG screenshot at one device pixel per CSS pixel (`screenshot`, bytes)."""
    exe = chromium()
    assert exe, "chromium not installed (.ci/run installs Debian's chromium)"
    prof = Path(tempfile.mkdtemp(prefix="fg-chromium-"))
    proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={prof}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = prof / "DevToolsActivePort"
        end = time.monotonic() + timeout
        while not port_file.exists() or not port_file.read_text().strip():
            assert time.monotonic() < end and proc.poll() is None, "chromium did not start"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list").read())
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        ws = websocket.create_connection(ws_url, timeout=timeout)
        msg_id = 0
        errors: list[str] = []

        def call(method, **params):
            nonlocal msg_id
            msg_id += 1
            ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
            while True:
                m = json.loads(ws.recv())
                _collect(m, errors)
                if m.get("id") == msg_id:
                    return m.get("result", {})

        call("Runtime.enable")
        call("Log.enable")
        call("Page.enable")
        call("Page.navigate", url=path.resolve().as_uri())
        while True:  # wait for the load event, collecting console messages meanwhile
            m = json.loads(ws.recv())
            _collect(m, errors)
            if m.get("method") == "Page.loadEventFired":
                break
        res = call("Runtime.evaluate", returnByValue=True, expression=(
            "JSON.stringify({title: document.title, images: Array.from(document.images).map("
            "i => ({complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}))})"))
        out = json.loads(res["result"]["value"])
        if boxes is not None:
            call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                 deviceScaleFactor=1, mobile=False)
            geo = call("Runtime.evaluate", returnByValue=True,
                       expression=_BOXES.replace("SELECTORS", json.dumps(boxes)))
            out["boxes"] = json.loads(geo["result"]["value"])
            page = out["boxes"]["page"]
            shot = call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                        clip={"x": 0, "y": 0, "width": page["w"], "height": page["h"], "scale": 1})
            import base64

            out["screenshot"] = base64.b64decode(shot["data"])
        ws.close()
        out["errors"] = errors
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(prof, ignore_errors=True)


def _collect(m: dict, errors: list[str]) -> None:
    meth, p = m.get("method"), m.get("params", {})
    if meth == "Runtime.exceptionThrown":
        errors.append(p["exceptionDetails"].get("text", "exception"))
    elif meth == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
        errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
    elif meth == "Log.entryAdded" and p["entry"].get("level") == "error":
        errors.append(p["entry"].get("text", "log error"))
