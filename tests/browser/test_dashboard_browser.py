"""The live dashboard in a real headless browser while ``cato demo`` runs.

A real ``cato demo`` (gateway, emulated engines, autoscaling, an admin key) in a subprocess;
headless Chromium from Debian's packages (``make browser`` installs ``chromium`` and
``chromium-driver``) driven by Selenium. The test signs in through the login form (a wrong key
first), checks the session cookie, waits for every chart, checks that each chart's canvas has
drawn something (its own pixels, and the screenshot's pixels inside its rectangle), reads the
charts' point counts twice a few seconds apart and requires them to grow, and saves a
screenshot (``CATO_DASHBOARD_SCREENSHOT=path`` also copies it there, e.g. docs/img/).

Marked ``browser`` and ``slow``: not in the default run; ``make test`` runs ``-m browser``.
Under ``CI=true`` a missing browser or Selenium fails (tests/ci_strict.py), never skips.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from cato.edge.procs import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]

KEY_ENV = "CATO_DASHBOARD_TEST_KEY"
KEY = "sk-dashboard-test-0123456789"
CHARTS = {"attainment", "goodput", "queued", "inflight", "replicas", "reliability",
          "latency-completion", "latency-generation", "latency-summarization",
          "latency-translation"}


def _browser_paths() -> tuple[str, str]:
    chrome = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser",
                                                          "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    if chrome is None or driver is None:
        pytest.skip("headless Chromium and its driver are not installed (make browser: "
                    "apt-get install chromium chromium-driver)")
    return chrome, driver


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), children first."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(k) for t in os.listdir(f"/proc/{p}/task")
                    for k in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def _signal(pids: list[int], sig: int) -> None:
    """Send ``sig`` to those of ``pids`` that are still CATO processes."""
    for pid in pids:
        try:
            if b"cato" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, sig)
        except (OSError, ProcessLookupError):
            pass


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``cato demo`` with autoscaling and an admin key; the gateway's url once ready."""
    tmp = tmp_path_factory.mktemp("demo")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp / "demo.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cato", "demo", "--rate", "12", "--duration", "45",
         "--replicas", "3", "--autoscale", "--port", str(port), "--admin-key-env", KEY_ENV],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, KEY_ENV: KEY},
        # SIGINT stops the demo cleanly (it stops its gateway); a shell that started pytest
        # in the background may have left SIGINT ignored, which the demo would inherit
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"cato demo exited ({proc.returncode}) before its gateway was "
                            f"ready:\n{(tmp / 'demo.log').read_text()[-3000:]}")
            try:
                if httpx.get(url + "/ready", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the demo's gateway was not ready in 120 s:\n"
                            f"{(tmp / 'demo.log').read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        below = _descendants(proc.pid)       # the gateway and its engines
        proc.send_signal(signal.SIGINT)      # the demo stops its gateway, which stops engines
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            _signal(below, signal.SIGTERM)   # the gateway drains and stops its engines
            proc.kill()
            proc.wait()
            time.sleep(3)
        _signal(below, signal.SIGKILL)       # whatever is still there
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver")
    chrome, driver_path = _browser_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1900", "--force-device-scale-factor=1",
                "--hide-scrollbars"):
        opts.add_argument(arg)
    from selenium.webdriver.chrome.service import Service
    drv = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def _wait(cond: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


_CANVAS_INK = """
return Array.from(document.querySelectorAll('.chart canvas')).map(c => {
  const r = c.getBoundingClientRect();
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let ink = 0; const colors = new Set();
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 0) {
      ink++;
      if (colors.size < 64) colors.add(d[i] << 16 | d[i + 1] << 8 | d[i + 2]);
    }
  }
  return {id: c.closest('.chart').id, ink, colors: colors.size,
          rect: [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]};
});
"""


def test_dashboard_in_a_browser(browser: Any, demo: str, tmp_path: Path) -> None:
    from PIL import Image, ImageStat
    from selenium.webdriver.common.by import By

    # not signed in: the login form, and no data
    browser.get(demo + "/dashboard")
    assert browser.find_elements(By.ID, "key"), browser.page_source[:500]
    # a wrong key is refused, with the reason on the page
    browser.find_element(By.ID, "key").send_keys("sk-wrong-key-000000")
    browser.find_element(By.ID, "signin").click()
    assert "Incorrect admin key" in browser.page_source
    assert browser.get_cookie("cato_dashboard") is None
    # the right key: a session cookie that is not the key, then the dashboard
    browser.find_element(By.ID, "key").send_keys(KEY)
    browser.find_element(By.ID, "signin").click()
    cookie = _wait(lambda: browser.get_cookie("cato_dashboard"), 10, "the session cookie")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert KEY not in cookie["value"]
    assert not browser.find_elements(By.ID, "key")

    # every chart is there with a few points
    points = _wait(lambda: (lambda p: p if p and CHARTS <= set(p) and min(p.values()) >= 3
                            else None)(browser.execute_script(
                                "return window.catoDashboard && window.catoDashboard.points()")),
                   30, f"the charts {sorted(CHARTS)} with 3 points each")

    # each canvas has drawn: its own pixels ...
    canvases = browser.execute_script(_CANVAS_INK)
    assert {c["id"].removeprefix("chart-") for c in canvases} >= CHARTS
    for c in canvases:
        assert c["ink"] > 2000 and c["colors"] >= 3, c
    # ... and the screenshot's pixels inside its rectangle vary (not one flat colour)
    browser.execute_script("window.scrollTo(0, 0)")
    shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("L")
    for c in canvases:
        x, y, w, h = (int(v) for v in c["rect"])
        if y + h > shot.height:       # below the window: checked through its pixels above
            continue
        stddev = ImageStat.Stat(shot.crop((x, y, x + w, y + h))).stddev[0]
        assert stddev > 5.0, (c["id"], stddev)

    # the charts grow while the demo runs
    time.sleep(3.5)
    later = browser.execute_script("return window.catoDashboard.points()")
    for chart in CHARTS:
        assert later[chart] > points[chart], (chart, points[chart], later[chart])
    # the latency charts carry their SLA line, the page its sections
    text = browser.find_element(By.TAG_NAME, "body").text
    for task in ("completion", "generation", "summarization", "translation"):
        assert f"{task}: " in text and "percentiles vs SLA" in text
    assert "Scale events" in text and "Ejections and retries" in text
    legends = browser.execute_script(
        "return Array.from(document.querySelectorAll('#card-latency-completion .u-legend "
        ".u-label')).map(e => e.textContent)")
    assert any(s.startswith("SLA ") for s in legends), legends

    out = tmp_path / "dashboard.png"
    out.write_bytes(browser.get_screenshot_as_png())
    assert Image.open(out).size[0] >= 1000
    dest = os.environ.get("CATO_DASHBOARD_SCREENSHOT")
    if dest:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, dest)
