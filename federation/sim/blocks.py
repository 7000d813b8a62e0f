"""Which 127.N.0.0/16 block a simulated cluster owns, claimed across
processes so two federations on one host (``make demo`` beside ``make
test``, or two test runs) never share addresses.

A block is claimed by binding a TCP socket to 127.N.255.254 on one fixed
port and holding it (bound, never listening) while the cluster lives; a
second claimer gets EADDRINUSE and moves to the next block.  The kernel
releases it when the process dies, so a crash leaves nothing to clean.
Nothing else binds 127.N.255.254: Service IPs end at 127.N.255.253."""

from __future__ import annotations

import errno
import logging
import socket

log = logging.getLogger("federation.sim")

FIRST, LAST = 1, 250
CLAIM_PORT = 47_999


class NoFreeBlock(RuntimeError):
    """Every block from 1 to 250 is held by another simulated cluster."""


class Block:
    def __init__(self, index: int, sock: socket.socket) -> None:
        self.index = index
        self._sock: socket.socket | None = sock

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def claim(preferred: int) -> Block:
    """The block ``preferred``, or the next free one after it (wrapping)."""
    span = LAST - FIRST + 1
    for step in range(span):
        index = FIRST + (preferred - FIRST + step) % span
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((f"127.{index}.255.254", CLAIM_PORT))
        except OSError as err:
            sock.close()
            if err.errno != errno.EADDRINUSE:
                raise
            continue
        if index != preferred:
            log.info("block 127.%d/16 is in use; using 127.%d/16", preferred, index)
        return Block(index, sock)
    raise NoFreeBlock("every 127.N/16 block (1-250) is held by another simulated cluster")


__all__ = ["Block", "NoFreeBlock", "claim"]
