"""``python -m mbrec --help``: one line per config group and per key, built from ``conf/`` itself.

The values are those of the composed config (so ``--help backbone=mgcn`` lists MGCN's keys); the
descriptions are the comments beside each key (or on the line above it) in the YAML files, and the
comments on the defaults list of ``conf/config.yaml`` for the groups. Hydra's help template
(``conf/hydra/help/mbrec.yaml``) calls the resolver ``${mbrec.help:}`` that :func:`register_help` adds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf

from mbrec.config import conf_dir

_KEY = re.compile(r"^(\s*)([A-Za-z_][\w]*):\s*(.*?)\s*(?:#\s?(.*))?$")
_DEFAULT = re.compile(r"^\s*-\s*(?:optional\s+)?(?:override\s+)?([\w/]+):\s*(\S+)\s*(?:#\s?(.*))?$")
#: groups of conf/ listed in the help (in this order), then Hydra's launcher group
GROUPS = ("dataset", "backbone", "balancer", "optimizer", "scale", "ablation", "experiment", "hparams_search")
USAGE = """\
mbrec: modality-balanced multimedia recommendation (CKD, GB, OGM) on its backbones.

  python -m mbrec [group=option ...] [key=value ...]    one run: prints its test metrics; MLflow: make ui
  python -m mbrec -m key=a,b ...                        a sweep (multirun): one run per combination
  python -m mbrec --help backbone=mgcn balancer=ckd     this help with those options' keys
  python -m mbrec --cfg job [overrides]                 the composed config, in full
  from Python: mbrec.train("balancer=ckd"), mbrec.compose(...), mbrec.load_model(run_id)
  docs: README.md and docs/ (method, backbones, balancers, data, evaluation)
"""


#: the key under which :func:`comments` returns a file's leading comment (its description)
_DESCRIPTION = "<file>"


def comments(path: Path) -> dict[str, str]:
    """``dotted key -> comment`` from a YAML file: the comment after a key, else the comment lines
    right above it; the first line of the file's leading comment under ``<file>``. The ``defaults``
    list and ``hydra`` block are skipped."""
    out: dict[str, str] = {}
    first = True
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    skip_indent: int | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("# @package"):
            above = []
            continue
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        if first and above:
            out[_DESCRIPTION], above = above[0], []
        first = False
        match = _KEY.match(line)
        if not match:
            above = []
            continue
        indent, key, value, comment = len(match[1]), match[2], match[3], match[4]
        if skip_indent is not None and indent > skip_indent:
            continue
        skip_indent = None
        if indent == 0 and key in ("defaults", "hydra"):
            skip_indent, above = 0, []
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [key])
        text = comment or " ".join(above)
        if text:
            out[dotted] = text
        if not value:
            stack.append((indent, key))
        above = []
    return out


_FIELD = re.compile(r"^\s+(\w+):\s*[^=#]+=\s*.*?#\s?(.*)$")


def field_comments(cls: type) -> dict[str, str]:
    """``field -> comment`` of a dataclass whose fields carry their description as a trailing comment
    (:class:`mbrec.training.settings.TrainSettings`: the ``train`` keys are described once, there)."""
    import inspect

    return {m[1]: m[2].strip() for line in inspect.getsource(cls).splitlines() if (m := _FIELD.match(line))}


def key_comments() -> dict[str, str]:
    """The description of every top-level key: conf/config.yaml's comments and, for ``train.*``, the
    comments of :class:`~mbrec.training.settings.TrainSettings` (where the defaults are)."""
    from mbrec.training.settings import TrainSettings

    return {**comments(conf_dir() / "config.yaml"), **{f"train.{k}": v for k, v in field_comments(TrainSettings).items()}}


def group_comments(config_yaml: Path) -> dict[str, str]:
    """``group -> comment`` from the defaults list of ``conf/config.yaml``."""
    out = {}
    for line in config_yaml.read_text(encoding="utf-8").splitlines():
        match = _DEFAULT.match(line)
        if match and match[3]:
            out[match[1]] = match[3].strip()
    return out


def _value(v: Any) -> str:
    if isinstance(v, (DictConfig, ListConfig)):
        v = OmegaConf.to_container(v, resolve=True)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ",".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def _leaves(node: Any, prefix: str, keys: Any = None) -> Iterator[tuple[str, Any]]:
    for key in node if keys is None else keys:
        try:
            value = node[key]
        except Exception:  # noqa: BLE001 - an unresolvable value is shown as written
            value = OmegaConf.to_container(node, resolve=False)[key]
        dotted = f"{prefix}{key}"
        if isinstance(value, DictConfig) and len(value) and not dotted.endswith("teachers.train"):
            yield from _leaves(value, dotted + ".")
        else:
            yield dotted, value


def _line(left: str, right: str, width: int = 34) -> str:
    return f"  {left:<{width}} {right}".rstrip() if len(left) < width else f"  {left}  {right}".rstrip()


def help_text(root: DictConfig) -> str:
    """The whole --help text for the composed config ``root`` (with its ``hydra`` node)."""
    conf = conf_dir()
    choices = dict(OmegaConf.select(root, "hydra.runtime.choices", default={}) or {})
    described = group_comments(conf / "config.yaml")
    lines = [USAGE, "Groups (group=option: the current one, then every option)"]
    for group in GROUPS:
        options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        current = choices.get(group) or "null"
        lines.append(_line(f"{group}={current}", f"{'|'.join(options)} — {described.get(group, '')}"))
    launchers = sorted(p.stem for p in (conf / "hydra" / "launcher").glob("*.yaml"))
    lines.append(_line("hydra/launcher=basic", f"{'|'.join(launchers)} — parallel trials (-m): one machine or SLURM"))

    notes = key_comments()
    groups_in_config = ("dataset", "backbone", "balancer", "optimizer")
    lines += ["", "Keys (key=value: the current value)"]
    for key, value in _leaves(root, "", [k for k in root if k != "hydra" and k not in groups_in_config]):
        lines.append(_line(f"{key}={_value(value)}", notes.get(key, "")))
    for group in groups_in_config:
        option = choices.get(group)
        file = conf / group / f"{option}.yaml"
        notes = {f"{group}.{k}": v for k, v in comments(file).items()} if option and file.is_file() else {}
        title = notes.pop(f"{group}.{_DESCRIPTION}", "")
        lines += ["", f"{group}={option} keys" + (f": {title}" if title else "")]
        for key, value in _leaves(root[group], f"{group}."):
            lines.append(_line(f"{key}={_value(value)}", notes.get(key, "")))
    lines += ["", "Hydra's own flags: python -m mbrec --hydra-help"]
    return "\n".join(lines).replace("$", "$$") + "\n"  # Hydra fills the template with string.Template


def register_help() -> None:
    """Register ``${mbrec.help:}`` (the --help text of the config it is resolved in)."""
    OmegaConf.register_new_resolver("mbrec.help", lambda *, _root_: help_text(_root_), replace=True)
