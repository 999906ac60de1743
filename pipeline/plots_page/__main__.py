"""`python -m pipeline.plots_page check|screenshot`: open the `dvc plots show` page in headless Chromium, offline.

dvc plots show && python -m pipeline.plots_page check           # every image and chart rendered, no network?
python -m pipeline.plots_page screenshot docs/plots_page.png --only false_accepts false_rejects
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PAGE = Path("dvc_plots/index.html")  # where `dvc plots show` writes (plots.out_dir unset)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.plots_page", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="say what rendered; exit status 1 if anything did not, or used the network")
    check.add_argument("--page", type=Path, default=PAGE, help="default: %(default)s")
    shot = sub.add_parser("screenshot", help="a PNG of the page (or of some of its plots)")
    shot.add_argument("out", type=Path, help="PNG to write")
    shot.add_argument("--page", type=Path, default=PAGE, help="default: %(default)s")
    shot.add_argument("--only", nargs="+", metavar="TEXT", help="keep the plots whose id (their path) holds a TEXT")
    shot.add_argument("--width", type=int, default=1400, help="window width, px (default: %(default)s)")
    args = ap.parse_args(argv)

    from pipeline.plots_page.browser import BrowserMissing, inspect_page, screenshot

    if not args.page.is_file():
        print(f"{args.page} not found: run `dvc plots show` (make plots) first", file=sys.stderr)
        return 1
    try:
        if args.command == "screenshot":
            screenshot(args.page, args.out, args.only, args.width)
            print(f"wrote {args.out}")
            return 0
        report = inspect_page(args.page)
    except BrowserMissing as err:
        print(err, file=sys.stderr)
        return 1
    drawn = sum(c["drawn"] for c in report.charts)
    empty = [c["id"] for c in report.charts if c["no_data"] is not None]
    print(f"{args.page}: {len(report.images)} images, {drawn} of {len(report.charts)} charts drawn offline")
    if empty:
        print(f"charts without data yet: {', '.join(empty)}")
    problems = report.problems()
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
