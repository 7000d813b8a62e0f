"""The dashboard in a real browser: Debian's Chromium, headless, driven by
Selenium through ``fedctl dashboard``'s proxy, against three simulated
clusters with their agents.  Without a reload, a stopped agent's cluster
turns stale on the page within the heartbeat timeout, and the routing
panel follows a failover.  A screenshot is saved under the test's tmp path.

It never skips: ``make test`` installs chromium and chromium-driver where
they are missing."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from federation.cli.dashboard import proxy_app
from federation.sim.world import World
from tests.integration.test_cluster_agent import echo_world, kill_all, routed_to
from tests.support import eventually

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def browser(profile: Path) -> webdriver.Chrome:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("Debian's chromium and chromium-driver are missing: `make test` installs them")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1400,1400", f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@contextlib.asynccontextmanager
async def dashboard(world: World, tmp_path: Path) -> AsyncIterator[tuple[str, webdriver.Chrome]]:
    runner = web.AppRunner(proxy_app(world.admin()))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    driver = await asyncio.to_thread(browser, tmp_path / "chromium")
    try:
        yield f"http://{host}:{port}/", driver
    finally:
        await asyncio.to_thread(driver.quit)
        await runner.cleanup()


async def page(driver: webdriver.Chrome, script: str) -> Any:
    """Run ``script`` in the page (Selenium blocks: off the event loop)."""
    return await asyncio.to_thread(driver.execute_script, script)


def shows(driver: webdriver.Chrome, script: str, want: Callable[[Any], bool]) -> Any:
    async def check() -> bool:
        return bool(want(await page(driver, script)))

    return check


MEMBERS = """return [...document.querySelectorAll('#members tbody tr[data-member]')]
  .map(tr => [tr.dataset.member, tr.dataset.alive === 'true', Number(tr.dataset.stale)])"""
CHOSEN = """const tr = document.querySelector('#levels tbody tr[data-chosen="true"]');
  return tr ? tr.children[2].textContent : null"""


async def test_the_page_follows_a_stopped_agent_and_a_failover_live(tmp_path: Path) -> None:
    async with echo_world(tmp_path) as world, dashboard(world, tmp_path) as (url, driver):
        for name in world.members:
            await routed_to(world, name, name)
        await asyncio.to_thread(driver.get, url)
        await page(driver, "window.sameDocument = true")  # gone if the page reloads

        every = {f"cluster/{n}" for n in world.members}
        await eventually(
            shows(driver, MEMBERS, lambda rows: {r[0] for r in rows if r[1]} == every),
            timeout=15.0,
            what="every cluster alive on the page",
        )
        row = await asyncio.to_thread(
            driver.find_element, By.CSS_SELECTOR, '#services tr[data-service="demo/echo"]'
        )
        await asyncio.to_thread(row.click)
        consumer = await asyncio.to_thread(driver.find_element, By.ID, "consumer")
        await asyncio.to_thread(Select(consumer).select_by_value, "east1")
        await eventually(
            shows(driver, CHOSEN, lambda sources: sources == "cluster:east1"),
            timeout=10.0,
            what="east1 routed to itself on the page",
        )

        await world.stop_agent("west")  # its lease (2 s) runs out; its shards go stale
        await eventually(
            shows(driver, MEMBERS, lambda rows: any(
                r[0] == "cluster/west" and not r[1] and r[2] > 0 for r in rows)),
            timeout=2 + 8.0,
            what="west stale on the page",
        )  # fmt: skip

        await kill_all(world, "east1")
        await eventually(
            shows(driver, CHOSEN, lambda sources: sources == "cluster:east2"),
            timeout=15.0,
            what="east1 failed over to east2 on the page",
        )
        assert await page(driver, "return window.sameDocument === true"), "the page reloaded"
        assert await page(driver, "return window.dashboard.events") > 0  # the watch fed it
        await asyncio.to_thread(driver.save_screenshot, str(tmp_path / "dashboard.png"))
        assert (tmp_path / "dashboard.png").stat().st_size > 10_000
