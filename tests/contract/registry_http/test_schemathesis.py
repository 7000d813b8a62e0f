"""schemathesis over /openapi.json, as the admin: a few hundred generated
requests, not one 5xx, no status the document does not name, and no
request the document allows refused as malformed (400).  What no schema
can say is refused otherwise: 404 (no such member), 409 (an older
generation, a name taken), 413 (over a record's stored bound), 422 (a CSR
that does not parse, a body that contradicts its path or its publisher's
registration)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.contract.registry_http.conftest import Harness

EXAMPLES_PER_OPERATION = 40
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "413", "422"]
"""


async def test_no_generated_request_gets_a_5xx(sqlite_harness: Harness, tmp_path: Path) -> None:
    harness = sqlite_harness
    await harness.enrol_cluster("east")  # something to read, remove and write over
    admin = harness.data_dir / "admin"
    st = Path(sys.executable).with_name("schemathesis")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    process = await asyncio.create_subprocess_exec(
        str(st), "--config-file", str(config), "run", f"{harness.url}/openapi.json",
        "--checks", "not_a_server_error,positive_data_acceptance,status_code_conformance",
        "--max-examples", str(EXAMPLES_PER_OPERATION),
        "--exclude-path", "/v1/watch",
        "--phases", "examples,coverage,fuzzing",
        "--seed", "20261124",
        "--workers", "1",
        "--request-timeout", "10",
        "--request-cert", str(admin / "tls.crt"),
        "--request-cert-key", str(admin / "tls.key"),
        "--tls-verify", str(admin / "ca.crt"),
        "--report-dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=240)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-4000:]
    assert "Server error" not in text
