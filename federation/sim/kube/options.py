"""A write's query options, as kube-apiserver reads them."""

from __future__ import annotations

from dataclasses import dataclass, field

from federation.sim.kube.errors import KubeError


@dataclass(slots=True)
class Options:
    """A write's query options (``dryRun``, ``fieldValidation``,
    ``fieldManager``, ``force``) and the warnings it answers with."""

    dry_run: bool = False
    field_validation: str = "Warn"  # kube's default since 1.23
    field_manager: str = ""
    force: bool = False
    warnings: list[str] = field(default_factory=list)
    user_agent: str = ""
    applied: bool = False  # an apply already recorded its fields

    @property
    def manager(self) -> str:
        """Who an update's fields belong to: the request's fieldManager, or
        (as kube derives it) its User-Agent up to the first "/"; the
        simulation's own controllers, in process, are "federation-sim"."""
        return self.field_manager or self.user_agent.split("/", 1)[0][:128] or "federation-sim"

    @classmethod
    def of(cls, query: dict[str, str], user_agent: str = "") -> Options:
        dry_run = query.get("dryRun", "")
        if dry_run not in ("", "All"):
            raise KubeError.bad_request(
                f'dryRun: Unsupported value: "{dry_run}": supported values: "All"'
            )
        manager = query.get("fieldManager", "")
        if len(manager) > 128:
            raise KubeError.bad_request("fieldManager: Too long: may not be longer than 128")
        return cls(
            dry_run=dry_run == "All",
            field_validation=query.get("fieldValidation") or "Warn",
            field_manager=manager,
            user_agent=user_agent,
            force=query.get("force", "").lower() in ("true", "1"),
        )
