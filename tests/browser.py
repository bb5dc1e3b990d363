"""What the browser tests share: Debian's Chromium, how it is launched, the viewports, and screenshots.

The ``browser`` fixture (tests/conftest.py) launches it once per module. Playwright's own browser
downloads are never used; without /usr/bin/chromium the tests marked ``MARKS`` skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SAMPLE_PDF = Path(__file__).resolve().parent.parent / "samples" / "application_company_a.pdf"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

#: A browser test module's ``pytestmark``.
MARKS = [pytest.mark.browser,
         pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                            reason=f"{CHROMIUM} is missing: apt-get install chromium (or run .ci/run as root)")]


def shoot(page, name: str) -> None:
    """Save a full-page screenshot to tests/artifacts/<name>.png."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
