"""Gateway configuration: the example and the docs parse; mistakes are named by key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pinnace.gateway.config import GatewayConfigError, load_config, parse_config, parse_size

ROOT = Path(__file__).resolve().parents[3]
MINIMAL = """
pools: {p: {upstreams: ["127.0.0.1:8001"]}}
routes: [{name: r, models: [m], pool: p}]
"""


def test_the_example_config_loads() -> None:
    config = load_config(ROOT / "examples" / "gateway" / "gateway.yaml")
    assert config.auth_required
    assert {r.name for r in config.routes} == {"iris", "mlp", "everything-else"}


def test_every_config_block_in_the_docs_loads() -> None:
    text = (ROOT / "docs" / "gateway.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) >= 5
    for block in blocks:
        parse_config(block if "routes:" in block else MINIMAL + block, source="docs")


def test_defaults_are_sane() -> None:
    config = parse_config(MINIMAL)
    pool = config.pools["p"]
    assert (pool.balancer, pool.outlier.consecutive_failures, pool.outlier.base_ejection_s,
            pool.outlier.max_ejection_percent) == ("p2c", 5, 30.0, 10.0)
    assert config.routes[0].retry.budget_percent == 20.0
    assert not config.auth_required


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL + "bogus: 1", "bogus"),
        ("pools: {p: {upstreams: ['127.0.0.1:8001']}}\n"
         "routes: [{name: r, models: [m], pool: q}]", "routes[0].pool"),
        ("pools: {p: {upstreams: ['nohost']}}\nroutes: [{name: r, models: [m], pool: p}]",
         "pools.p.upstreams[0].address"),
        ("pools: {p: {upstreams: ['127.0.0.1:1'], breaker: {max_pending: 'x'}}}\n"
         "routes: [{name: r, models: [m], pool: p}]", "breaker.max_pending"),
        (MINIMAL.replace("[m]", "[m, m]"), "already routed"),
        (MINIMAL + "keys: [{name: k, sha256: abc}]", "keys[0].sha256"),
        (MINIMAL + "keys: [{name: k, sha256: '" + "a" * 64 + "', scopes: [root]}]",
         "unknown scope"),
        (MINIMAL.replace("pool: p}", "pool: p, fallback: {deadline_s: 1}}"),
         "exactly one of model or response"),
        (MINIMAL.replace("pool: p}", "pool: p, split: {targets: [{model: m, weight: 0}]}}"),
         "weights"),
        ("pools: [", "not valid YAML"),
        (MINIMAL + "auth: {required: true}", "no keys"),
    ],
)
def test_mistakes_name_the_key(text: str, message: str) -> None:
    with pytest.raises(GatewayConfigError, match=re.escape(message)):
        parse_config(text, source="gw.yaml")


def test_load_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(GatewayConfigError, match=r"missing\.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_sizes() -> None:
    assert parse_size("8MiB") == 8 << 20
    assert parse_size("1KB") == 1000
    assert parse_size(17) == 17
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")
