"""kubectl as users type it, validation on: apply, explain, server dry-run,
diff, wait and get --watch.  These behaviours are kubectl's, so the tests
drive kubectl itself; they pass unchanged against a real cluster
(FEDERATION_TEST_KUBECONFIG)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

from tests.contract.kube.conftest import Kube
from tests.contract.kube.test_openapi import widgets  # noqa: F401  (a fixture)
from tests.integration.test_sim_kubeapi import find_kubectl
from tests.support import eventually

DEADLINE = 30.0


@dataclass
class Done:
    code: int
    out: str
    err: str


async def kubectl(kube: Kube, *args: str, stdin: str | None = None) -> Done:
    process = await asyncio.create_subprocess_exec(
        find_kubectl(), "--kubeconfig", str(kube.kubeconfig), "-n", kube.namespace, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin.encode() if stdin else None), 60)
    assert process.returncode is not None
    return Done(process.returncode, out.decode(), err.decode())


async def ok(kube: Kube, *args: str, stdin: str | None = None) -> str:
    done = await kubectl(kube, *args, stdin=stdin)
    assert done.code == 0, done.err
    return done.out


def manifest(name: str, **spec: Any) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}], **spec},
    })  # fmt: skip


async def test_kubectl_apply_validates_on_the_server(kube: Kube) -> None:
    refused = await kubectl(kube, "apply", "-f", "-", stdin=manifest("web", colour="blue"))
    assert refused.code != 0
    assert 'strict decoding error: unknown field "spec.colour"' in refused.err
    assert "created" in await ok(kube, "apply", "-f", "-", stdin=manifest("web"))
    warned = await kubectl(
        kube, "apply", "--validate=warn", "-f", "-", stdin=manifest("web", colour="red")
    )
    assert warned.code == 0 and 'unknown field "spec.colour"' in warned.err
    changed = manifest("web", selector={"app": "web"})
    diff = await kubectl(kube, "diff", "-f", "-", stdin=changed)
    assert diff.code == 1 and "+    app: web" in diff.out  # kubectl diff: 1 means different
    assert "configured" in await ok(kube, "apply", "-f", "-", stdin=changed)
    assert (await kubectl(kube, "diff", "-f", "-", stdin=changed)).code == 0


async def test_kubectl_apply_dry_run_server_stores_nothing(kube: Kube) -> None:
    out = await ok(kube, "apply", "--dry-run=server", "-f", "-", stdin=manifest("dry"))
    assert "service/dry created (server dry run)" in out
    missing = await kubectl(kube, "get", "service", "dry")
    assert missing.code != 0 and "NotFound" in missing.err


async def test_kubectl_explain_reads_the_servers_schemas(
    kube: Kube,
    widgets: tuple[str, str, str],  # noqa: F811
) -> None:
    ports = await ok(kube, "explain", "services.spec.ports")
    assert "port\t<integer> -required-" in ports.replace("  ", "\t").replace("\t\t", "\t")
    assert "addresses" in await ok(kube, "explain", "endpointslices.endpoints")
    group, plural, _ = widgets
    explained: list[Done] = []

    async def explains() -> bool:
        explained.append(
            await kubectl(kube, "explain", f"{plural}.spec", f"--api-version={group}/v1")
        )
        return explained[-1].code == 0

    # A real apiserver publishes a new CRD's schema shortly after it is established.
    await eventually(explains, timeout=DEADLINE, what=f"kubectl explain {plural}")
    assert "size" in explained[-1].out and "<integer>" in explained[-1].out


async def test_kubectl_wait_for_a_condition_a_field_and_a_deletion(
    kube: Kube,
    widgets: tuple[str, str, str],  # noqa: F811
) -> None:
    group, plural, _ = widgets
    crd = f"crd/{plural}.{group}"
    assert "condition met" in await ok(kube, "wait", "--for=condition=Established", crd)
    await ok(kube, "apply", "-f", "-", stdin=manifest("web"))
    met = await ok(kube, "wait", "--for=jsonpath={.spec.type}=ClusterIP", "service/web")
    assert "condition met" in met
    waiting = asyncio.create_task(
        kubectl(kube, "wait", "--for=delete", "service/web", "--timeout=30s")
    )
    await ok(kube, "delete", "service", "web", "--wait=false")
    deleted = await waiting
    assert deleted.code == 0, deleted.err


async def test_kubectl_get_watch_prints_a_row_per_change(kube: Kube) -> None:
    await ok(kube, "apply", "-f", "-", stdin=manifest("first"))
    process = await asyncio.create_subprocess_exec(
        find_kubectl(), "--kubeconfig", str(kube.kubeconfig), "-n", kube.namespace,
        "get", "services", "--watch", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        lines: list[str] = []

        async def until(name: str) -> None:
            while not any(line.startswith(f"{name} ") for line in lines):
                line = await process.stdout.readline()  # type: ignore[union-attr]
                assert line, "kubectl get --watch ended"
                lines.append(line.decode())

        await asyncio.wait_for(until("first"), DEADLINE)
        assert lines[0].split()[:4] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP"]
        await ok(kube, "apply", "-f", "-", stdin=manifest("second"))
        await asyncio.wait_for(until("second"), DEADLINE)
        row = next(line for line in lines if line.startswith("second "))
        assert "ClusterIP" in row and "80/TCP" in row
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await process.wait()
