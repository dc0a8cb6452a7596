"""Capture a composed Hydra config without breaking the job.

The config is read once, in ``on_job_start``: the unresolved text always, and each
leaf resolved on its own, so one interpolation that cannot resolve yet (a resolver
the task registers itself, a ``???`` value) keeps its text and the rest resolve.
Nothing is resolved again later, so resolvers with side effects run once here.
"""
from __future__ import annotations

import logging
from enum import Enum
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple, Union

from omegaconf import Container, DictConfig, ListConfig, Node, OmegaConf

if TYPE_CHECKING:
    from align_track.redact import Redactor

logger = logging.getLogger(__name__)

MISSING = "???"


def unresolved_yaml(
    cfg: DictConfig, skip: Iterable[str] = ("hydra",), redactor: Optional["Redactor"] = None,
    plain: Optional[Dict[Any, Any]] = None,
) -> str:
    """The config as YAML with interpolations kept; secrets masked by ``redactor``.
    ``plain``: :func:`unresolved_tree` of the same config and ``skip``, if at hand."""
    if plain is None:
        plain = unresolved_tree(cfg, skip)
    if redactor is not None:
        plain = redactor.tree(plain)
    return dump_yaml(plain)


def unresolved_tree(
    cfg: DictConfig, skip: Iterable[str] = ("hydra",)
) -> Dict[Any, Any]:
    """The top-level keys of ``cfg`` but ``skip`` as plain data, interpolations kept
    (what ``OmegaConf.to_container(cfg, resolve=False)`` holds for them)."""
    skip_set = set(skip)
    return {key: unresolved(cfg._get_node(key))
            for key in cfg.keys() if key not in skip_set}


def unresolved(node: Any) -> Any:
    """One node of a config as plain data, interpolations kept."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=False)
    return node._value()


def mentions_env(node: Any) -> bool:
    """Whether any value under a config node holds ``oc.env``: a walk over the stored
    text, resolving nothing and much cheaper than converting the node."""
    stack = [node]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        if isinstance(item, Container):
            content = item._content
            if isinstance(content, dict):
                extend(content.values())
                continue
            if isinstance(content, list):
                extend(content)
                continue
        elif isinstance(item, Node):
            content = item._value()
        else:
            content = item
        if isinstance(content, str):
            if "oc.env" in content:
                return True
        elif content is not None and not isinstance(content, (int, float, Enum)):
            return True  # a value of another kind: let the full conversion decide
    return False


def dump_yaml(data: Any) -> str:
    """YAML text of plain containers; PyYAML's C dumper where available (OmegaConf's
    own dumper costs seconds on a config of thousands of leaves)."""
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    try:
        return yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True,
                         default_flow_style=False, width=4096)
    except yaml.YAMLError:  # enums and other objects of structured configs
        pass
    try:
        return OmegaConf.to_yaml(OmegaConf.create(data))
    except Exception:  # a value OmegaConf cannot hold either: JSON is valid YAML
        import json

        return json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"


def load_yaml(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return load_yaml_text(fh.read())


def load_yaml_text(text: str) -> Any:
    """Plain data of a YAML document; PyYAML's C loader where available."""
    import yaml

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def resolve_leafwise(
    cfg: Union[DictConfig, ListConfig], skip: Iterable[str] = ("hydra",)
) -> Tuple[Any, List[str]]:
    """Return ``(containers, unresolved)``: the config as plain dicts and lists with
    every leaf resolved where it resolves, and the dotted keys of those that did not.
    """
    unresolved: List[str] = []
    skip_set = set(skip)
    out = _resolve_node(cfg, "", unresolved, skip_set)
    return out, unresolved


def _resolve_node(node: Any, path: str, unresolved: List[str], skip: set) -> Any:
    if isinstance(node, DictConfig):
        if node._is_none():
            return None
        if node._is_missing():
            return MISSING
        return {
            str(key): _resolve_child(node, key, _join(path, key), unresolved)
            for key in node.keys()
            if key not in skip
        }
    if isinstance(node, ListConfig):
        if node._is_none():
            return None
        if node._is_missing():
            return MISSING
        return [
            _resolve_child(node, i, f"{path}[{i}]", unresolved)
            for i in range(len(node))
        ]
    return node


def _resolve_child(parent: Any, key: Any, path: str, unresolved: List[str]) -> Any:
    child = parent._get_node(key)
    if child is None:
        return None
    if child._is_missing():
        return MISSING
    if not child._is_interpolation():
        if isinstance(child, (DictConfig, ListConfig)):
            return _resolve_node(child, path, unresolved, set())
        return child._value()
    try:
        value = parent[key]
    except Exception as exc:  # any resolver error: keep the text, never fail the job
        logger.debug("config key %r does not resolve at job start: %s", path, exc)
        unresolved.append(path)
        return child._value()
    if isinstance(value, (DictConfig, ListConfig)):
        return _resolve_node(value, path, unresolved, set())
    return value


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def to_plain(value: Any) -> Any:
    """Plain containers for a DictConfig/ListConfig, resolving what resolves."""
    if isinstance(value, (DictConfig, ListConfig)):
        return resolve_leafwise(value, skip=())[0]
    return value
