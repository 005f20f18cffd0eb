"""Search space (Hydra sweep syntax -> Optuna distributions) and study identity (what the trials share)."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from . import _compat
from ._errors import SweepError


def _float(x: float) -> float:
    """Round away float noise of range arithmetic (0.1 * 7 -> 0.7)."""
    return float(f"{x:.12g}")


def _range_values(sweep: RangeSweep) -> list[Any]:
    """The points of ``range(start, stop, step)`` (stop exclusive), floats without noise."""
    start, stop, step = sweep.start, sweep.stop, sweep.step
    if all(isinstance(v, int) for v in (start, stop, step)):
        return list(range(start, stop, step))
    n = math.ceil((stop - start) / step - 1e-9)
    return [_float(start + i * step) for i in range(max(n, 0))]


def parse_space(arguments: list[str], grid: bool) -> tuple[dict[str, BaseDistribution], dict[str, str], list[str]]:
    """Overrides -> (Optuna distributions by key, override key spelling by key, fixed overrides).

    ``choice(...)`` / ``a,b,c`` -> categorical; ``range(a,b[,s])`` -> int/float steps (stop exclusive,
    floats without noise); ``interval(a,b)`` -> uniform, ``tag(log, interval(a,b))`` -> log-uniform.
    With the grid sampler every dimension becomes the list of its values (an interval is an error)."""
    dists: dict[str, BaseDistribution] = {}
    keys: dict[str, str] = {}
    fixed: list[str] = []
    for override in OverridesParser.create().parse_overrides(arguments):
        if not override.is_sweep_override():
            fixed.append(override.input_line or f"{override.get_key_element()}={override.get_value_element_as_str()}")
            continue
        name = override.key_or_group
        keys[name] = override.get_key_element()
        dists[name] = _distribution(override, grid)
    return dists, keys, fixed


def _distribution(override: Override, grid: bool) -> BaseDistribution:
    value = override.value()
    name = override.key_or_group
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and (grid or value.shuffle)):
        choices = (list(override.sweep_iterator(transformer=Transformer.encode)) if isinstance(value, ChoiceSweep)
                   else _range_values(value))
        for c in choices:
            if not isinstance(c, (str, int, float, bool)) or c is None:
                raise SweepError(f"hydra.sweeper.params.{name}: choice values must be str, int, float or bool, got {c!r}")
        return CategoricalDistribution(choices)
    if grid:
        raise SweepError(f"hydra.sweeper.params.{name}={override.input_line or value}: the grid sampler needs "
                         "discrete values; use choice(...) or range(...), or another sampler (tpe, random)")
    if isinstance(value, RangeSweep):
        points = _range_values(value)
        if not points or value.step <= 0:
            raise SweepError(f"hydra.sweeper.params.{name}: range({value.start}, {value.stop}, {value.step}) "
                             "has no points (or a negative step); use an increasing range or choice(...)")
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(points[0], points[-1], step=value.step)
        return FloatDistribution(points[0], points[-1], step=value.step)
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise SweepError(f"hydra.sweeper.params.{name}: unsupported sweep {override.input_line or value}")


def render(value: Any) -> str:
    """``value`` as an override value that Hydra parses back to ``value``."""
    return _compat.render_value(value)


def hydra_quote(text: str) -> str:
    """``text`` (JSON) as a single-quoted Hydra override value that parses back unchanged."""
    return "'" + text.replace("'", "\\u0027").replace("$", "\\u0024") + "'"


def param_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


# ---------------------------------------------------------------- study identity
def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: node if isinstance(node, (str, int, float, bool, type(None))) else json.dumps(node, default=str)}


def fixed_settings(config: DictConfig, searched: set[str], ignore: list[str]) -> dict[str, Any]:
    """The job config every trial shares (minus ``hydra``, ignored keys and searched keys), flattened."""
    task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    try:
        plain = OmegaConf.to_container(task, resolve=True)
    except Exception:  # noqa: BLE001 - a value only a job can resolve: use its unresolved form
        plain = OmegaConf.to_container(task, resolve=False)
    skip = [*ignore, *searched]
    return {k: v for k, v in _flatten(plain).items()
            if not any(k == s or k.startswith(s + ".") for s in skip)}


def fingerprint(settings: dict[str, Any], space: dict[str, BaseDistribution], direction: str) -> str:
    blob = json.dumps({"settings": settings, "direction": direction,
                       "space": {k: optuna.distributions.distribution_to_json(d) for k, d in space.items()}},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def diff(old: dict[str, Any], new: dict[str, Any], limit: int = 8) -> str:
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k, "<unset>") != new.get(k, "<unset>"))
    parts = [f"{k}: {old.get(k, '<unset>')} -> {new.get(k, '<unset>')}" for k in keys[:limit]]
    return ", ".join(parts) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def in_space(params: dict[str, Any], space: dict[str, BaseDistribution]) -> bool:
    """Whether ``params`` has a plain value for exactly the keys of ``space``, each inside its
    distribution (a trial written into the storage by anything but this sweep may have other keys,
    nested values or values outside the space: it never becomes the study's best)."""
    if set(params) != set(space):
        return False
    for key, dist in space.items():
        value = params[key]
        if not isinstance(value, (str, int, float, bool)):
            return False
        if isinstance(dist, CategoricalDistribution):
            if not any(type(value) is type(c) and value == c for c in dist.choices):
                return False
        elif isinstance(dist, (FloatDistribution, IntDistribution)):
            if isinstance(value, (str, bool)) or not math.isfinite(value) or not dist.low <= value <= dist.high:
                return False
        else:
            return False
    return True


def describe_space(space: dict[str, BaseDistribution]) -> dict[str, Any]:
    """The space as plain data for ``optimization_results.yaml``: a list of choices, or ``{low, high, log}``."""
    out: dict[str, Any] = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            out[key] = {"choices": list(dist.choices)}
        elif isinstance(dist, (FloatDistribution, IntDistribution)):
            out[key] = {"low": dist.low, "high": dist.high, "log": bool(dist.log)}
    return out
