"""Reading and writing ``model.yaml`` with errors that name the file and the key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

from pinnace.errors import ManifestError, PinnaceError
from pinnace.manifest.schema import MODEL_NAME_RE, Manifest
from pinnace.protocol.datatypes import DATATYPES

T = TypeVar("T")


def decode_yaml(
    text: str | bytes,
    cls: type[T],
    *,
    source: str,
    error: type[PinnaceError],
    prepare: Callable[[dict[str, Any]], None] | None = None,
) -> T:
    """YAML text as a ``cls`` struct; failures raise ``error`` naming ``source`` and the key.

    Shared by the manifest and the gateway config. ``prepare`` may rewrite the raw mapping
    first (shorthands).
    """
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {_first_line(exc)}") from exc
    if not isinstance(raw, dict):
        raise error(f"{source}: expected a mapping of keys at the top level")
    if prepare is not None:
        prepare(raw)
    try:
        return msgspec.convert(raw, cls, str_keys=True)
    except msgspec.ValidationError as exc:
        raise error(f"{source}: {_readable(str(exc))}") from exc


def parse_manifest(text: str | bytes, *, source: str = "model.yaml") -> Manifest:
    """Parse and validate manifest text; ``source`` names the file in error messages."""
    manifest = decode_yaml(text, Manifest, source=source, error=ManifestError)
    _check_semantics(manifest, source)
    return manifest


def load_manifest(path: Path) -> Manifest:
    """Read ``path`` (a ``model.yaml``) and validate it."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"{path.parent.name}/{path.name}: cannot be read") from exc
    return parse_manifest(text, source=f"{path.parent.name}/{path.name}")


def dump_manifest(manifest: Manifest) -> str:
    """Render a manifest as YAML in a stable, readable key order, omitting empty sections."""
    data = {k: v for k, v in msgspec.to_builtins(manifest).items() if v != {}}
    if data.get("version_policy") == {"latest": 1}:
        del data["version_policy"]
    return yaml.dump(data, Dumper=_ManifestDumper, sort_keys=False, allow_unicode=True)


class _ManifestDumper(yaml.SafeDumper):
    """Writes shapes as ``[-1, 4]`` rather than one dimension per line."""


def _represent_list(dumper: yaml.SafeDumper, value: list[object]) -> yaml.Node:
    flow = all(isinstance(v, int | float | str) and not isinstance(v, bool) for v in value) and len(value) <= 8
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_ManifestDumper.add_representer(list, _represent_list)


def _readable(message: str) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.batching.max_batch_size`" (or
    # "- at `key` in `$.x`" for a bad mapping key); users think in keys, so lead with the key.
    text, sep, where = message.rpartition(" - at ")
    if not sep:
        return message
    where = where.replace("`key` in ", "")
    key = where.strip("`").removeprefix("$").lstrip(".") or "(top level)"
    return f"key {key!r}: {text}"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _check_semantics(m: Manifest, source: str) -> None:
    def fail(key: str, why: str) -> None:
        raise ManifestError(f"{source}: key {key!r}: {why}")

    if not MODEL_NAME_RE.match(m.name):
        fail("name", "must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    for group in ("inputs", "outputs"):
        seen: set[str] = set()
        for i, t in enumerate(getattr(m, group)):
            if t.datatype not in DATATYPES:
                fail(f"{group}[{i}].datatype", f"unknown datatype {t.datatype!r}")
            if any(d < -1 or d == 0 for d in t.shape):
                fail(f"{group}[{i}].shape", "dimensions are positive or -1 (variable)")
            if t.name in seen:
                fail(f"{group}[{i}].name", f"duplicate name {t.name!r}")
            seen.add(t.name)
            if m.batched and not t.shape:
                fail(f"{group}[{i}].shape", "batched models need a leading batch dimension")
    b = m.batching
    if b.max_batch_size < 0:
        fail("batching.max_batch_size", "must be >= 0")
    if b.max_queue_delay_us < 0:
        fail("batching.max_queue_delay_us", "must be >= 0")
    if b.max_queue_size < 1:
        fail("batching.max_queue_size", "must be >= 1")
    if b.max_timeout_ms < 1 or b.default_timeout_ms < 0:
        fail("batching.max_timeout_ms", "timeouts are positive milliseconds")
    if m.instances < 1:
        fail("instances", "must be >= 1")
    p = m.version_policy
    chosen = sum([p.latest is not None, p.all, p.specific is not None])
    if chosen != 1:
        fail("version_policy", "give exactly one of latest: N, all: true, specific: [..]")
    if p.latest is not None and p.latest < 1:
        fail("version_policy.latest", "must be >= 1")
    if p.specific is not None and (not p.specific or any(v < 1 for v in p.specific)):
        fail("version_policy.specific", "a non-empty list of positive version numbers")
    for rel in m.artifacts:
        parts = Path(rel).parts
        versioned = m.unversioned or (parts and parts[0].isdigit())
        if Path(rel).is_absolute() or ".." in parts or not parts or not versioned:
            fail(f"artifacts.{rel}", "paths are relative to the model folder, e.g. 1/model.onnx")
