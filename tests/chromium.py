"""Pages opened in a real headless Chromium (Debian's package; scripts/check-chromium installs it),
driven by Playwright over the DevTools protocol: no browser is downloaded."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# Every <img> of the page: its alt text, whether it loaded, and the size it decoded to.
IMAGES_JS = "Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth,"\
            " height: i.naturalHeight}))"


def executable() -> str:
    name = os.environ.get("STREAMSIGHT_CHROMIUM", "chromium")
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"no {name!r} on PATH: `make test` installs Debian's chromium (scripts/check-chromium)")
    return found


@contextmanager
def browser() -> Iterator[Any]:
    """A headless Chromium (playwright's Browser), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=executable(), headless=True, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def rendered_images(page: Any) -> list[dict[str, Any]]:
    """The page's images once it has loaded, each with ``rendered`` (loaded and decoded to pixels)."""
    page.wait_for_load_state("load")
    return [{**image, "rendered": image["complete"] and image["width"] > 0 and image["height"] > 0}
            for image in page.evaluate(IMAGES_JS)]
