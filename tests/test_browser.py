"""The notebooks in a real browser: JupyterLab and headless Chromium (Debian's ``chromium``,
installed by tests/ci/browser.sh where missing), driven over the Chrome DevTools Protocol.

Every notebook of a throwaway checkout runs in reading mode: no cell shows an error, every
committed figure is displayed (loaded, non-zero size), and it finishes within a minute. Then the
quickstart runs at a tiny budget and its live preview must update; an interrupt must end the run
with one line and no traceback. ``git status`` of the checkout stays clean throughout.
Screenshots go to ``$GRADINV_SCREENSHOTS`` when set (else the test's temporary folder)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gradinv_lib.studies.gallery import SECTIONS

ROOT = Path(__file__).resolve().parents[1]
READING_LIMIT = 60.0      # seconds for Run All in reading mode (the "under a minute")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, every: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Page:
    """One browser tab over the DevTools websocket: evaluate JavaScript, take screenshots."""

    def __init__(self, url: str):
        import websocket
        self.ws = websocket.create_connection(url, timeout=120, suppress_origin=True)
        self.next = 0

    def call(self, method: str, **params):
        self.next += 1
        self.ws.send(json.dumps({"id": self.next, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"JavaScript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A git checkout of the notebooks and committed results, as a reader's fresh clone."""
    root = tmp_path_factory.mktemp("reader")
    for name in ("pyproject.toml", ".gitignore"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns("executed", "course", ".*"))
    shutil.copytree(ROOT / "figures", root / "figures", ignore=shutil.ignore_patterns("*.pt", "*.pdf"))
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "clone"]):
        subprocess.run(git + args, check=True)
    return root


def _status(checkout: Path) -> str:
    return subprocess.run(["git", "-C", str(checkout), "status", "--porcelain"], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture(scope="module")
def lab(checkout, tmp_path_factory):
    """JupyterLab serving the checkout (autosave off, the app exposed to the page's JavaScript)."""
    home = tmp_path_factory.mktemp("lab")
    settings = home / "settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    port, token = _free_port(), "gradinv-browser-test"
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    env.pop("GRADINV_ROOT", None)
    log = open(home / "lab.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
                               "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
                               f"--ServerApp.root_dir={checkout}", "--LabApp.expose_app_in_browser=True",
                               "--ServerApp.allow_root=True"], cwd=checkout, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).status == 200
        except OSError:
            return False
    try:
        _wait(up, 120, "JupyterLab to start")
        yield url, token
    finally:
        server.terminate()
        server.wait(30)
        log.close()


