"""docs/operations.md lists every metric and access log field; the Grafana dashboard queries
only metrics the server exposes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pinnace.core.stats import RequestRecord
from pinnace.observability.access import ACCESS_LOGGER, AccessLog
from pinnace.observability.payloads import PayloadLogger
from pinnace.observability.setup import build_observability
from pinnace.settings import ServerSettings
from tests.unit.observability.conftest import in_process, iris_body

DOCS = Path(__file__).resolve().parents[3] / "docs"
OPERATIONS = (DOCS / "operations.md").read_text()


def exposed_samples(repo: Path, tmp_path: Path) -> set[str]:
    """Sample names a server with every feature on exposes after some traffic."""
    manifest = repo / "iris" / "model.yaml"
    manifest.write_text(manifest.read_text() + "payload_log: {sample: 1.0}\n")
    obs = build_observability(
        ServerSettings(repository=repo, payload_log=str(tmp_path / "payloads"))
    )

    async def main() -> str:
        async with in_process(repo, obs) as server:
            await server.client.post("/v2/models/iris/infer", json=iris_body())
            await asyncio.sleep(0)  # batch statistics land in the loop step after the answer
            assert isinstance(obs.payloads, PayloadLogger)
            obs.payloads.flush()  # written records are counted by the writer thread
            return (await server.client.get("/metrics")).text

    text = asyncio.run(main())
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def family_of(sample: str) -> str:
    return re.sub(r"_(bucket|sum|count|created)$", "", sample)


def test_every_exposed_metric_is_documented(iris_repo: Path, tmp_path: Path) -> None:
    families = {family_of(name) for name in exposed_samples(iris_repo, tmp_path)}
    families.discard("pinnace_model_memory_bytes")  # no built-in runtime reports it yet
    undocumented = sorted(f for f in families if f"`{f}`" not in OPERATIONS)
    assert not undocumented
    assert "`pinnace_model_memory_bytes`" in OPERATIONS


def test_every_access_log_field_is_documented() -> None:
    stream = io.StringIO()
    access = AccessLog("json", stream=stream, interval_s=3600)
    logger = logging.getLogger(ACCESS_LOGGER)
    saved = logger.level
    logger.setLevel(logging.INFO)
    try:
        access.add("rest", "/v2", "m", "1", 200, 0.1, None, RequestRecord("m", "1"))
        access.flush()
    finally:
        logger.setLevel(saved)
        access.close()
    fields = json.loads(stream.getvalue())
    assert len(fields) == 19
    section = OPERATIONS.split("### Access log", 1)[1].split("## Payload logging", 1)[0]
    assert not [field for field in fields if f"`{field}`" not in section]


def test_the_dashboard_queries_only_exposed_metrics(iris_repo: Path, tmp_path: Path) -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 15
    used = {m for expr in exprs for m in re.findall(r"\b(?:pinnace|process)_[a-z_]+", expr)}
    exposed = exposed_samples(iris_repo, tmp_path) | {"pinnace_model_memory_bytes"}
    assert used and not sorted(used - exposed)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
