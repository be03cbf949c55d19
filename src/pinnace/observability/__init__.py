"""Metrics, logs and traces: handed into the server and the gateway, never imported globally.

``setup`` builds everything a server process uses from its settings. The parts:
``metrics`` (Prometheus, recorded on the event loop, exposed at scrape time), ``access`` (one
line per request, written by a background thread), ``payloads`` (opt-in sampled request and
response logging), ``tracing`` (OpenTelemetry, imported only when on), ``listener`` (the hooks
the transports and the batcher call), ``logging`` (JSON or text lines, levels per module) and
``background`` (the bounded hand-off from the event loop to a writer thread).
"""
