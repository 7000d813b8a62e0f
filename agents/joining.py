"""Before a member holds a credential: which registry URLs to try, and how a
join token's pin admits the registry's roots (directly, or through the
cross-signatures of the roots retired since the token was minted)."""

from __future__ import annotations

import hashlib
import ssl
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from agents.errors import BadURL, Unauthorized, Unavailable, why


def registry_urls(text: str) -> list[str]:
    """``https://a:8443,https://b:8443``: the replicas to fail over between
    (one load-balanced name is one URL)."""
    urls = [part.strip().rstrip("/") for part in text.split(",") if part.strip()]
    if not urls:
        raise BadURL("no registry URL given")
    for url in urls:
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise BadURL(f"registry URL {url!r} has no scheme: use https://{url}")
        if scheme == "http":
            raise BadURL(f"the registry serves HTTPS only: use https://{rest}")
        if scheme != "https" or not rest.split("/")[0]:
            raise BadURL(f"registry URL {url!r} is not https://HOST:PORT")
    return urls


async def fetch_pinned_ca(urls: list[str], pin: str) -> bytes:
    """Read the registry's root without trusting the connection (from the
    first replica that answers), and accept it only if its sha256 is the one
    the join token pins."""
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    data: Any = None
    for url in urls:
        try:
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=insecure)) as http,
                http.get(url + "/v1/ca", timeout=aiohttp.ClientTimeout(total=10)) as answer,
            ):
                data = await answer.json(content_type=None)
                break
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as err:
            failure = Unavailable(f"cannot reach the registry at {url}: {why(err)}")
    else:
        raise failure
    ca_pem = str(data.get("bundle") or data.get("certificate", "")).encode()
    try:
        roots = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise Unavailable("the registry sent no usable CA certificate") from None
    seen = {_sha256(c) for c in roots}
    if pin not in seen and not descends_from_pin(pin, data.get("succession") or [], roots):
        raise Unauthorized(
            "the registry's roots do not match the join token's pin: refusing to join",
            Unauthorized.PIN_MISMATCH,
        )
    return ca_pem


def _sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def descends_from_pin(
    pin: str, succession: list[dict[str, str]], roots: list[x509.Certificate]
) -> bool:
    """Whether a root in force descends from the pinned (since retired) one:
    from the pinned root, each link's cross-signature is signed by the root
    before it and certifies the next root's name and key, ending at a root
    in the bundle.  Without the retired keys nobody can forge a link."""
    try:
        links = [
            (
                x509.load_pem_x509_certificate(link["root"].encode()),
                x509.load_pem_x509_certificate(link["cross"].encode()),
            )
            for link in succession
        ]
    except (KeyError, TypeError, ValueError):
        return False
    start = next((i for i, (root, _) in enumerate(links) if _sha256(root) == pin), None)
    if start is None:
        return False
    signer = links[start][0]
    for index in range(start, len(links)):
        cross = links[index][1]
        try:
            cross.verify_directly_issued_by(signer)
        except (ValueError, TypeError, InvalidSignature):
            return False
        following = [links[index + 1][0]] if index + 1 < len(links) else roots
        successor = next(
            (
                r
                for r in following
                if r.subject == cross.subject and r.public_key() == cross.public_key()
            ),
            None,
        )
        if successor is None:
            return False
        signer = successor
    return signer in roots


__all__ = ["descends_from_pin", "fetch_pinned_ca", "registry_urls"]
