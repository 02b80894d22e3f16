"""A citizen's phone in a lab host: Debian's chromium driven by Playwright.

Playwright (the pip package; never ``playwright install``) drives ``/usr/bin/chromium``
through a two-line wrapper that runs it under ``ip netns exec`` in the phone's lab
host, so the browser sees only the lab's LAN. Fake camera and microphone, every
permission granted (``--use-fake-ui-for-media-stream``), a fresh profile per launch
(Playwright makes one), certificate warnings clicked through
(``ignore_https_errors``), as a citizen does once on their own phone. The lab web
tests and ``meshdesk bench web`` share it. Playwright is imported only when a
browser starts (it is a test dependency).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from meshdesk.errors import LabError

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Response

__all__ = [
    "CHROMIUM",
    "FLAGS",
    "MEDIA_STATS",
    "browser_problems",
    "goto",
    "new_phone",
    "phone_browser",
    "run_coroutine",
]

_T = TypeVar("_T")

CHROMIUM = Path("/usr/bin/chromium")
#: Fake media, no sandbox (root), and nothing that would call out of the lab.
FLAGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: In the page: what its peer connection received and sent (``window.meshdesk``).
MEDIA_STATS = """async () => {
  const state = window.meshdesk;
  const pc = state && state.pc;
  const out = {state: pc ? pc.connectionState : null, videoIn: [], framesSent: 0,
               audioIn: 0, times: state ? state.times : null};
  if (!pc) return out;
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") out.videoIn.push(r.framesDecoded || 0);
    if (r.type === "inbound-rtp" && r.kind === "audio") out.audioIn += r.packetsReceived || 0;
    if (r.type === "outbound-rtp" && r.kind === "video") out.framesSent += r.framesEncoded || 0;
  });
  return out;
}"""


def run_coroutine(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """``asyncio.run(make())``, in a worker thread when this thread runs a loop already:
    Playwright's sync API keeps one running while a browser is open."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(1) as worker:
        return worker.submit(lambda: asyncio.run(make())).result()


def browser_problems() -> list[str]:
    """Why no phone can run here (empty when chromium and playwright are present)."""
    problems = []
    if not CHROMIUM.exists():
        problems.append(f"{CHROMIUM} is missing (Debian package chromium; .ci/run installs it)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the playwright package is missing (make install)")
    return problems


def _wrapper(folder: Path, netns: str) -> Path:
    ip = shutil.which("ip") or "/usr/sbin/ip"
    path = folder / f"chromium-in-{netns}"
    path.write_text(f'#!/bin/sh\nexec {ip} netns exec {netns} {CHROMIUM} "$@"\n')
    path.chmod(0o755)
    return path


@contextmanager
def phone_browser(
    folder: Path, netns: str, *, allow_media: bool = True, microphone: Path | None = None
) -> Iterator[Browser]:
    """A chromium inside ``netns`` (a lab host's namespace), closed afterwards.

    ``allow_media=False`` leaves out ``--use-fake-ui-for-media-stream``: every request
    for the camera and microphone is then refused, as when a citizen taps "Block".
    ``microphone``: a WAV file the fake microphone plays in a loop (instead of
    chromium's beeps), for tests that check what the desk hears.
    """
    problems = browser_problems()
    if problems:
        raise LabError("; ".join(problems))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(_wrapper(folder, netns)),
            args=[f for f in FLAGS if allow_media or f != "--use-fake-ui-for-media-stream"]
            + ([f"--use-file-for-fake-audio-capture={microphone}"] if microphone else []),
            headless=True,
        )
        try:
            yield browser
        finally:
            browser.close()


def new_phone(browser: Browser, *, locale: str = "ja-JP", allow_media: bool = True) -> Page:
    """A fresh phone (its own cookies), 360 px wide, in ``locale``; with
    ``allow_media=False`` the camera and microphone are not granted to its pages."""
    context = browser.new_context(
        ignore_https_errors=True,
        viewport={"width": 360, "height": 740},
        locale=locale,
        permissions=["camera", "microphone"] if allow_media else [],
    )
    return context.new_page()


def goto(page: Page, url: str, *, tries: int = 10) -> Response | None:
    """``page.goto`` retrying the ``ERR_NETWORK_CHANGED`` a fresh namespace can give."""
    from playwright.sync_api import Error

    for attempt in range(tries):
        try:
            return page.goto(url, wait_until="load")
        except Error as exc:
            if "ERR_NETWORK_CHANGED" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(0.3)
    return None
