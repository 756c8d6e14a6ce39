"""Prometheus metrics, in one place: every counter and histogram the server exports at /metrics."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)
TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8)


class Metrics:
    """One set per app, on its own registry (so tests and several apps in one process don't collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sdxl_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "sdxl_request_seconds",
            "Time from request to response start, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait_seconds = Histogram(
            "sdxl_queue_wait_seconds",
            "Time a request waited in the queue before it joined the running batch",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge("sdxl_queue_depth", "Requests waiting to join", registry=self.registry)
        self.rows_per_tick = Histogram(
            "sdxl_rows_per_tick",
            "Requests (rows) sharing one UNet call",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.tick_seconds = Histogram(
            "sdxl_tick_seconds",
            "Engine time per tick (one UNet call and its rows' sampler steps)",
            buckets=TICK_BUCKETS,
            registry=self.registry,
        )
        self.images = Counter(
            "sdxl_images", "Images made, by finish reason", ["finish_reason"], registry=self.registry
        )
        self.engine_failures = Counter(
            "sdxl_engine_failures",
            "Times the engine loop itself failed (its requests got ModelError) and was started again",
            registry=self.registry,
        )
        self.stage_retries = Counter(
            "sdxl_stage_retries",
            "Group calls of a stage run again after a failure, by stage (join, tick, finish, png) and reason "
            "(out_of_memory: in halves; error: row by row)",
            ["stage", "reason"],
            registry=self.registry,
        )
        self.rows_failed = Counter(
            "sdxl_rows_failed",
            "Rows (images) that failed alone, by stage and error type",
            ["stage", "error"],
            registry=self.registry,
        )
        self.row_cap = Gauge(
            "sdxl_row_cap",
            "The most rows a tick at this image size takes now (lowered after out-of-memory, grows back); "
            "sizes with no cap below --max-batch-size are not listed",
            ["size"],
            registry=self.registry,
        )
        self.checkpoint_move_seconds = Histogram(
            "sdxl_checkpoint_move_seconds",
            "Time a checkpoint took to move, by where to: disk-device (a load), device (back from host "
            "memory), host (off the device), disk (dropped)",
            ["checkpoint", "to"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.checkpoint_moving = Gauge(
            "sdxl_checkpoint_moving",
            "1 while a checkpoint is being moved or loaded (rows wait for it), else 0",
            registry=self.registry,
        )
        self.checkpoints_resident = Gauge(
            "sdxl_checkpoints_resident",
            "Checkpoints held in memory, by where: device or host",
            ["where"],
            registry=self.registry,
        )
        self.lora_load_seconds = Histogram(
            "sdxl_lora_load_seconds",
            "Time an adapter's first use took before its row could join, by stage: read (the file into "
            "host memory, off the engine thread) or inject (into a checkpoint's models, on the engine "
            "thread)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.loras_resident = Gauge(
            "sdxl_loras_resident",
            "LoRA adapters loaded into checkpoints' models, by where: device or host",
            ["where"],
            registry=self.registry,
        )
        self.faults_injected = Counter(
            "sdxl_faults_injected",
            "Faults SDXL_BEDROCK_FAULTS injected (a testing aid), by stage and kind",
            ["stage", "kind"],
            registry=self.registry,
        )
        self.abandoned = Counter(
            "sdxl_abandoned_requests",
            "Requests dropped because their caller had gone (disconnect, timeout), by stage: queued, running",
            ["stage"],
            registry=self.registry,
        )
        self.open_connections = Gauge(
            "sdxl_open_connections",
            "Client connections open (at most --max-connections)",
            registry=self.registry,
        )
        self.connections_refused = Counter(
            "sdxl_connections_refused",
            "Connections refused because --max-connections were open",
            registry=self.registry,
        )
        self.connections_timed_out = Counter(
            "sdxl_connections_timed_out",
            "Connections closed because their first bytes (or TLS handshake) missed --idle-timeout",
            registry=self.registry,
        )
        self.gpu_memory_bytes = Gauge(
            "sdxl_gpu_memory_allocated_bytes", "GPU memory held by torch", registry=self.registry
        )

    def export_unet_calls(self, calls: Mapping[str, int]) -> None:
        """`calls` (the engine's own count of UNet calls by path) read at each scrape."""
        self.registry.register(UNetCallsCollector(calls))

    def export_non_finite(self, counts: Mapping[str, int]) -> None:
        """`counts` (the engine's own count of non-finite images by outcome) read at each scrape."""
        self.registry.register(NonFiniteCollector(counts))


class UNetCallsCollector(Collector):
    def __init__(self, calls: Mapping[str, int]) -> None:
        self.calls = calls

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "sdxl_unet_calls",
            "UNet calls by path: compiled (a warmed-up shape) or eager (any other shape)",
            labels=["path"],
        )
        for path in ("compiled", "eager"):
            family.add_metric([path], self.calls.get(path, 0))
        yield family


class NonFiniteCollector(Collector):
    OUTCOMES = ("redecoded", "failed")

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "sdxl_non_finite_images",
            "Images whose decode held NaN or infinity, by outcome: redecoded (the VAE again in float32 made "
            "a finite image) or failed (the row failed alone)",
            labels=["outcome"],
        )
        for outcome in self.OUTCOMES:
            family.add_metric([outcome], self.counts.get(outcome, 0))
        yield family
