"""The HTML report: its content, and the page as headless Chromium (Debian's ``chromium``) renders it."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dacstyle import RemoteRunner
from dacstyle.agents import RandomAgent, StaticAgent
from dacstyle.benchmarks import SigmoidBenchmark
from dacstyle.cli import main
from dacstyle.errors import RunFolderError
from dacstyle.results import write_report

pytest.importorskip("matplotlib")

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")

# Everything Chromium would send to the network fails: no proxy answers, no name resolves.
OFFLINE = ["--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]
QUIET = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-sync",
         "--disable-component-update", "--no-first-run", "--disable-default-apps", "--disable-extensions",
         "--remote-debugging-pipe", "--window-size=1100,2400"]
# The child moves the pipe ends to fds 3 and 4, where --remote-debugging-pipe expects them.
EXEC_ON_FDS = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); os.execv(sys.argv[3], sys.argv[3:])"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    folders = []
    with RemoteRunner(SigmoidBenchmark().set_seed(42), runtime="process", runs_dir=root) as runner:
        env = runner.get_environment()
        folders.append(runner.run(RandomAgent(env), 40, log_steps=False).path)
        folders.append(runner.run(StaticAgent(env, np.array([2, 5])), 40, log_steps=5).path)
    return folders


def test_report_holds_plots_runs_and_manifests_and_no_external_reference(two_runs, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", *map(str, two_runs), "-o", str(out)]) == 0
    page = out.read_text()
    assert page.count("<img class='plot'") == 2 and page.count("src='data:image/png;base64,") == 2
    for folder in two_runs:
        assert folder.name in page
    assert "dacstyle.agents.baselines:RandomAgent" in page and "dacstyle.agents.baselines:StaticAgent" in page
    assert "server (in the image)" in page and "numpy" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"""(?:src|href)\s*=\s*(?!['"]?data:)""", page), "a resource outside the page"
    assert not re.search(r"url\(|@import|<script|<link", page)


def test_report_refuses_a_tampered_run(two_runs, tmp_path):
    copy = tmp_path / two_runs[0].name
    shutil.copytree(two_runs[0], copy)
    lines = (copy / "episodes.jsonl").read_text().splitlines()
    lines[0] = lines[0].replace('"episode": 0', '"episode": 0 ')
    (copy / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RunFolderError, match="episode 0 in episodes.jsonl does not match"):
        write_report([copy], tmp_path / "r.html")


def test_report_shows_the_grade_and_medal_of_a_competition_run(tmp_path, no_leftovers):
    from dacstyle.agents.scripted import ScriptedCompetitionAgent
    from dacstyle.competitions import CompetitionTask, make_competition

    competition = make_competition("spaceship-titanic-lite", tmp_path / "competition", seed=0)
    with RemoteRunner(CompetitionTask(competition), runtime="process", runs_dir=tmp_path / "runs") as runner:
        results = runner.run(ScriptedCompetitionAgent(runner.get_environment()), 1)
    grade = results.extra["grade"]
    assert grade["valid"] and grade["medal"]
    page = write_report([results.path], tmp_path / "r.html").read_text()
    assert f"<th>score</th><td>{grade['score']:.4g}</td>" in page
    assert f"<th>medal</th><td>{grade['medal']}</td>" in page
    assert "<th>competition</th><td>spaceship-titanic-lite</td>" in page
    assert f"<td>{grade['score']} ({grade['medal']})</td>" in page  # in the overview too


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (no port, no websocket)."""

    def __init__(self, extra: list[str]) -> None:
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()
        argv = [sys.executable, "-c", EXEC_ON_FDS, str(to_child), str(from_child), CHROMIUM, *QUIET, *extra]
        self.process = subprocess.Popen(argv, pass_fds=(to_child, from_child), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        reply = self._wait(lambda m: m.get("id") == self._next_id, timeout)
        assert "error" not in reply, reply
        return reply["result"]

    def wait_event(self, method: str, timeout: float = 60.0) -> dict:
        seen = [e for e in self.events if e["method"] == method]
        return seen[0] if seen else self._wait(lambda m: m.get("method") == method, timeout)

    def _wait(self, wanted, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if wanted(message):
                    return message
            left = deadline - time.monotonic()
            assert left > 0, "Chromium did not answer in time"
            ready, _, _ = select.select([self._read], [], [], left)
            if ready:
                chunk = os.read(self._read, 1 << 20)
                assert chunk, "Chromium exited"
                self._buffer += chunk

    def close(self) -> None:
        for fd in (self._write, self._read):
            os.close(fd)
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)


def render(page: Path, profile: Path) -> tuple[list[str], list[list], bytes]:
    """Load ``page`` from its file: the URLs it asked for beyond files and data:, its images' state, a screenshot."""
    browser = Chromium([f"--user-data-dir={profile}", *OFFLINE])
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        browser.send("Network.enable", session=session)
        browser.send("Page.enable", session=session)
        browser.send("Page.navigate", {"url": page.as_uri()}, session=session)
        browser.wait_event("Page.loadEventFired")
        images = browser.send("Runtime.evaluate", {"returnByValue": True, "expression":
                              "[...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])"},
                              session=session)["result"]["value"]
        shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                            session=session)["data"]
        mine = [e for e in browser.events if e.get("sessionId") == session]
        blocked = {e["params"]["requestId"] for e in mine  # stopped inside the browser by the page's policy
                   if e["method"] == "Network.loadingFailed" and e["params"].get("blockedReason") == "csp"}
        requested = [(e["params"]["request"]["url"], e["params"]["requestId"]) for e in mine
                     if e["method"] == "Network.requestWillBeSent"]
        assert requested and requested[0][0] == page.as_uri(), requested
        leaving = [url for url, rid in requested if not url.startswith(("file:", "data:")) and rid not in blocked]
        return leaving, images, base64.b64decode(shot)
    finally:
        browser.close()


def plot_pixels(png: bytes) -> int:
    """Pixels in matplotlib's first two line colours (C0 blue, C1 orange): they exist only in the plots."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    count = 0
    for colour in ((31, 119, 180), (255, 127, 14)):
        count += int((np.abs(rgb - colour).sum(axis=2) < 40).sum())
    return count


@needs_chromium
def test_chromium_renders_the_report_plots_with_no_request_leaving(two_runs, tmp_path, no_leftovers):
    out = write_report(two_runs, tmp_path / "report.html")
    leaving, images, shot = render(out, tmp_path / "profile")
    (tmp_path / "report.png").write_bytes(shot)
    assert leaving == []
    assert len(images) == 2 and all(done and width > 600 and height > 200 for done, width, height in images)
    assert plot_pixels(shot) > 2000


@needs_chromium
def test_chromium_check_sees_external_requests_and_missing_plots(two_runs, tmp_path, no_leftovers):
    """The browser check can fail: an external image is seen, and a page without plots has no plot pixels."""
    page = tmp_path / "external.html"
    page.write_text("<html><body><img src='http://example.com/plot.png'><p>no plots here</p></body></html>")
    leaving, images, shot = render(page, tmp_path / "profile")
    assert leaving == ["http://example.com/plot.png"]
    assert images == [[True, 0, 0]] and plot_pixels(shot) == 0


@needs_chromium
def test_the_reports_content_security_policy_blocks_what_a_manifest_could_smuggle_in(two_runs, tmp_path, no_leftovers):
    page = write_report(two_runs, tmp_path / "report.html")
    page.write_text(page.read_text().replace("</body>", "<img src='http://example.com/x.png'></body>"))
    leaving, _, _ = render(page, tmp_path / "profile")
    assert leaving == []
