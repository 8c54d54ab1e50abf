"""Private: a registry of classes by name, filled by their class statements.

Every extension point of polyprune works the same way: a base class takes ``name=`` in the
class statement (``class Mine(Method, name="mine")``) and its ``__init_subclass__`` calls
:meth:`Registry.add`; the name is then accepted everywhere the library takes a name (the
methods of :func:`polyprune.fit_subnetwork`, ``CSConfig(loss=...)``, the command line).
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Classes by name, in registration order; ``what`` names the kind in error messages."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._classes: dict[str, T] = {}

    def add(self, name: str, cls: T) -> None:
        """Register ``cls`` as ``name``: an identifier not taken by another class.

        Registering the same class again (a module imported twice, e.g. as a script and as a
        module) is allowed.
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"a {self.what} name must be an identifier, got {name!r}")
        old = self._classes.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise ValueError(
                f"a {self.what} is already registered as {name!r}: "
                f"{old.__module__}.{old.__qualname__}"
            )
        self._classes[name] = cls

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._classes)

    def get(self, name: str) -> T:
        """The class registered as ``name``; a ``ValueError`` listing the names otherwise."""
        if not isinstance(name, str) or name not in self._classes:
            raise ValueError(f"unknown {self.what} {name!r}; registered: {list(self._classes)}")
        return self._classes[name]

    def __contains__(self, name: object) -> bool:
        return name in self._classes
