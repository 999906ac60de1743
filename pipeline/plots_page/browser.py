"""Open a `dvc plots show` page in headless Chromium with the network cut off, and say what rendered on it.

Debian's `chromium` package (/usr/bin/chromium; `make browser` installs it) driven by Playwright: Playwright's own
browser download is not used. Every request that is not a local file is aborted and reported, so a page that
needs the network fails here as it would for a user without one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = Path(os.environ.get("PIPELINE_CHROMIUM", "/usr/bin/chromium"))
INSTALL_LOG = Path(__file__).resolve().parents[2] / ".venv/browser.log"  # `make browser`'s output when it failed
# Chromium without its background traffic (updates, sync, field trials), which a closed network refuses loudly;
# a proxy on a closed local port catches anything the page's own request filter would not see.
FLAGS = (
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--proxy-server=http://127.0.0.1:9",
)
TIMEOUT_MS = 60_000
LOCAL = ("file:", "data:", "blob:")  # what the page may load
CHART_CALL = re.compile(r"vegaEmbed\('#([^']+)'")  # how DVC's page draws each chart (dvc_render's VegaRenderer.DIV)

# Runs in the page once it has loaded: waits for every chart (the template keeps their promises), then reads each
# image's natural size and each chart's drawing (a canvas with at least two colours, or an svg with marks).
INSPECT = """
async () => {
  await Promise.allSettled(window.plotsDrawn || []);
  const images = [...document.images].map((img) => ({
    src: img.getAttribute("src"), width: img.naturalWidth, height: img.naturalHeight,
  }));
  const charts = (window.plotCharts || [])
    .map((div) => {
      const canvas = div.querySelector("canvas");
      const svg = div.querySelector("svg .mark-group, svg .marks");
      let colours = 0;
      if (canvas && canvas.width > 0 && canvas.height > 0) {
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        const seen = new Set();
        for (let i = 0; i < data.length && seen.size < 3; i += 4 * 7) seen.add(data.slice(i, i + 4).join());
        colours = seen.size;
      }
      return {
        id: div.id,
        drawn: colours >= 2 || Boolean(svg),
        width: canvas ? canvas.width : 0,
        height: canvas ? canvas.height : 0,
        no_data: div.querySelector("p.no-data")?.textContent ?? null,
      };
    });
  return {images, charts};
}
"""


class BrowserMissing(RuntimeError):
    """No Chromium to open the page with; the message says how to install it and, if an install failed, why."""


@dataclass
class PageReport:
    images: list[dict] = field(default_factory=list)  # src, natural width and height
    charts: list[dict] = field(default_factory=list)  # div id, drawn, canvas size, no-data note
    console_errors: list[str] = field(default_factory=list)  # console.error lines and uncaught page errors
    blocked: list[str] = field(default_factory=list)  # requests for anything but a local file
    uncalled: list[str] = field(default_factory=list)  # charts of the page's source that never started drawing

    def problems(self, allow_no_data: bool = True) -> list[str]:
        """Everything that did not render, or reached for the network; empty when the page is whole."""
        out = [f"image {i['src']} did not load (natural width 0)" for i in self.images if i["width"] <= 0]
        for c in self.charts:
            if c["no_data"] is not None:
                if not allow_no_data:
                    out.append(f"chart {c['id']} has no data: {c['no_data']}")
            elif not c["drawn"]:
                out.append(f"chart {c['id']} drew nothing")
        out += [f"chart {c} never started drawing (a script failed before it)" for c in self.uncalled]
        out += [f"console error: {e}" for e in self.console_errors]
        out += [f"network request (the page must draw offline): {u}" for u in self.blocked]
        return out

    def images_in(self, path: str) -> list[str]:
        """The `src` of the images copied from one plot file or folder (DVC names them <rev>_<path, / as _>)."""
        key = "_" + path.strip("/").replace("/", "_")
        return [i["src"] for i in self.images if i["src"].endswith(key) or key + "_" in i["src"]]


def chromium_path() -> Path:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    why = ""
    if INSTALL_LOG.is_file():
        tail = INSTALL_LOG.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        why = f"; `make browser` could not install it ({INSTALL_LOG}):\n  " + "\n  ".join(tail)
    raise BrowserMissing(
        f"{CHROMIUM} not found: the plots page is checked in Debian's chromium. `make browser` installs it "
        f"(apt-get install chromium, as root; make test and .ci/run do it first){why}"
    )


def _open(playwright, width: int):
    browser = playwright.chromium.launch(executable_path=str(chromium_path()), args=list(FLAGS), headless=True)
    context = browser.new_context(viewport={"width": width, "height": 900}, offline=True)
    return browser, context


def inspect_page(page_file: Path, width: int = 1400) -> PageReport:
    """Load `page_file` offline and report its images, charts, console errors and attempted network requests."""
    from playwright.sync_api import sync_playwright

    report = PageReport()
    with sync_playwright() as pw:
        browser, context = _open(pw, width)
        try:
            page = context.new_page()

            def guard(route) -> None:
                if route.request.url.startswith(LOCAL):
                    route.continue_()
                else:
                    report.blocked.append(route.request.url)
                    route.abort()

            page.route("**/*", guard)
            page.on("console", lambda m: report.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: report.console_errors.append(f"uncaught: {e}"))
            page.goto(Path(page_file).resolve().as_uri(), wait_until="load", timeout=TIMEOUT_MS)
            found = page.evaluate(INSPECT)
        finally:
            browser.close()
    report.images, report.charts = found["images"], found["charts"]
    called = {c["id"] for c in report.charts}
    report.uncalled = [i for i in CHART_CALL.findall(Path(page_file).read_text(encoding="utf-8")) if i not in called]
    return report


# Hides the plots whose id matches none of the given texts (all are kept without any), and returns the extent of
# what is left, so a screenshot shows only those and no blank page below them.
KEEP_ONLY = """
(texts) => {
  let right = 0, bottom = 0;
  for (const div of document.querySelectorAll("body > div")) {
    if (texts.length && !texts.some((t) => div.id.includes(t))) { div.style.display = "none"; continue; }
    const box = div.getBoundingClientRect();
    right = Math.max(right, box.right + window.scrollX);
    bottom = Math.max(bottom, box.bottom + window.scrollY);
  }
  return {right: Math.ceil(right) + 8, bottom: Math.ceil(bottom) + 8};
}
"""


def screenshot(
    page_file: Path, out: Path, only: list[str] | None = None, width: int = 1400, colours: int = 128
) -> None:
    """A PNG of the whole page (or only the plots whose id holds one of `only`), cut to `colours` colours to stay
    small enough to commit."""
    import io

    from PIL import Image
    from playwright.sync_api import sync_playwright

    from pipeline.io import atomic_path

    with sync_playwright() as pw:
        browser, context = _open(pw, width)
        try:
            page = context.new_page()
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(LOCAL) else r.abort())
            page.goto(Path(page_file).resolve().as_uri(), wait_until="load", timeout=TIMEOUT_MS)
            page.evaluate("async () => { await Promise.allSettled(window.plotsDrawn || []); }")
            extent = page.evaluate(KEEP_ONLY, only or [])
            clip = {"x": 0, "y": 0, "width": min(extent["right"], width), "height": extent["bottom"]}
            png = page.screenshot(full_page=True, clip=clip, type="png")
        finally:
            browser.close()
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colours)
    with atomic_path(out) as tmp:
        image.save(tmp, format="PNG", optimize=True)
