"""``when:`` conditions of task nodes: run a step only when an upstream step failed or said so.

A condition names one upstream node and asks either for its *verdict* (``failed: true`` --
a validation that did not compile, an ``http`` step whose service answered an error) or for a
value of its JSON *answer* (an ``http`` step's body) compared with a literal. The language is
deliberately tiny and never evaluated as code:

* mapping form: ``{node: validate, failed: true}`` (or ``failed: false``);
* text form: ``"<node>.failed == true"``, ``"<node>.ok == false"``,
  ``"<node>.json.<key>[.<key>...] == <literal>"`` or ``!=``, where ``<literal>`` is ``true``,
  ``false``, ``null``, a number or a quoted string (``'...'`` or ``"..."``). Anything else is a
  :class:`ConditionError` naming the text.

:meth:`Condition.holds` judges it from what the upstream node reported (its verdict, its JSON
answer); it says ``None`` -- unknown -- when the node reported nothing (a simulator draws the
branch up front instead: :mod:`cato.core.lifecycle`). Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Union

JsonScalar = Union[bool, int, float, str, None]

_TEXT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_\-]*)((?:\.[A-Za-z0-9_\-]+)+)\s*(==|!=)\s*(.+?)\s*$")


class ConditionError(ValueError):
    """A ``when:`` condition is malformed; the message names the text."""


@dataclass(frozen=True, slots=True)
class Condition:
    """Run the node only when upstream node ``node`` ... ``failed`` (``True``: failed;
    ``False``: passed), or -- when ``failed`` is None -- when the value at ``path`` in its JSON
    answer equals ``value`` (``negate``: differs from it). Exactly one of the two forms."""

    node: str
    failed: bool | None = None
    path: tuple[str, ...] = ()
    value: JsonScalar = None
    negate: bool = False

    def __post_init__(self) -> None:
        if (self.failed is None) == (not self.path):
            raise ConditionError(f"condition on {self.node!r}: give either `failed` or a JSON "
                                 f"path, not both or neither")

    def holds(self, verdict: bool | None, answer: Any) -> bool | None:
        """Whether the node should run, given the upstream node's ``verdict`` (its ``ok``;
        None: it reported none) and its JSON ``answer`` (None: none). None: unknown."""
        if self.failed is not None:
            return None if verdict is None else (verdict is not self.failed)
        if answer is None:
            return None
        cur: Any = answer
        for key in self.path:
            if isinstance(cur, Mapping) and key in cur:
                cur = cur[key]
            elif isinstance(cur, list) and key.isdigit() and int(key) < len(cur):
                cur = cur[int(key)]
            else:
                cur = None        # a missing key compares as null
                break
        eq = _same(cur, self.value)
        return eq != self.negate

    def describe(self) -> str:
        """The condition as text (the form a user writes)."""
        if self.failed is not None:
            return f"{self.node}.failed == {'true' if self.failed else 'false'}"
        op = "!=" if self.negate else "=="
        return f"{self.node}.json.{'.'.join(self.path)} {op} {json.dumps(self.value)}"


def _same(a: Any, b: JsonScalar) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b        # true, false and null equal only themselves
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return isinstance(a, str) and isinstance(b, str) and a == b


def _literal(text: str, where: str) -> JsonScalar:
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    try:
        v = float(text)
    except ValueError:
        raise ConditionError(f"{where}: {text!r} is not a literal (true, false, null, a number "
                             f"or a quoted string)") from None
    if not math.isfinite(v):
        raise ConditionError(f"{where}: {text!r} is not a finite number")
    return int(v) if v.is_integer() and "." not in text and "e" not in text.lower() else v


def parse_condition(spec: str | Mapping[str, Any]) -> Condition:
    """A condition from its mapping or text form (module docstring); :class:`ConditionError`
    naming the problem otherwise."""
    if isinstance(spec, Mapping):
        extra = set(spec) - {"node", "failed"}
        node, failed = spec.get("node"), spec.get("failed")
        if extra or not isinstance(node, str) or not node or not isinstance(failed, bool):
            raise ConditionError(
                f"condition {dict(spec)!r}: the mapping form is {{node: NAME, failed: "
                f"true|false}}")
        return Condition(node, failed=failed)
    if not isinstance(spec, str):
        raise ConditionError(f"condition {spec!r}: must be a mapping or a text")
    m = _TEXT.match(spec)
    if m is None:
        raise ConditionError(f"condition {spec!r}: expected '<node>.failed == true|false' or "
                             f"'<node>.json.<key> ==|!= <literal>'")
    node, dotted, op, lit = m.group(1), m.group(2)[1:].split("."), m.group(3), m.group(4)
    where = f"condition {spec!r}"
    value = _literal(lit, where)
    if dotted in (["failed"], ["ok"]):
        if not isinstance(value, bool):
            raise ConditionError(f"{where}: {dotted[0]} compares with true or false")
        failed = value if dotted == ["failed"] else not value
        return Condition(node, failed=failed if op == "==" else not failed)
    if dotted[0] != "json" or len(dotted) < 2:
        raise ConditionError(f"{where}: a step's answer is read as '<node>.json.<key>'; "
                             f"verdicts as '<node>.failed' or '<node>.ok'")
    return Condition(node, path=tuple(dotted[1:]), value=value, negate=op == "!=")
