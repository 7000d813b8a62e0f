"""The registry client's contract runs against the same real registry as
the HTTP contract: a SQLite file and an etcd process."""

from tests.contract.registry_http.conftest import harness, sqlite_harness

__all__ = ["harness", "sqlite_harness"]
