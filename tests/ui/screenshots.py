"""Screenshots of the viewer for docs/img/ui_*.png: `python tests/ui/screenshots.py`.

Writes a realistic history through historymw, serves it with the real `historymw ui`,
and photographs four pages in the system's headless Chromium.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _data import write_history
from _server import CHROMIUM, CHROMIUM_ARGS, Server
from playwright.sync_api import sync_playwright

OUT = Path(__file__).resolve().parents[2] / "docs" / "img"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/history.db"
        write_history(url, 600, span_s=20 * 3600, hostile=False)
        server = Server(url)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
                page.goto(server.base + "/")
                page.screenshot(path=str(OUT / "ui_calls.png"))
                page.goto(server.base + "/?q=Thanks.+Now+the+short+version&status=ok")
                page.click("#rows tr >> nth=0 >> td.when a")
                page.wait_for_url("**/calls/**")
                page.screenshot(path=str(OUT / "ui_call.png"), full_page=True)
                page.goto(server.base + "/session?id=bob-77a1")
                page.screenshot(path=str(OUT / "ui_session.png"))
                page.goto(server.base + "/overview")
                page.screenshot(path=str(OUT / "ui_overview.png"), full_page=True)
                browser.close()
        finally:
            server.stop()
    print(f"wrote {OUT}/ui_calls.png, ui_call.png, ui_session.png, ui_overview.png")


if __name__ == "__main__":
    main()
