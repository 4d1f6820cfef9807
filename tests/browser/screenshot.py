"""Take the README's screenshot: the installed UI on comfyserve after a LoadImage → Invert →
SaveImage run.    python -m tests.browser.screenshot docs/ui-on-comfyserve.png
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

from tests.browser.ui import UiPage, launch_browser
from tests.serverproc import ServerProcess


def main(destination: str) -> None:
    base = Path(tempfile.mkdtemp(prefix="comfyserve-shot-"))
    (base / "input").mkdir(parents=True)
    picture = Image.radial_gradient("L").resize((192, 128)).convert("RGB")
    picture = Image.merge("RGB", (picture.getchannel(0), Image.new("L", (192, 128), 150), Image.new("L", (192, 128), 60)))
    picture.save(base / "input" / "gradient.png")
    (base / "user" / "default").mkdir(parents=True)
    (base / "user" / "default" / "comfy.settings.json").write_text('{"Comfy.TutorialCompleted": true, "Comfy.Minimap.Visible": false}')
    server = ServerProcess(base).start()
    try:
        with sync_playwright() as playwright:
            browser = launch_browser(playwright)
            context = browser.new_context(viewport={"width": 1100, "height": 560})
            ui = UiPage(context, server.url).open()
            ui.load_graph(ui.build_graph([
                {"id": 1, "type": "LoadImage", "pos": [60, 60], "widgets": {"image": "gradient.png"}},
                {"id": 2, "type": "ImageInvert", "pos": [430, 60], "links": {"image": [1, 0]}},
                {"id": 3, "type": "SaveImage", "pos": [660, 60], "widgets": {"filename_prefix": "comfyserve"},
                 "links": {"images": [2, 0]}},
            ]))
            ui.js("() => { const c = window.app.canvas; c.ds.scale = 1; c.ds.offset = [40, 60]; c.setDirty(true, true); }")
            ui.run()
            ui.wait_for_output_image(3)
            ui.wait_notifications_gone()  # the "Job queued" banner goes
            shot = Path(tempfile.mkdtemp()) / "shot.png"
            ui.screenshot(shot)
            browser.close()
    finally:
        server.stop()
    Image.open(shot).convert("RGB").quantize(colors=128).save(destination, optimize=True)
    print(destination, Path(destination).stat().st_size, "bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/ui-on-comfyserve.png")
