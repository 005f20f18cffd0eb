"""Name -> class registries for the config groups that select a class (backbones, balancers)."""

from __future__ import annotations

from typing import Any, Callable, Generic, Mapping, TypeVar

T = TypeVar("T")


class Registry(dict, Generic[T]):
    """A dict of name -> class with a ``register`` decorator and a ``build`` from a config mapping."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: make the class selectable as ``<kind>=<name>``."""

        def deco(cls: type[T]) -> type[T]:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            cls.name = name  # type: ignore[attr-defined]
            self[name] = cls
            return cls

        return deco

    def build(self, cfg: Mapping[str, Any], *args: Any) -> T:
        """Instantiate ``cfg['name']`` with ``*args`` and the rest of ``cfg`` as keyword arguments."""
        cfg = dict(cfg)
        name = cfg.pop("name")
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {sorted(self)}")
        return self[name](*args, **cfg)
