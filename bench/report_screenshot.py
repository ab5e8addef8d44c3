"""Open a run's report.html in headless Chromium, check every plot renders, and screenshot the page.

Checks, in order:

1. every ``<img>`` of the page is an embedded ``data:image/png;base64`` image
   that decodes to a non-empty PNG (no external URL anywhere in the page);
2. Chromium loads the page and decodes every image (``naturalWidth > 0``),
   read back with ``--dump-dom`` from a copy of the page with a small check
   script appended;
3. a full-page screenshot ``report.png`` is written next to the report.

Exits 1 with the reason when a check fails, 2 when Chromium is not installed.
Run: ``python bench/report_screenshot.py runs/es-medical [--regenerate] [--out DIR]``
(``--regenerate`` first rebuilds the report from the run's report.json and eval
folders into ``--out``, default the run folder).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WIDTH = 1280
MAX_HEIGHT = 30000
CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth,
                                                     height: i.naturalHeight}));
  const out = document.createElement("pre");
  out.id = "speechtl-check";
  out.textContent = JSON.stringify({images: imgs, height: document.documentElement.scrollHeight});
  document.body.appendChild(out);
});
</script>"""
CHECK_RE = re.compile(r'<pre id="speechtl-check">(.*?)</pre>', re.S)


def find_browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    sys.exit("error: no headless Chromium found (looked for " + ", ".join(BROWSERS) + "); install it with\n"
             "  apt-get install chromium        (or: apt-get install chromium-headless-shell)")


def check_static(html: str) -> list[str]:
    """Alt texts of the page's images, after checking each decodes to a non-empty PNG."""
    external = re.findall(r'(?:src|href)\s*=\s*"((?:https?:)?//[^"]*)"', html)
    if external:
        raise SystemExit(f"error: the page loads external URLs: {external[:3]}")
    from PIL import Image

    alts = []
    for k, tag in enumerate(re.findall(r"<img\b[^>]*>", html)):
        src = re.search(r'src="([^"]*)"', tag)
        alt = re.search(r'alt="([^"]*)"', tag)
        name = alt.group(1) if alt else f"image {k}"
        if not src or not src.group(1).startswith("data:image/png;base64,"):
            raise SystemExit(f"error: {name}: not an embedded PNG")
        try:
            data = base64.b64decode(src.group(1).split(",", 1)[1], validate=True)
        except binascii.Error as exc:
            raise SystemExit(f"error: {name}: bad base64 ({exc})") from exc
        if not data.startswith(PNG_MAGIC):
            raise SystemExit(f"error: {name}: not a PNG")
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.width == 0 or image.height == 0:
                raise SystemExit(f"error: {name}: empty image")
        alts.append(name)
    return alts


def run_browser(browser: str, args: list[str], timeout_s: float = 120) -> str:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise SystemExit(f"error: {Path(browser).name} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def check_in_browser(browser: str, html: str) -> dict:
    """What Chromium saw: every image's decoded size and the page height."""
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report_check.html"
        page.write_text(html.replace("</body>", CHECK_SCRIPT + "</body>", 1), encoding="utf-8")
        dom = run_browser(browser, ["--virtual-time-budget=10000", "--dump-dom", page.as_uri()])
    found = CHECK_RE.search(dom)
    if not found:
        raise SystemExit("error: the check script did not run in Chromium (page did not load?)")
    import html as html_lib

    return json.loads(html_lib.unescape(found.group(1)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="run folder holding report.html (or report.json with --regenerate)")
    parser.add_argument("--regenerate", action="store_true", help="rebuild the report from report.json first")
    parser.add_argument("--out", type=Path, help="folder for the rebuilt report and the screenshot")
    args = parser.parse_args()
    out_dir = args.out or args.run_dir
    browser = find_browser()
    if args.regenerate:
        from speechtl.report.write import regenerate

        regenerate(args.run_dir, out_dir)
    report = out_dir / "report.html"
    if not report.is_file():
        raise SystemExit(f"error: {report} not found (pass --regenerate to build it from report.json)")
    html = report.read_text(encoding="utf-8")
    alts = check_static(html)
    print(f"{report}: {len(alts)} embedded PNG images decode: {', '.join(alts)}")
    seen = check_in_browser(browser, html)
    broken = [i["alt"] for i in seen["images"] if not i["complete"] or i["width"] == 0 or i["height"] == 0]
    if len(seen["images"]) != len(alts) or broken:
        raise SystemExit(f"error: Chromium did not render every image: {len(seen['images'])} of {len(alts)} "
                         f"seen, not decoded: {broken}")
    print(f"{Path(browser).name}: all {len(alts)} images rendered; page height {seen['height']} px")
    shot = out_dir / "report.png"
    height = min(int(seen["height"]) + 40, MAX_HEIGHT)
    run_browser(browser, [f"--screenshot={shot}", f"--window-size={WIDTH},{height}", report.resolve().as_uri()])
    if not shot.is_file() or not shot.read_bytes().startswith(PNG_MAGIC):
        raise SystemExit(f"error: no screenshot written to {shot}")
    print(f"screenshot: {shot} ({WIDTH}x{height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
