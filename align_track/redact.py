"""Keep secrets out of every store.

Before anything is written, a value is replaced by :data:`MASK` when its key path
matches one of :data:`KEY_PATTERNS` (case-insensitive, any part of the dotted path)
or when the value itself looks like a well-known credential (:data:`VALUE_PATTERNS`).
``tracker.redact`` adds key patterns; ``tracker.redact=[]`` turns redaction off.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Optional, Pattern, Set

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
    r"://[^/\s:@]*:[^/\s@]+@",                      # password in a URL
)


#: Environment variables whose values ``${oc.env:NAME}`` may store in the clear; the
#: value of any other variable a config reads is masked wherever it appears.
ENV_ALLOWED = (
    "HOME", "USER", "LOGNAME", "PWD", "HOSTNAME", "TMPDIR", "LANG", "SHELL",
    "CUDA_VISIBLE_DEVICES", "LOCAL_RANK", "RANK", "WORLD_SIZE", "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "SLURM_NODEID",
)
_ENV_REF = re.compile(r"\$\{oc\.env:\s*([A-Za-z_][A-Za-z0-9_]*)")
#: How a dotted key path splits into the parts key patterns are searched in.
_KEY_SPLIT = re.compile(r'[."\[\]/]+')
#: Runs of characters a key pattern made of :data:`_LOCAL_PATTERN` can match in.
_WORD = re.compile(r"[\w-]+")
#: Key patterns whose every match lies inside one :data:`_WORD` (no wildcard, class
#: or escape): a YAML text can be checked word by word for them.
_LOCAL_PATTERN = re.compile(r"[A-Za-z0-9_\-^$|()?]+")
#: Results of key patterns on key parts, shared by the redactors of a process
#: (a sweep masks the same keys job after job); per pattern set, bounded.
_PART_MEMO: Dict[str, Dict[str, bool]] = {}
_PART_MEMO_MAX = 200_000
#: YAML lines found free of key words, per key pattern set: a sweep's jobs write
#: much the same .hydra files. Lines up to _LINE_MEMO_LEN characters, at most
#: _LINE_MEMO_MAX of them.
_CLEAN_LINES: Dict[str, Set[str]] = {}
_LINE_MEMO_LEN = 500
_LINE_MEMO_MAX = 20_000
#: From this length on, value patterns are searched for one by one (measured: one
#: alternation is faster on short values, slower on a page of YAML).
_LONG_TEXT = 300
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
        source = self._key.pattern if self._key is not None else ""
        self._parts = _PART_MEMO.setdefault(source, {})
        self._clean_lines = _CLEAN_LINES.setdefault(source, set())
        # one by one, each pattern is searched for at the speed of its literal start;
        # as one alternation, every branch is tried at every character
        self._each = [re.compile(p) for p in values]
        # a pattern that matches an empty part needs the whole path split at once
        self._by_segment = self._key is None or not self._key.search("")
        self._words_local = (values == list(VALUE_PATTERNS) and all(
            p in KEY_PATTERNS or (_LOCAL_PATTERN.fullmatch(p) and "(?" not in p)
            for p in keys))

    def mask_env(self, names: Iterable[str]) -> None:
        """Mask the values of these environment variables (those a config reads)
        wherever they appear, unless the variable is in :data:`ENV_ALLOWED`."""
        import os

        for name in names:
            value = os.environ.get(name)
            if self.enabled and name not in ENV_ALLOWED and value:
                self._remember(value)

    @property
    def remembered(self) -> int:
        """How many secret values this redactor masks wherever they appear."""
        return len(self._literals)

    def _remember(self, value: str) -> None:
        """Mask ``value`` wherever it appears from now on (an environment variable
        the config reads, or a secret found under its key: it may turn up later in
        an error message or a log line). Longest first, so that no shorter secret
        masks part of a longer one."""
        if len(value) >= MIN_LITERAL and value not in self._literals:
            self._literals.append(value)
            self._literals.sort(key=len, reverse=True)

    def text(self, text: str) -> str:
        """``text`` with credential-shaped substrings and secret values masked."""
        if not self.enabled:
            return text
        for literal in self._literals:
            text = text.replace(literal, MASK)
        return self._value.sub(MASK, text) if self._credential_in(text) else text

    def _credential_in(self, text: str) -> bool:
        """Whether a value pattern matches somewhere in ``text``."""
        if len(text) < _LONG_TEXT:
            return self._value is not None and self._value.search(text) is not None
        return any(pattern.search(text) for pattern in self._each)

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
        return any(self._secret_part(part) for part in _KEY_SPLIT.split(key))

    def _secret_part(self, part: str) -> bool:
        known = self._parts.get(part)
        if known is None:
            if len(self._parts) >= _PART_MEMO_MAX:
                self._parts.clear()
            known = self._parts[part] = bool(self._key.search(part))  # type: ignore
        return known

    def _secret_child(self, parent_secret: Optional[bool], path: str, key: str) -> bool:
        """``secret_key(path.key)``, from what is known of ``path`` already."""
        full = f"{path}.{key}" if path else key
        if parent_secret is None or not self._by_segment or self._key is None:
            return self.secret_key(full)
        return parent_secret or self.secret_key(key)

    def may_mask_yaml(self, text: str) -> bool:
        """False only when :meth:`tree` is sure to change nothing in the YAML document
        ``text``: no key word, credential shape or secret value occurs in it. Much
        cheaper than parsing; True when in doubt (escapes, custom patterns)."""
        if not self.enabled:
            return False
        if not (self._words_local and self._by_segment) or "\\" in text:
            return True
        folded = " ".join(text.split())  # YAML may fold a long value over lines
        for literal in self._literals:
            if "'" in literal or '"' in literal or literal in text \
                    or " ".join(literal.split()) in folded:
                return True
        if self._credential_in(text) or self._credential_in(folded):
            return True
        return self._key is not None and self._key_word_in(text)

    def _key_word_in(self, text: str) -> bool:
        """Whether a word of ``text`` holds a key pattern; words never span lines,
        so lines already found clean are skipped."""
        clean = self._clean_lines
        for line in text.splitlines():
            if line in clean:
                continue
            if any(self._secret_part(word) for word in set(_WORD.findall(line))):
                return True
            if len(line) <= _LINE_MEMO_LEN:
                if len(clean) >= _LINE_MEMO_MAX:
                    clean.clear()
                clean.add(line)
        return False

    def secret_value(self, value: Any) -> bool:
        return bool(self.enabled and isinstance(value, str)
                    and self._credential_in(value))

    def value(self, key: str, value: Any) -> Any:
        """``value``, or the mask if the key or the value says it is secret."""
        return self._masked(key, value, None)

    def _masked(self, key: str, value: Any, secret: Optional[bool]) -> Any:
        """:meth:`value`; ``secret`` is ``secret_key(key)`` where already known."""
        if not self.enabled or value is None or value == "":
            return value
        if secret is None:
            secret = self.secret_key(key)
        if secret and not _is_reference(value):
            if isinstance(value, str):
                self._remember(value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                self._remember(str(value))  # a numeric password, as a log would print it
            return MASK
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return MASK if self._literals and str(value) in self._literals else value
        if isinstance(value, str):
            if self.secret_value(value) or any(lit in value for lit in self._literals):
                return MASK
            if "=" in value:  # an override such as "llm.api_key=..." inside a list
                return self.override(value)
        if isinstance(value, list):
            return [self._masked(key, v, secret) for v in value]
        if isinstance(value, dict):
            return self._tree(value, key, secret)
        return value

    def tree(self, node: Any, path: str = "") -> Any:
        """A copy of nested dicts/lists with secret leaves masked."""
        if not self.enabled:
            return node
        return self._tree(node, path, None if path else False)

    def _tree(self, node: Any, path: str, secret: Optional[bool]) -> Any:
        if isinstance(node, dict):
            return {k: self._masked(f"{path}.{k}" if path else str(k), v,
                                    self._secret_child(secret, path, str(k)))
                    for k, v in node.items()}
        if isinstance(node, list):
            if secret is None:
                secret = self.secret_key(path)
            return [self._masked(path, v, secret) for v in node]
        return self._masked(path, node, secret)

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
