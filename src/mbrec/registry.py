"""Name -> class registries for the config groups that select a class (backbones, balancers), and the
config schemas derived from the classes' constructors.

A registered class's keyword arguments ARE its config: ``conf/<group>/<name>.yaml`` may set exactly
those keys (plus ``name``). :func:`schema_of` turns a constructor signature into a dataclass that Hydra
uses as the option's structured-config schema (types checked at composition), and
:meth:`Registry.build` refuses any other key with one line naming the option and the accepted keys.
"""

from __future__ import annotations

import collections.abc as abc
import copy
import dataclasses
import inspect
import types
import typing
from typing import Any, Callable, Dict, Generic, List, Mapping, Optional, TypeVar

from omegaconf import MISSING

from mbrec.errors import ConfigError

T = TypeVar("T")


def _omegaconf_type(annotation: Any) -> Any:
    """The closest type OmegaConf can check (int, float, bool, str, List, Dict, Optional, dataclasses); Any otherwise."""
    if annotation in (int, float, bool, str) or dataclasses.is_dataclass(annotation):
        return annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            inner = _omegaconf_type(rest[0])
            return Any if inner is Any else Optional[inner]
        return Any
    if origin in (list, tuple, abc.Sequence, abc.Iterable):
        inner = [a for a in args if a is not Ellipsis]
        return List[_omegaconf_type(inner[0])] if len(inner) == 1 else List[Any]
    if origin in (dict, abc.Mapping, abc.MutableMapping):
        return Dict[str, _omegaconf_type(args[1]) if len(args) == 2 else Any]
    return Any


def _field(annotation: Any, default: Any) -> tuple[Any, Any]:
    kind = _omegaconf_type(annotation)
    if default is inspect.Parameter.empty:
        return kind, dataclasses.field(default=MISSING)
    if isinstance(default, (list, tuple, dict)) or dataclasses.is_dataclass(default):
        value = list(default) if isinstance(default, tuple) else default
        return kind, dataclasses.field(default_factory=lambda v=value: copy.deepcopy(v))
    return kind, dataclasses.field(default=default)


def schema_of(cls: type, name: str, skip: tuple[str, ...] = ("self", "dataset")) -> type:
    """A dataclass with ``name`` plus one field per keyword argument of ``cls.__init__`` (its config)."""
    hints = typing.get_type_hints(cls.__init__)
    fields: list[tuple[str, Any, Any]] = [("name", str, dataclasses.field(default=name))]
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in skip or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        fields.append((p.name, *_field(hints.get(p.name, Any), p.default)))
    return dataclasses.make_dataclass(f"{cls.__name__}Config", fields)


def accepted_keys(cls: type, skip: tuple[str, ...] = ("self", "dataset")) -> list[str]:
    """The config keys ``cls`` takes: ``name`` and its constructor's keyword arguments."""
    params = inspect.signature(cls.__init__).parameters.values()
    return ["name", *(p.name for p in params if p.name not in skip and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))]


def check_keys(option: str, given: Any, accepted: list[str]) -> None:
    """One line naming ``option``, the unknown key(s) and the accepted keys, if ``given`` has others."""
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise ConfigError(f"{option}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"accepted: {', '.join(accepted)}")


class Registry(dict, Generic[T]):
    """A dict of name -> class with a ``register`` decorator and a strict ``build`` from a config mapping."""

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

    def get_class(self, name: str) -> type[T]:
        if name not in self:
            raise ConfigError(f"{self.kind}={name}: no such {self.kind}; available: {', '.join(sorted(self))}")
        return self[name]

    def check(self, cfg: Mapping[str, Any]) -> None:
        """Refuse keys that the selected class does not take (one line, before anything is built)."""
        name = cfg["name"]
        check_keys(f"{self.kind}={name}", cfg, accepted_keys(self.get_class(name)))

    def schema(self, name: str) -> type:
        return schema_of(self.get_class(name), name)

    def build(self, cfg: Mapping[str, Any], *args: Any) -> T:
        """Instantiate ``cfg['name']`` with ``*args`` and the rest of ``cfg`` as keyword arguments."""
        self.check(cfg)
        kwargs = dict(cfg)
        return self.get_class(kwargs.pop("name"))(*args, **kwargs)


def optimizer_keys(optimizer: Mapping[str, Any]) -> list[str]:
    """``_target_``, ``_partial_`` and the keyword arguments of the ``_target_`` optimizer class."""
    from hydra.utils import get_class

    target = optimizer.get("_target_")
    if not target:
        raise ConfigError("optimizer: no _target_ (e.g. _target_: torch.optim.Adam)")
    try:
        cls = get_class(str(target))
    except Exception as err:  # noqa: BLE001 - any import failure is the same user error
        raise ConfigError(f"optimizer._target_={target}: cannot import it ({err})") from None
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params")]
    return ["_target_", "_partial_", *params]
