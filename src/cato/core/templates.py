"""Prompt and request-body templates of declared tasks: ``{input}`` and upstream outputs.

A template is text with ``{field}`` placeholders (``{{`` and ``}}`` are literal braces). A field
is ``input`` (the request's input) or ``<node>.<output>[.<key>...]`` naming an *upstream* node
(one the templated node depends on, directly or transitively) and one of the outputs its kind
produces (:data:`OUTPUTS`):

* ``llm``: ``text`` (the generated text);
* ``retrieve``: ``text`` (the retrieved context);
* ``validate``: ``ok``, ``error``, ``code`` (the code it checked) and ``text`` (= ``code``);
* ``http``: ``json`` (the service's JSON answer; ``json.<key>.<key>`` reads into it, a list
  by index), ``text`` (the raw body), ``status`` and ``ok``.

No format specs, conversions or attribute access: the text is never ``str.format``-ed, only
substituted here. :func:`check_template` names the first field no upstream produces;
:func:`render` fills one from the outputs (strings as they are, ``true``/``false``, JSON for
lists and mappings, a missing value -- a key the answer lacks -- as the empty string). Pure.
"""

from __future__ import annotations

import json
import string
from typing import Any, Mapping

from cato.core.task import NodeKind

#: the outputs each node kind produces, for templates
OUTPUTS: Mapping[NodeKind, frozenset[str]] = {
    NodeKind.LLM: frozenset({"text"}),
    NodeKind.RETRIEVE: frozenset({"text"}),
    NodeKind.VALIDATE: frozenset({"ok", "error", "code", "text"}),
    NodeKind.HTTP: frozenset({"json", "text", "status", "ok"}),
}
_FMT = string.Formatter()


class TemplateError(ValueError):
    """A template is malformed or names a field no upstream node produces."""


def template_fields(text: str) -> tuple[str, ...]:
    """The fields of ``text`` in order (repeats kept); :class:`TemplateError` on bad syntax."""
    try:
        parts = list(_FMT.parse(text))
    except ValueError as e:
        raise TemplateError(f"template {text[:40]!r}...: {e}") from None
    out: list[str] = []
    for _, field, spec, conv in parts:
        if field is None:
            continue
        if spec or conv or not field or "[" in field:
            raise TemplateError(f"template field {{{field}{'!' + conv if conv else ''}"
                                f"{':' + spec if spec else ''}}}: only plain fields such as "
                                f"{{input}} or {{node.text}} are allowed")
        out.append(field)
    return tuple(out)


def check_template(text: str, upstream: Mapping[str, NodeKind]) -> None:
    """Raise :class:`TemplateError` naming the first field of ``text`` that neither the request
    (``input``) nor an ``upstream`` node (name -> kind) produces."""
    for field in template_fields(text):
        if field == "input":
            continue
        node, _, rest = field.partition(".")
        if node not in upstream:
            raise TemplateError(f"field {{{field}}}: {node!r} is not an upstream step of this "
                                f"one (upstream: {sorted(upstream) or 'none'}; or use {{input}})")
        out = rest.split(".")[0] if rest else ""
        kind = upstream[node]
        allowed = OUTPUTS[kind]
        if out not in allowed or (rest != out and kind is not NodeKind.HTTP):
            raise TemplateError(f"field {{{field}}}: a {kind.value} step produces "
                                f"{', '.join(sorted(allowed))}; e.g. {{{node}.text}}")
        if rest != out and out != "json":
            raise TemplateError(f"field {{{field}}}: only {node}.json reads into keys")


def _show(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, (Mapping, list)):
        return json.dumps(v)
    return str(v)


def lookup(outputs: Mapping[str, Mapping[str, Any]], field: str) -> Any:
    """The value of field ``node.output[.key...]`` in ``outputs`` (node -> output -> value);
    None when a node, output or key is missing."""
    node, *path = field.split(".")
    cur: Any = outputs.get(node)
    for key in path:
        if isinstance(cur, Mapping) and key in cur:
            cur = cur[key]
        elif isinstance(cur, list) and key.isdigit() and int(key) < len(cur):
            cur = cur[int(key)]
        else:
            return None
    return cur


def render(text: str, input_text: str, outputs: Mapping[str, Mapping[str, Any]]) -> str:
    """``text`` with every field substituted (module docstring)."""
    out: list[str] = []
    for literal, field, _, _ in _FMT.parse(text):
        out.append(literal)
        if field is not None:
            out.append(input_text if field == "input" else _show(lookup(outputs, field)))
    return "".join(out)

