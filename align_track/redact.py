"""Keep secrets out of every store.

Before anything is written, a value is replaced by :data:`MASK` when its key path
matches one of :data:`KEY_PATTERNS` (case-insensitive, any part of the dotted path)
or when the value itself looks like a well-known credential (:data:`VALUE_PATTERNS`).
``tracker.redact`` adds key patterns; ``tracker.redact=[]`` turns redaction off.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Optional, Pattern

MASK = "<redacted>"

#: Key patterns (regular expressions, searched in each part of the dotted key path)
#: that mark a value as secret. ``token$`` catches ``hf_token`` but not
#: ``max_tokens`` or ``tokenizer``.
KEY_PATTERNS = (
    r"api[_-]?key", r"token$", r"passw(or)?d", r"secret", r"credential",
    r"private[_-]?key", r"access[_-]?key", r"session[_-]?key", r"signing[_-]?key",
    r"authorization", r"bearer", r"cookie", r"(^|[_-])dsn$",
)

#: Value patterns of well-known credential formats.
VALUE_PATTERNS = (
    r"sk-ant-[A-Za-z0-9_\-]{16,}",                  # Anthropic
    r"sk-(proj-|svcacct-)?[A-Za-z0-9_\-]{20,}",     # OpenAI
    r"AKIA[0-9A-Z]{16}",                            # AWS access key id
    r"gh[pousr]_[A-Za-z0-9]{30,}",                  # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{30,}",
    r"hf_[A-Za-z0-9]{30,}",                         # Hugging Face
    r"xox[abprs]-[A-Za-z0-9\-]{10,}",               # Slack
    r"AIza[0-9A-Za-z_\-]{35}",                      # Google API key
    r"glpat-[A-Za-z0-9_\-]{20,}",                   # GitLab
    r"eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}",  # JWT
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"://[^/\s:@]+:[^/\s@]+@",                      # password in a URL
)


#: Environment variables whose values ``${oc.env:NAME}`` may store in the clear; the
#: value of any other variable a config reads is masked wherever it appears.
ENV_ALLOWED = (
    "HOME", "USER", "LOGNAME", "PWD", "HOSTNAME", "TMPDIR", "LANG", "SHELL",
    "CUDA_VISIBLE_DEVICES", "LOCAL_RANK", "RANK", "WORLD_SIZE", "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "SLURM_NODEID",
)
_ENV_REF = re.compile(r"\$\{oc\.env:\s*([A-Za-z_][A-Za-z0-9_]*)")
#: Shorter values are too likely to occur by chance to be masked as text.
MIN_LITERAL = 6


def env_references(node: Any) -> List[str]:
    """Names of environment variables read through ``${oc.env:...}`` in a tree."""
    names: List[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and "oc.env" in item:
            names.extend(_ENV_REF.findall(item))
    return names


class Redactor:
    """Masks secret values in configs, params, overrides and command lines."""

    def __init__(self, key_patterns: Iterable[str] = KEY_PATTERNS,
                 value_patterns: Iterable[str] = VALUE_PATTERNS, enabled: bool = True):
        self.enabled = enabled
        keys = list(key_patterns)
        values = list(value_patterns)
        self._key: Optional[Pattern[str]] = (
            re.compile("|".join(f"(?:{p})" for p in keys), re.IGNORECASE) if keys else None)
        self._value: Optional[Pattern[str]] = (
            re.compile("|".join(f"(?:{p})" for p in values)) if values else None)
        self._literals: List[str] = []

    def mask_env(self, names: Iterable[str]) -> None:
        """Mask the values of these environment variables (those a config reads)
        wherever they appear, unless the variable is in :data:`ENV_ALLOWED`."""
        import os

        for name in names:
            value = os.environ.get(name)
            if (self.enabled and name not in ENV_ALLOWED and value
                    and len(value) >= MIN_LITERAL and value not in self._literals):
                self._literals.append(value)
        self._literals.sort(key=len, reverse=True)

    def text(self, text: str) -> str:
        """``text`` with credential-shaped substrings and secret values masked."""
        if not self.enabled:
            return text
        for literal in self._literals:
            text = text.replace(literal, MASK)
        return self._value.sub(MASK, text) if self._value is not None else text

    @classmethod
    def from_setting(cls, extra: Optional[List[str]]) -> "Redactor":
        """``None``: the defaults; ``[]``: off; a list: the defaults plus these."""
        if extra is None:
            return cls()
        if len(extra) == 0:
            return cls(enabled=False)
        for pattern in extra:
            re.compile(pattern)  # a bad pattern fails at start, naming itself
        return cls(key_patterns=[*KEY_PATTERNS, *extra])

    def secret_key(self, key: str) -> bool:
        if not self.enabled or self._key is None:
            return False
        return any(self._key.search(part) for part in re.split(r'[."\[\]/]+', key))

    def secret_value(self, value: Any) -> bool:
        return bool(self.enabled and isinstance(value, str) and self._value is not None
                    and self._value.search(value))

    def value(self, key: str, value: Any) -> Any:
        """``value``, or the mask if the key or the value says it is secret."""
        if not self.enabled or value is None or value == "":
            return value
        if self.secret_key(key) and not _is_reference(value):
            return MASK
        if isinstance(value, str):
            if self.secret_value(value) or any(lit in value for lit in self._literals):
                return MASK
            if "=" in value:  # an override such as "llm.api_key=..." inside a list
                return self.override(value)
        if isinstance(value, list):
            return [self.value(key, v) for v in value]
        if isinstance(value, dict):
            return self.tree(value, key)
        return value

    def tree(self, node: Any, path: str = "") -> Any:
        """A copy of nested dicts/lists with secret leaves masked."""
        if not self.enabled:
            return node
        if isinstance(node, dict):
            return {k: self.value(f"{path}.{k}" if path else str(k), v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.value(path, v) for v in node]
        return self.value(path, node)

    def flat(self, params: Dict[str, Any]) -> Dict[str, Any]:
        return {k: self.value(k, v) for k, v in params.items()} if self.enabled else params

    def override(self, text: str) -> str:
        """``key=value`` (an override or an argv word) with a secret value masked."""
        if not self.enabled:
            return text
        key, sep, value = text.partition("=")
        if sep and self.secret_key(key.lstrip("+~")) and not _is_reference(value):
            return f"{key}={MASK}"
        return self.text(text)

    def overrides(self, items: Iterable[str]) -> List[str]:
        return [self.override(str(i)) for i in items]


def _is_reference(value: Any) -> bool:
    # "${oc.env:OPENAI_API_KEY}" names where the secret is, and is not one itself;
    # its resolved value is masked by key.
    return isinstance(value, str) and value.startswith("${") and value.endswith("}") \
        and value.count("${") == 1
