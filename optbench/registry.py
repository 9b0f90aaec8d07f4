"""One generic registry: names mapped to values (optimizers, problems, tuning protocols, recipes, schedules,
report figures), looked up with suggestions and listed for ``optbench list`` and the CLI's help.

A registry is declared next to the values it holds and filled where each value is defined::

    FIGURES: Registry[Figure] = Registry("figure")

    @FIGURES.register("curves")            # as a decorator ...
    def curves(...): ...

    FIGURES.register("grids", grids_figure)  # ... or as a call

``get(name)`` raises :class:`~optbench.errors.SpecError` naming the unknown value, the nearest names and every
valid one; registering a name twice is an error (a second definition would silently replace the first).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar, overload

from optbench.errors import unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """Names → values of one kind, in registration order.

    kind: the singular noun in messages ("optimizer" → "Unknown optimizer 'adamm'. … Valid optimizers: …").
    load: called once before the first lookup or listing, to import the modules whose definitions register
    themselves (problem modules, figure modules), so that importing the registry stays cheap.
    sort_in_errors: list the valid names alphabetically in an unknown-name error (False: in registration
    order, where that order means something, as the figures' drawing order does).
    """

    def __init__(self, kind: str, *, load: Callable[[], None] | None = None, sort_in_errors: bool = True):
        self.kind = kind
        self.sort_in_errors = sort_in_errors
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._load = load

    def _loaded(self) -> dict[str, T]:
        if self._load is not None:
            load, self._load = self._load, None  # before calling: the modules it imports register here
            try:
                load()
            except BaseException:
                self._load = load
                raise
        return self._entries

    @overload
    def register(self, name: str, value: T, *, aliases: Iterable[str] = ()) -> T: ...

    @overload
    def register(self, name: str, *, aliases: Iterable[str] = ()) -> Callable[[T], T]: ...

    def register(self, name, value=None, *, aliases=()):
        """Register ``value`` under ``name`` (and ``aliases``); without a value, a decorator that registers
        what it decorates and returns it unchanged. A name or alias already taken raises ValueError."""
        if value is None:
            return lambda decorated: self.register(name, decorated, aliases=aliases)
        aliases = tuple(aliases)
        for key in (name, *aliases):
            if key in self._entries or key in self._aliases:
                raise ValueError(f"{self.kind} {key!r} registered twice")
        self._entries[name] = value
        self._aliases.update(dict.fromkeys(aliases, name))
        return value

    def unregister(self, name: str) -> T:
        """Remove ``name`` and its aliases (tests registering a throwaway entry clean up with this)."""
        value = self._entries.pop(name)
        for alias in [a for a, target in self._aliases.items() if target == name]:
            del self._aliases[alias]
        return value

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases; unknown names raise SpecError."""
        entries = self._loaded()
        name = self._aliases.get(name, name)
        if name not in entries:
            raise unknown_name(self.kind, name, [*entries, *self._aliases], sort=self.sort_in_errors)
        return name

    def get(self, name: str) -> T:
        """The value registered as ``name`` (or an alias); unknown names raise SpecError with suggestions."""
        return self._entries[self.canonical(name)]

    def find(self, name: str) -> T | None:
        """The value registered as ``name`` (or an alias), or None."""
        return self._loaded().get(self._aliases.get(name, name))

    def peek(self, name: str) -> T | None:
        """The value registered as ``name`` (or an alias) so far, or None, without running ``load`` (a caller
        that can import the one module defining ``name`` looks here first)."""
        return self._entries.get(self._aliases.get(name, name))

    def names(self) -> builtins.list[str]:
        """Registered names (not aliases), in registration order."""
        return list(self._loaded())

    def aliases(self) -> dict[str, str]:
        """alias → registered name."""
        self._loaded()
        return dict(self._aliases)

    def list(self) -> builtins.list[T]:
        """Registered values, in registration order."""
        return list(self._loaded().values())

    # read-only mapping view: ``name in registry``, ``registry[name]``, iteration over names, ``items()``
    def __contains__(self, name: object) -> bool:
        return name in self._loaded()

    def __getitem__(self, name: str) -> T:
        return self._loaded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._loaded()))

    def __len__(self) -> int:
        return len(self._loaded())

    def keys(self) -> builtins.list[str]:
        return self.names()

    def values(self) -> builtins.list[T]:
        return self.list()

    def items(self) -> builtins.list[tuple[str, T]]:
        return list(self._loaded().items())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"
