"""Routes of the trust domain: the roots and the bundle (PEM and SPIFFE
JWKS), intermediates for clusters, workload certificates for VMs, the root
rotation and the agents' acknowledgements."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from federation.api.auth import Access
from federation.api.http import (
    IDENTITY_KEY,
    Route,
    json_response,
    read_json,
    registry_of,
    require_object,
)
from federation.model import ValidationError
from federation.model.validation import check_dns_label
from federation.registry import Forbidden
from federation.registry.errors import Unprocessable
from federation.registry.trust import Issued
from federation.trust import ca as certs
from federation.trust.identity import Identity, Role
from federation.trust.rotation import TrustState, jwks

BUNDLE_REFRESH_HINT = 300  # seconds; a rotation waits for agents, not for this
MIN_LIFETIME, MAX_LIFETIME = 3600, 365 * 86400  # an intermediate's, in seconds


def issued_fields(issued: Issued) -> dict[str, Any]:
    cert = issued.certificate
    return {
        "identity": certs.spiffe_ids(cert)[0],
        "certificate": certs.cert_pem(cert).decode(),
        "chain": issued.chain_pem.decode(),
        "caBundle": issued.bundle_pem.decode(),
        "notAfter": cert.not_valid_after_utc.timestamp(),
    }


def issued_response(request: web.Request, issued: Issued) -> web.Response:
    return json_response(issued_fields(issued))


def _csr_field(body: dict[str, Any]) -> str:
    csr = body.get("csr")
    if not isinstance(csr, str):
        raise ValidationError("csr", "expected a PEM certificate request")
    return csr


def _caller(request: web.Request) -> Identity:
    identity = request.get(IDENTITY_KEY)
    assert isinstance(identity, Identity)  # the route's access rule saw to it
    return identity


async def _state(request: web.Request) -> TrustState:
    return await registry_of(request).trust.refresh()


async def _ca(request: web.Request) -> web.Response:
    state = await _state(request)
    issuing = state.issuing
    return json_response(
        {
            "certificate": certs.cert_pem(issuing.cert).decode(),
            "sha256": issuing.fingerprint,
            "bundle": state.bundle_pem.decode(),
            "version": state.version,
            "succession": [
                {"root": certs.cert_pem(old).decode(), "cross": certs.cert_pem(cross).decode()}
                for old, cross in state.succession
            ],
        }
    )


async def _trust_bundle(request: web.Request) -> web.Response:
    state = await _state(request)
    return web.Response(
        body=state.bundle_pem,
        content_type="application/x-pem-file",
        headers={"X-Federation-Bundle-Version": str(state.version)},
    )


async def _spiffe_bundle(request: web.Request) -> web.Response:
    return json_response(jwks(await _state(request), BUNDLE_REFRESH_HINT))


async def _intermediate(request: web.Request) -> web.Response:
    cluster = Identity(Role.CLUSTER, check_dns_label("name", request.match_info["name"]))
    body = require_object(await read_json(request), "{csr, lifetimeSeconds}")
    lifetime = body.get("lifetimeSeconds")
    if lifetime is not None and (
        isinstance(lifetime, bool)
        or not isinstance(lifetime, int | float)
        or not MIN_LIFETIME <= lifetime <= MAX_LIFETIME
    ):
        raise ValidationError(
            "lifetimeSeconds",
            "an intermediate's lifetime must be between 1 hour and 365 days (seconds)",
        )
    issued = await registry_of(request).issue_intermediate(cluster, _csr_field(body), lifetime)
    return issued_response(request, issued)


async def _workload_cert(request: web.Request) -> web.Response:
    caller = _caller(request)
    body = require_object(await read_json(request), "{csr, namespace, serviceAccount}")
    namespace = check_dns_label("namespace", body.get("namespace"))
    account = check_dns_label("serviceAccount", body.get("serviceAccount"))
    issued = await registry_of(request).issue_workload(caller, _csr_field(body), namespace, account)
    return issued_response(request, issued)


async def status_of(request: web.Request) -> dict[str, Any]:
    trust = registry_of(request).trust
    state = await trust.refresh()
    return {
        "trustDomain": trust.trust_domain,
        "phase": state.phase.value,
        "since": state.since,
        "version": state.version,
        "issuer": state.issuer,
        "roots": [
            {
                "generation": r.generation,
                "sha256": r.fingerprint,
                "subject": r.cert.subject.rfc4514_string(),
                "notAfter": r.cert.not_valid_after_utc.timestamp(),
                "inBundle": r.fingerprint in state.published,
                "issuing": r.fingerprint == state.issuer,
            }
            for r in state.roots
        ],
        "pending": await trust.pending(state) if state.waits_for_acks else [],
        "acks": await trust.acks(),
    }


async def _status(request: web.Request) -> web.Response:
    return json_response(await status_of(request))


async def _rotate(request: web.Request) -> web.Response:
    body = await read_json(request) if request.can_read_body else {}
    body = require_object(body, "{certificate, key} or {}")
    imported = None
    if body.get("certificate") is not None or body.get("key") is not None:
        cert, key = body.get("certificate"), body.get("key")
        if not isinstance(cert, str) or not isinstance(key, str):
            raise ValidationError("certificate", "give both the certificate and the key as PEM")
        registry = registry_of(request)
        try:
            imported = certs.load_root(cert.encode(), key.encode(), registry.clock.now())
        except certs.CertificateError as err:
            raise Unprocessable(str(err)) from None
    csr = body.get("csr")  # for the admin's own credential, under the new issuing root
    if csr is not None:
        if not isinstance(csr, str):
            raise ValidationError("csr", "expected a PEM certificate request")
        try:
            certs.load_csr(csr)  # before anything changes
        except certs.CertificateError as err:
            raise Unprocessable(str(err)) from None
    await registry_of(request).trust.rotate(imported)
    answer = await status_of(request)
    if csr is not None:
        issued = await registry_of(request).admins.renew(_caller(request), csr)
        answer["credential"] = issued_fields(issued)
    return json_response(answer, 202)


async def _ack(request: web.Request) -> web.Response:
    body = require_object(await read_json(request), "{version}")
    if _caller(request).role is Role.ADMIN:
        raise Forbidden("agents acknowledge bundles; an admin has nothing to install")
    version = body.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValidationError("version", "expected the bundle version installed")
    state = await registry_of(request).trust.ack(_caller(request), version)
    return json_response({"version": state.version, "phase": state.phase.value})


TRUST_ROUTES = [
    Route("GET", "/v1/ca", _ca, Access.OPEN, "The issuing root, its sha256, and the bundle"),
    Route("GET", "/v1/trust-bundle", _trust_bundle, Access.OPEN, "Every root in force (PEM)"),
    Route(
        "GET",
        "/v1/spiffe-bundle",
        _spiffe_bundle,
        Access.OPEN,
        "The trust bundle as a SPIFFE bundle (JWKS), for SPIRE federation",
    ),
    Route(
        "POST",
        "/v1/clusters/{name}/intermediate",
        _intermediate,
        Access.OWNER,
        "Sign a cluster's intermediate CA (the cluster itself or an admin)",
        "IntermediateRequest",
    ),
    Route(
        "POST",
        "/v1/workload-certs",
        _workload_cert,
        Access.VM,
        "Sign a VM workload's certificate for its registered namespace and account",
        "WorkloadCertRequest",
    ),
    Route(
        "GET", "/v1/ca/status", _status, Access.ANY, "Rotation phase and who has not acknowledged"
    ),
    Route(
        "POST",
        "/v1/ca/rotate",
        _rotate,
        Access.ADMIN,
        "Start a root rotation (to a generated root, or the one given)",
        "RotateRequest",
        status=202,
    ),
    Route(
        "POST",
        "/v1/trust/acks",
        _ack,
        Access.MEMBER,
        "Acknowledge the trust bundle version installed",
        "Ack",
    ),
]
