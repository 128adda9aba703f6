"""The README's screenshot of the Train page: the app served, the default run trained in it by
Debian's chromium (Playwright, the browser tests' tooling), the page captured when it has ended.

    python -m benchmarks.screenshot            # writes assets/train_page.png (about a minute)
    python -m benchmarks.screenshot --seeds 3  # the same run over 3 seeds, with the band section

Needs /usr/bin/chromium (`make browser`) and MNIST in the data folder (the embedded default).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

from benchmarks import common
from benchmarks.app import CHROMIUM, CHROMIUM_ARGS, ServedApp

OUT = common.ROOT / "assets" / "train_page.png"


def capture(out: Path, seeds: int = 1, width: int = 1500, height: int = 1500) -> Path:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="twophase-screenshot-") as tmp, \
            ServedApp(str(Path(tmp) / "runs"), Path(tmp) / "streamlit.log") as app, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(120_000)
            settings = {"seeds": seeds} if seeds > 1 else {}
            page.goto(f"{app.url}/?cfg={quote(json.dumps(settings))}" if settings else app.url)
            page.get_by_text("Run settings").wait_for()
            page.get_by_role("button", name=re.compile("Start")).click()
            page.locator(".tp-status-completed").wait_for(timeout=600_000)
            if seeds > 1:
                page.get_by_text(re.compile(f"median of {seeds} seeds")).first.wait_for(timeout=600_000)
            page.wait_for_timeout(3000)  # the last redraw
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=seeds > 1)
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="seeds of the default run (default 1)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"the PNG to write (default {OUT})")
    args = parser.parse_args(argv)
    print(f"wrote {capture(args.out, args.seeds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
