"""The `containersProxy` object: its raw JSON shape and its parsed, validated form.

Two layers on purpose. `RawContainersProxy` is the documented JSON shape checked by pydantic in
strict mode (`true` is a boolean, `"yes"` and `1` are not; unknown keys are refused). Its
string values are then parsed by the small parsers of this package into
`ContainersProxyConfig`, the only object the rest of the program sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pac.routes import Route
from rules.exclude import ExcludeMatcher
from rules.ports import DEFAULT_TRANSPARENT_PORTS, PortSet

Mode = Literal["system", "manual"]


class RawContainersProxy(BaseModel):
    """`containersProxy` exactly as Docker Desktop documents it (air-gapped containers).

    Defaults fail closed: without `mode` the policy is `manual`, and without `http`/`https`
    that blocks everything that is not excluded.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    locked: bool = False
    mode: Mode = "manual"
    http: str = ""
    https: str = ""
    exclude: list[str] | str = Field(default_factory=list)
    pac: str = ""
    embedded_pac: str = Field("", alias="embeddedPac")
    transparent_ports: str = Field(DEFAULT_TRANSPARENT_PORTS, alias="transparentPorts")


#: JSON key -> what the key must hold, for error messages.
EXPECTED: dict[str, str] = {
    "locked": "true or false",
    "mode": "'system' or 'manual'",
    "http": "a proxy URL string ('' for none)",
    "https": "a proxy URL string ('' for none)",
    "exclude": "an array of strings or a comma/whitespace-separated string",
    "pac": "a PAC URL string ('' for none)",
    "embeddedPac": "a PAC script string ('' for none)",
    "transparentPorts": 'a string: "*", "" or a comma list like "80,443"',
}

KEYS: tuple[str, ...] = tuple(EXPECTED)


@dataclass(frozen=True, slots=True)
class ContainersProxyConfig:
    """A validated `containersProxy`: what `Policy.from_config` is built from.

    `http`/`https` are None when empty (REJECT in manual mode); `pac`/`embedded_pac` None when
    empty. `warnings` are for the caller to log at start-up (nothing here logs).
    """

    mode: Mode = "manual"
    http: Route | None = None
    https: Route | None = None
    exclude: ExcludeMatcher = field(default_factory=lambda: ExcludeMatcher([]))
    exclude_entries: tuple[str, ...] = ()
    pac: str | None = None
    embedded_pac: str | None = None
    transparent_ports: PortSet = field(
        default_factory=lambda: PortSet.from_ranges([(80, 80), (443, 443)])
    )
    locked: bool = False
    warnings: tuple[str, ...] = ()
    source: str = "<default>"

    @property
    def uses_pac(self) -> bool:
        """True when a PAC decides alone (manual mode with `embeddedPac` or `pac`)."""
        return self.mode == "manual" and (self.embedded_pac is not None or self.pac is not None)