@pytest.fixture(scope="module")
def page(lab, tmp_path_factory):
    """Headless Chromium on JupyterLab's page, with ``window.jupyterapp`` ready."""
    install = subprocess.run(["bash", str(ROOT / "tests" / "ci" / "browser.sh")], capture_output=True, text=True)
    assert install.returncode == 0, f"chromium missing and not installable: {install.stderr.strip()}"
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    profile = tmp_path_factory.mktemp("chromium")
    browser = subprocess.Popen([binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}",
                                "--window-size=1400,1800", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port = _wait(lambda: (profile / "DevToolsActivePort").exists()
                     and (profile / "DevToolsActivePort").read_text().split("\n")[0], 60, "Chromium to start")
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list").read())
        tab = Page(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        url, token = lab
        tab.call("Page.navigate", url=f"{url}/lab?token={token}")
        _wait(lambda: tab.js("!!(window.jupyterapp && window.jupyterapp.shell)"), 120, "JupyterLab's page")
        tab.js("window.jupyterapp.restored")
        yield tab
    finally:
        browser.terminate()
        browser.wait(30)


def _screens(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("GRADINV_SCREENSHOTS") or tmp_path_factory.mktemp("screens"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


OPEN = """(async () => {
  const app = window.jupyterapp;
  if (window.__nb) { await window.__nb.sessionContext.shutdown(); window.__nb.context.model.dirty = false;
                     window.__nb.dispose(); }
  const nb = await app.commands.execute('docmanager:open', {path: %s, factory: 'Notebook'});
  await nb.context.ready; await nb.sessionContext.ready;
  app.shell.activateById(nb.id);
  window.__nb = nb;
  return nb.content.widgets.length;
})()"""

SET_PARAMETERS = """(() => {
  const cell = window.__nb.content.widgets.find(c => (c.model.getMetadata('tags') || []).includes('parameters'));
  let source = cell.model.sharedModel.getSource();
  for (const [name, value] of Object.entries(%s))
    source = source.replace(new RegExp('^' + name + ' *=.*$', 'm'), name + ' = ' + value);
  cell.model.sharedModel.setSource(source);
  return source;
})()"""

WATCH_PREVIEW = """(() => {
  window.__previewLog = [];
  const record = () => {
    for (const e of window.__nb.node.querySelectorAll('.widget-html-content')) {
      const t = e.textContent, log = window.__previewLog;
      if (t.includes('it/s') || t.includes('speed')) { if (log[log.length - 1] !== t) log.push(t); }
    }
  };
  new MutationObserver(record).observe(window.__nb.node, {subtree: true, childList: true, characterData: true});
  return true;
})()"""

SCROLL_TO = """(() => {
  const cell = window.__nb.content.widgets.find(c => c.node.textContent.includes(%s));
  cell.node.scrollIntoView(); return true; })()"""

CHOOSE = """(() => {
  const last = window.__nb.content.widgets[window.__nb.content.widgets.length - 1];
  last.node.scrollIntoView();
  for (const select of last.node.querySelectorAll('select')) {
    const option = [...select.options].find(o => o.textContent.replace(/\u00a0/g, ' ') === %s);
    if (option) { select.value = option.value; select.dispatchEvent(new Event('change', {bubbles: true}));
                  return true; }
  }
  return false; })()"""

EXPLORER_IMAGES = """(() => { const last = window.__nb.content.widgets[window.__nb.content.widgets.length - 1];
  return [...last.node.querySelectorAll('.widget-output img')].filter(i => i.complete && i.naturalWidth > 0).length;
})()"""

EXPLORER_TEXT = """[...window.__nb.content.widgets[window.__nb.content.widgets.length - 1].node
  .querySelectorAll('.widget-output')].map(e => e.textContent).join(' ')"""

STATE = """(() => {
  const nb = window.__nb, code = nb.content.widgets.filter(c => c.model.type === 'code');
  const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
  const outputs = code.map(c => c.model.outputs.toJSON());
  const images = [...nb.node.querySelectorAll('.jp-OutputArea-output img')];
  return {status: kernel ? kernel.status : 'none',
          done: code.every(c => c.model.executionCount !== null && !c.promptNode.textContent.includes('*')),
          errors: outputs.flat().filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue),
          tracebacks: outputs.flat().filter(o => o.output_type === 'stream' && /Traceback/.test(o.text)).length,
          pngs: outputs.flat().filter(o => o.data && o.data['image/png']).length,
          shown: images.filter(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0).length,
          streams: outputs.flat().filter(o => o.output_type === 'stream').map(o => o.text)};
})()"""


def _run_all(page: Page, timeout: float) -> dict:
    page.js("window.jupyterapp.commands.execute('notebook:run-all-cells'), true")
    _wait(lambda: page.js(STATE)["status"] != "idle" or page.js(STATE)["done"], 30, "Run All to start", 0.2)
    return _wait(lambda: (lambda s: s if s["done"] and s["status"] == "idle" else None)(page.js(STATE)),
                 timeout, "Run All to finish")


def _committed_figures(checkout: Path, notebook: str) -> int:
    folder = checkout / "figures" / "quick" / notebook
    return sum((folder / name).exists() for _, _, _, names in SECTIONS[notebook][1] for name in names)


@pytest.mark.slow
def test_notebooks_in_a_browser(checkout, page, tmp_path_factory):
    screens = _screens(tmp_path_factory)
    for notebook in SECTIONS:
        page.js(OPEN % json.dumps(f"notebooks/{notebook}.ipynb"))
        started = time.monotonic()
        state = _run_all(page, 3 * READING_LIMIT)
        seconds = time.monotonic() - started
        page.screenshot(screens / f"{notebook}.png")
        assert not state["errors"] and not state["tracebacks"], f"{notebook}: {state['errors']} {state['streams']}"
        expected = _committed_figures(checkout, notebook)
        assert state["pngs"] >= expected and state["shown"] >= expected, f"{notebook}: {state}"
        assert not any("computing" in text for text in state["streams"]), f"{notebook} recomputed: {state['streams']}"
        assert seconds < READING_LIMIT, f"{notebook}: reading mode took {seconds:.0f} s"
        print(f"{notebook}: reading mode {seconds:.1f} s, {state['shown']} figures shown")
        if notebook == "06_defences":   # the DP rows and the explorer, while 06 is open
            for text, name in (("Utility and privacy", "06_defences_tables"), ("What protects and what does not",
                                                                               "06_defences_conclusion")):
                page.js(SCROLL_TO % json.dumps(text))
                page.screenshot(screens / f"{name}.png")
            # the explorer (06's last cell): choose a DP point; its batch's originals and DP's grid appear
            _wait(lambda: page.js(CHOOSE % json.dumps("dp: noise=0.0001")), 60, "the explorer's row 'dp: noise=0.0001'")
            # a DP row's metrics carry epsilon (the clean row's do not): the view followed the choice
            _wait(lambda: page.js(EXPLORER_IMAGES) >= 2 and "epsilon" in page.js(EXPLORER_TEXT), 60,
                  "the explorer to show the DP point")
            page.screenshot(screens / "06_defences_explorer.png")
    assert _status(checkout) == ""

    # the quickstart at a tiny budget: the preview shows every seed and updates with it/s and an ETA
    page.js(OPEN % json.dumps("notebooks/00_quickstart.ipynb"))
    page.js(SET_PARAMETERS % json.dumps({"BATCH_SIZE": "2", "ITERATIONS": "60", "SEEDS": "2", "PDF": "False"}))
    page.js(WATCH_PREVIEW)
    page.js("window.jupyterapp.commands.execute('notebook:run-all-cells'), true")
    _wait(lambda: len(page.js("window.__previewLog")) >= 3, 600, "the preview's first updates")
    page.screenshot(screens / "00_quickstart_preview.png")
    state = _wait(lambda: (lambda s: s if s["done"] and s["status"] == "idle" else None)(page.js(STATE)), 600,
                  "the tiny quickstart to finish")
    page.screenshot(screens / "00_quickstart_tiny.png")
    assert not state["errors"] and not state["tracebacks"], state
    log = page.js("window.__previewLog")
    assert len(set(log)) >= 3 and any("ETA" in t for t in log) and "iteration 60/60" in log[-1], log
    assert page.js("window.__nb.node.querySelectorAll('.widget-image').length") >= 4   # originals, 2 seeds, mean
    assert _status(checkout) == ""

    # an interrupt ends a long run with one line and hands back the partial result
    page.js(SET_PARAMETERS % json.dumps({"ITERATIONS": "20000"}))
    page.js("window.jupyterapp.commands.execute('notebook:run-all-cells'), true")
    page.js(WATCH_PREVIEW)
    _wait(lambda: any("ETA" in t for t in page.js("window.__previewLog")), 600, "the long run's preview")
    page.js("window.__nb.sessionContext.session.kernel.interrupt()")
    state = _wait(lambda: (lambda s: s if s["done"] and s["status"] == "idle" else None)(page.js(STATE)), 120,
                  "the interrupted run to stop")
    lines = [line for text in state["streams"] for line in text.splitlines() if line.startswith("interrupted at")]
    assert len(lines) == 1 and "holds the partial result" in lines[0], state["streams"]
    assert not state["errors"] and not state["tracebacks"], state
    assert _status(checkout) == ""
