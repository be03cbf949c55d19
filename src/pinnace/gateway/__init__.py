"""The pinnace API gateway: one front door for many model servers.

Auth and quotas, model-aware routing, load balancing, deadlines, retries, circuit breaking,
outlier ejection, fallback models, canary and shadow traffic, over the same Open Inference
Protocol REST API as the server. See docs/gateway.md.
"""

from __future__ import annotations

from pinnace.gateway.app import Gateway, build_app, run_gateway
from pinnace.gateway.auth import hash_key, new_key
from pinnace.gateway.config import GatewayConfig, GatewayConfigError, load_config, parse_config

__all__ = [
    "Gateway",
    "GatewayConfig",
    "GatewayConfigError",
    "build_app",
    "hash_key",
    "load_config",
    "new_key",
    "parse_config",
    "run_gateway",
]
