"""Other projects' CRDs, for the emulator and the kube contract tests:
Gateway API's HTTPRoute (``gateway.networking.k8s.io/v1``) and Istio's
ServiceEntry (``networking.istio.io/v1beta1``).

Neither project publishes its CRDs to a registry this machine reaches, so
they are rebuilt from the npm packages of kubernetes-models, which carry
each kind's structural schema as generated from the upstream CRD (pinned
by version and sha512 below).  What the packages lose is put back where
it can be told: the ``nullable`` they add to every optional field goes,
and an object with no declared fields keeps unknown fields (Istio's
status).  CEL rules (``x-kubernetes-validations``) are not in the packages,
so the emulator does not check them.

``python -m federation.sim.kube.thirdparty DIR`` downloads and converts
them into DIR (``make`` does it into ``.venv``); ``load`` reads them."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
DEFAULT_DIR = Path(sys.prefix) / "share" / "federation" / "crds"
_SCHEMA = re.compile(r"const schema = (\{.*?\n\});", re.S)
_TOP = ("apiVersion", "kind", "metadata")


@dataclass(frozen=True)
class Source:
    package: str
    version: str
    integrity: str  # npm's dist.integrity
    member: str  # the model's file inside the package
    group: str
    version_name: str
    kind: str
    plural: str
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    columns: tuple[tuple[str, str, str], ...] = ()

    @property
    def name(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def url(self) -> str:
        scope, bare = self.package.split("/")
        return f"https://registry.npmjs.org/{scope}/{bare}/-/{bare}-{self.version}.tgz"


_AGE = ("Age", "date", ".metadata.creationTimestamp")
SOURCES = (
    Source(
        "@kubernetes-models/gateway-api",
        "0.5.1",
        "sha512-VsB6ipjcLCvOPmAbqxiK9dEEwD/yYGs5lkBTRFG2EcVGFy4o+JMWrTHuAXvaLtycGG67/qWJhHW8MtUhKJLdBg==",
        "package/gateway.networking.k8s.io/v1/HTTPRoute.js",
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
        "httproutes",
        categories=("gateway-api",),
        columns=(("Hostnames", "string", ".spec.hostnames"), _AGE),
    ),
    Source(
        "@kubernetes-models/istio",
        "2.3.0",
        "sha512-tA3/4u54DAVJerwCKDC/kJmBMgDfjuc2OC+bigI8oqi+1aZGmJco/c6txfLYXSevdFcgeIWf6hQ/eyxj6GyZ2g==",
        "package/networking.istio.io/v1beta1/ServiceEntry.js",
        "networking.istio.io",
        "v1beta1",
        "ServiceEntry",
        "serviceentries",
        short_names=("se",),
        categories=("istio-io", "networking-istio-io"),
        columns=(
            ("Hosts", "string", ".spec.hosts"),
            ("Location", "string", ".spec.location"),
            ("Resolution", "string", ".spec.resolution"),
            _AGE,
        ),
    ),
)
BY_NAME = {source.name: source for source in SOURCES}


def _verified(source: Source, data: bytes) -> bytes:
    algorithm, _, expected = source.integrity.partition("-")
    got = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if got != expected:
        raise ValueError(f"{source.url}: {algorithm} is {got}, expected {expected}")
    return data


def structural(node: Any) -> Any:
    """A kubernetes-models JSON schema as the CRD's openAPIV3Schema."""
    if isinstance(node, list):
        return [structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    options = node.get("oneOf")
    if isinstance(options, list):  # [the schema, {"type": "null"}]: nullable in JSON Schema
        kept = [o for o in options if o != {"type": "null"}]
        if len(kept) == 1:
            return structural(kept[0])
    out = {k: structural(v) for k, v in node.items() if k != "nullable"}
    if out.get("properties") == {}:
        del out["properties"]
        if "additionalProperties" not in out and out.get("type") == "object":
            out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def crd(source: Source, schema: Obj) -> Obj:
    """The CustomResourceDefinition of ``source`` with the model's schema."""
    root = structural({k: v for k, v in schema.items() if k not in ("properties", "required")})
    root["properties"] = {
        k: structural(v) for k, v in schema.get("properties", {}).items() if k not in _TOP
    }
    required = [r for r in schema.get("required", []) if r not in _TOP]
    if required:
        root["required"] = required
    names: Obj = {
        "kind": source.kind,
        "listKind": f"{source.kind}List",
        "plural": source.plural,
        "singular": source.kind.lower(),
    }
    if source.short_names:
        names["shortNames"] = list(source.short_names)
    if source.categories:
        names["categories"] = list(source.categories)
    version: Obj = {
        "name": source.version_name,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": root},
        "subresources": {"status": {}},
    }
    if source.columns:
        version["additionalPrinterColumns"] = [
            {"name": n, "type": t, "jsonPath": p} for n, t, p in source.columns
        ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": source.name,
            "annotations": {"federation.io/rebuilt-from": f"{source.package}@{source.version}"},
        },
        "spec": {
            "group": source.group,
            "names": names,
            "scope": "Namespaced",
            "versions": [version],
        },
    }


def convert(source: Source, tarball: bytes) -> Obj:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        member = archive.extractfile(source.member)
        if member is None:
            raise ValueError(f"{source.url}: no {source.member}")
        text = member.read().decode()
    found = _SCHEMA.search(text)
    if found is None:
        raise ValueError(f"{source.url}: {source.member} holds no schema")
    return crd(source, json.loads(found.group(1)))


def fetch(dest: Path, *, timeout: float = 60.0) -> list[Path]:
    """Download, verify and convert every source into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for source in SOURCES:
        with urllib.request.urlopen(source.url, timeout=timeout) as response:
            data = _verified(source, response.read())
        path = dest / f"{source.name}.json"
        path.write_text(json.dumps(convert(source, data), indent=1, sort_keys=True) + "\n")
        written.append(path)
    return written


def load(name: str, directory: Path = DEFAULT_DIR) -> Obj:
    """The CRD ``name`` (e.g. ``httproutes.gateway.networking.k8s.io``),
    as ``fetch`` wrote it."""
    if name not in BY_NAME:
        raise KeyError(name)
    path = directory / f"{name}.json"
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: not fetched; run `python -m federation.sim.kube.thirdparty {directory}`"
        ) from None


def main(argv: list[str]) -> int:
    dest = Path(argv[1]) if len(argv) > 1 else DEFAULT_DIR
    try:
        for path in fetch(dest):
            print(path)
    except (OSError, ValueError) as err:
        print(f"cannot fetch the third-party CRDs: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
