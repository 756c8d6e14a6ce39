"""The HTTP faces: one package per wire protocol (`bedrock/`, `stability/`, `openai/`, `a1111/`), each a thin
adapter between its wire and the wire-neutral `GenerationRequest`, plus what they share (auth, body reading,
OpenAPI helpers).

A wire is a `Wire`: its routes, how it answers an error, and the paths it claims for requests no route
matched. `create_app` installs each with one line; the error shape of a failure is chosen by the route that
failed (Starlette puts the matched endpoint in the scope), not by the path. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import APIRouter
from starlette.responses import Response
from starlette.types import Scope

from sdxl_bedrock.errors import ServiceError

ShapeT = TypeVar("ShapeT")
ErrorResponder = Callable[[ServiceError, str], Response]
"""`(error, request id) -> the error response in the wire's shape`."""


@dataclass(frozen=True)
class Wire:
    """One wire protocol: its routes and its error shape.

    `claimed_paths` are path prefixes this wire answers for when no route matched (its 404 shape); the
    longest claim wins, and the first wire installed answers for everything unclaimed."""

    name: str
    router: APIRouter
    error_response: ErrorResponder
    claimed_paths: tuple[str, ...] = ()
    endpoints: frozenset[Callable[..., object]] = field(init=False)

    def __post_init__(self) -> None:
        endpoints = frozenset(getattr(route, "endpoint", None) for route in self.router.routes) - {None}
        object.__setattr__(self, "endpoints", endpoints)


class Wires:
    """The installed wires, and which one answers a given request."""

    def __init__(self, wires: Iterable[Wire]) -> None:
        self.wires: Sequence[Wire] = tuple(wires)
        if not self.wires:
            raise ValueError("at least one wire")

    def for_scope(self, scope: Scope) -> Wire:
        """The wire of the route that matched (also for a 405 on its path), else the one claiming the path."""
        endpoint = scope.get("endpoint")
        for wire in self.wires:
            if endpoint in wire.endpoints:
                return wire
        path: str = scope.get("path", "")
        claims = [
            (len(prefix), index)
            for index, wire in enumerate(self.wires)
            for prefix in wire.claimed_paths
            if path.startswith(prefix)
        ]
        return self.wires[max(claims)[1]] if claims else self.wires[0]


def most_specific(table: Mapping[type[ServiceError], ShapeT], error: ServiceError) -> ShapeT:
    """The entry of `table` for the most specific class of `error` (its MRO order); tables hold
    ServiceError itself as the fallback."""
    for cls in type(error).__mro__:
        if cls in table:
            return table[cls]
    return table[ServiceError]
