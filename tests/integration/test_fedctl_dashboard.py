"""``fedctl dashboard`` as a process: it prints its URL, forwards the page
and its data with the admin credential, forwards nothing else, and refuses
a non-loopback address with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

from tests.integration.test_fedctl_registry import fedctl, one_line_error, served  # noqa: F401


def test_the_proxy_serves_the_page_and_its_data_only(served: dict[str, str]) -> None:  # noqa: F811
    child = subprocess.Popen(
        [sys.executable, "-m", "federation.cli", "dashboard", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **served},
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # blocks until it listens (or exits)
        assert line.startswith("Dashboard of https://"), (line, child.poll())
        url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200
            assert "text/html" in page.headers["Content-Type"]
            assert "v1/dashboard" in page.read().decode()
        with urllib.request.urlopen(url + "v1/dashboard?limit=5", timeout=10) as answer:
            data = json.loads(answer.read())
        assert data["services"]["limit"] == 5 and data["trust"]["phase"] == "Idle"
        for path, method, code in (("v1/clusters", "GET", 404), ("v1/status", "POST", 405)):
            request = urllib.request.Request(
                url + path, method=method, data=b"{}" if method == "POST" else None
            )
            try:
                urllib.request.urlopen(request, timeout=10)
            except urllib.error.HTTPError as err:
                assert err.code == code, (path, err.code)
            else:
                raise AssertionError(f"{method} {path} was forwarded")
    finally:
        child.terminate()
        child.wait(timeout=10)
    assert child.returncode == 0, child.stderr.read() if child.stderr else ""


def test_a_non_loopback_address_is_refused(served: dict[str, str]) -> None:  # noqa: F811
    one_line_error(fedctl("dashboard", "--listen", "0.0.0.0:0", env=served), "loopback only")
