"""Write `template.html`: `page.html` with vega, vega-lite and vega-embed inlined where it says `<!-- libraries -->`.

    python -m pipeline.plots_page.build          # after editing page.html: re-uses the libraries template.html holds
    python -m pipeline.plots_page.build --npm    # fetches LIBRARIES anew with `npm pack` (the npm registry)

The versions are those DVC's own page loads from a CDN (dvc_render's VegaRenderer.SCRIPTS; a test keeps them in
step), so DVC's chart specs draw the same here as there.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGE = HERE / "page.html"
TEMPLATE = HERE / "template.html"
LICENSES = HERE / "licenses"
MARK = "    <!-- libraries -->\n"
# (npm package, version, bundle inside the package): UMD builds that define window.vega, vegaLite, vegaEmbed.
LIBRARIES = (
    ("vega", "5.20.2", "build/vega.min.js"),
    ("vega-lite", "5.2.0", "build/vega-lite.min.js"),
    ("vega-embed", "6.18.2", "build/vega-embed.min.js"),
)
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")  # what dvc_render replaces in the template's text
BLOCK = re.compile(r'    <script data-library="(?P<lib>[\w.@-]+)">\n(?P<code>.*?)\n    </script>\n', re.DOTALL)


def script_block(library: str, code: str) -> str:
    """One inline <script> holding a library's bundle, without its source-map comment (nothing to fetch)."""
    code = re.sub(r"\n?//# sourceMappingURL=\S+\s*$", "", code.rstrip())
    if "</script" in code.lower():
        raise ValueError(f"{library}: the bundle holds '</script', which would end the inline script early")
    found = [p for p in PLACEHOLDERS if p in code]
    if found:
        raise ValueError(f"{library}: the bundle holds {found}, which DVC would replace")
    return f'    <script data-library="{library}">\n{code}\n    </script>\n'


def render(page: str, blocks: list[str]) -> str:
    if page.count(MARK) != 1:
        raise ValueError(f"{PAGE.name} must hold the line {MARK.strip()!r} exactly once")
    return page.replace(MARK, "".join(blocks))


def inlined(template: str) -> dict[str, str]:
    """library@version -> bundle code, as a built template holds them."""
    return {m["lib"]: m["code"] for m in BLOCK.finditer(template)}


def fetch(workdir: Path) -> dict[str, str]:
    """library@version -> bundle, from `npm pack` tarballs; each package's LICENSE is copied into LICENSES."""
    LICENSES.mkdir(exist_ok=True)
    bundles = {}
    for name, version, bundle in LIBRARIES:
        spec = f"{name}@{version}"
        out = subprocess.run(["npm", "pack", spec], cwd=workdir, capture_output=True, text=True, check=True)
        with tarfile.open(workdir / out.stdout.strip().splitlines()[-1]) as tar:
            bundles[spec] = tar.extractfile(f"package/{bundle}").read().decode("utf-8")
            (LICENSES / f"{name}.LICENSE").write_bytes(tar.extractfile("package/LICENSE").read())
    return bundles


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.plots_page.build", description=__doc__.splitlines()[0])
    ap.add_argument("--npm", action="store_true", help="fetch the libraries with npm pack instead of re-using them")
    args = ap.parse_args(argv)
    wanted = [f"{name}@{version}" for name, version, _ in LIBRARIES]
    if args.npm:
        with tempfile.TemporaryDirectory() as tmp:
            bundles = fetch(Path(tmp))
    else:
        bundles = inlined(TEMPLATE.read_text(encoding="utf-8")) if TEMPLATE.is_file() else {}
        missing = [w for w in wanted if w not in bundles]
        if missing:
            ap.error(f"{TEMPLATE} lacks {', '.join(missing)}: run with --npm to fetch them")
    page = render(PAGE.read_text(encoding="utf-8"), [script_block(w, bundles[w]) for w in wanted])
    TEMPLATE.write_text(page, encoding="utf-8")
    print(f"wrote {TEMPLATE} ({len(page.encode()) // 1024} KiB: {', '.join(wanted)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
