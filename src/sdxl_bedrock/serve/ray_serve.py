"""The same application on Ray Serve: `create_app(settings)` behind Ray's HTTP proxy, one model per replica.

Everything Ray lives here, and `ray` is imported only inside functions: the rest of the package never needs
it. Two entry points:

- `serve_with_ray(settings, scaling)`: what `sdxl-bedrock serve --ray` runs. It starts a local Ray (no
  dashboard, a few CPUs) unless `RAY_ADDRESS` names a cluster, deploys the app, prints the listening line
  once every replica has loaded its model, and on SIGTERM/SIGINT takes the app (and a Ray it started) down.
- `app_builder(args)`: an application builder for `serve run` and Serve config files
  (`import_path: sdxl_bedrock.serve.ray_serve:app_builder`, `args:` the Settings fields); see docs/SCALING.md.

With a model library (`--checkpoint-dir`), a request goes to a replica that holds its checkpoint already,
through Ray Serve's own model multiplexing: Ray's proxy hands every request to one light ingress deployment
(`SDXLBedrockRouting`, no model, no CPU reserved), which reads the checkpoint the request names
(api/routing.py, the wires' own resolution) and passes the request on through a deployment handle with
`multiplexed_model_id` set to that name; Ray routes it to a replica that reported the checkpoint
(`@serve.multiplexed`), else to one that holds the fewest. Ray's proxy routes before any of our code sees a
request, on a header our clients do not send, hence the ingress. Without a library every replica serves
the one checkpoint and Ray's proxy calls the replicas directly, as before.

A replica counts as started only once its model is loaded (the app's lifespan startup is held until then,
and fails when the load fails), so Ray routes nothing to a replica whose /ping would answer 429; after that
its `check_health` raises whenever the model is not loaded, and Ray replaces a replica that fails it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdxl_bedrock.config import Flag, Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from sdxl_bedrock.runtime import Runtime

APP_NAME = "sdxl-bedrock"
DEPLOYMENT_NAME = "SDXLBedrock"
ROUTING_NAME = "SDXLBedrockRouting"
REPLICA_HEADER = b"x-sdxl-replica"
# Beyond --shutdown-timeout (the replicas' own drain), how long Ray may take to remove the application
# before it is stopped all the same.
SHUTDOWN_MARGIN_S = 15.0


class Scaling(BaseModel):
    """How many replicas, what each one reserves, and (when min/max are given) how Ray autoscales them.

    The `serve --ray` flags are made from these fields (`--gpus-per-replica` for `gpus_per_replica`, with
    the description as help); a Serve config file says the same in its `deployments:` entry instead.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    replicas: Annotated[int, Flag(metavar="N")] = Field(
        default=1, description="replicas, one model each (with autoscaling: how many to start with)"
    )
    gpus_per_replica: Annotated[
        float | None, Flag(metavar="X", default_text="1 where Ray sees GPUs, else 0")
    ] = Field(default=None, description="GPUs each replica reserves (fractions share a GPU)")
    cpus_per_replica: Annotated[float, Flag(metavar="X")] = Field(
        default=1.0, description="CPUs each replica reserves"
    )
    # Autoscaling is on when min_replicas or max_replicas is given; `replicas` is then the initial count.
    min_replicas: Annotated[int | None, Flag(metavar="N", default_text="no autoscaling")] = Field(
        default=None, description="autoscale, down to N replicas"
    )
    max_replicas: Annotated[int | None, Flag(metavar="N", default_text="no autoscaling")] = Field(
        default=None, description="autoscale, up to N replicas"
    )
    target_ongoing_requests: Annotated[float | None, Flag(metavar="X", default_text="Ray Serve's")] = Field(
        default=None, description="autoscaling aims at this many requests in flight per replica"
    )
    # Past the batcher's batch size they wait in its queue.
    max_ongoing_requests: Annotated[int | None, Flag(metavar="N", default_text="twice --max-batch-size")] = (
        Field(default=None, description="requests Ray sends one replica at once")
    )

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None

    @property
    def fewest_replicas(self) -> int:
        if not self.autoscaling:
            return self.replicas
        return self.min_replicas if self.min_replicas is not None else 1

    @property
    def most_replicas(self) -> int:
        if not self.autoscaling:
            return self.replicas
        if self.max_replicas is not None:
            return self.max_replicas
        return max(self.fewest_replicas, self.replicas)

    @property
    def initial_replicas(self) -> int:
        """`replicas`, within what autoscaling allows."""
        return min(max(self.replicas, self.fewest_replicas), self.most_replicas)

    def with_gpus(self, device: str, cluster_gpus: float) -> Scaling:
        """`gpus_per_replica` settled: as given, else 1 where a replica may use CUDA and Ray has GPUs."""
        if self.gpus_per_replica is not None:
            return self
        return self.model_copy(
            update={"gpus_per_replica": 1.0 if device != "cpu" and cluster_gpus >= 1 else 0.0}
        )

    def check(self) -> None:
        if self.replicas < 1 and not self.autoscaling:
            raise ValueError("--replicas must be at least 1")
        if (self.gpus_per_replica or 0) < 0 or self.cpus_per_replica < 0:
            raise ValueError("--gpus-per-replica and --cpus-per-replica must not be negative")
        if self.min_replicas is not None and self.min_replicas < 0:
            raise ValueError("--min-replicas must not be negative")
        if self.autoscaling and (self.most_replicas < 1 or self.most_replicas < self.fewest_replicas):
            raise ValueError("--max-replicas must be at least 1 and at least --min-replicas")


def deployment_options(settings: Settings, scaling: Scaling) -> dict[str, Any]:
    """The options of the Serve deployment (the same keys a Serve config file's `deployments:` takes)."""
    actor: dict[str, Any] = {"num_cpus": scaling.cpus_per_replica}
    if scaling.gpus_per_replica:
        actor["num_gpus"] = scaling.gpus_per_replica
    options: dict[str, Any] = {
        "ray_actor_options": actor,
        # Ray holds up to this many requests on one replica; our batcher forms batches from them.
        "max_ongoing_requests": scaling.max_ongoing_requests or max(2 * settings.max_batch_size, 4),
        # A replica's own drain (answer accepted requests, refuse new ones) gets what --shutdown-timeout says.
        "graceful_shutdown_timeout_s": settings.shutdown_timeout_s,
        # A failed model load fails the deployment after a few tries instead of retrying for minutes.
        "max_constructor_retry_count": 3,
    }
    if scaling.autoscaling:
        autoscaling: dict[str, Any] = {
            "min_replicas": scaling.fewest_replicas,
            "max_replicas": scaling.most_replicas,
            "initial_replicas": scaling.initial_replicas,
        }
        if scaling.target_ongoing_requests is not None:
            autoscaling["target_ongoing_requests"] = scaling.target_ongoing_requests
        options["autoscaling_config"] = autoscaling
    else:
        options["num_replicas"] = scaling.replicas
    return options


class ReplicaHeaderMiddleware:
    """Name the replica that answered: `x-sdxl-replica: <Ray's replica id>` on every response."""

    def __init__(self, app: ASGIApp, replica_id: str) -> None:
        self.app = app
        self.replica_id = replica_id.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_replica(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (REPLICA_HEADER, self.replica_id)],
                }
            await send(message)

        await self.app(scope, receive, send_with_replica)


class ModelLoad:
    """The outcome of create_app's background load, as something a coroutine can wait for."""

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.error: BaseException | None = None

    def ready(self, runtime: Runtime) -> None:
        self.done.set()

    def failed(self, error: BaseException) -> None:
        self.error = error
        self.done.set()

    async def wait(self) -> None:
        await self.done.wait()
        if self.error is not None:
            raise RuntimeError(f"could not load the model: {self.error}") from self.error


def replica_app(settings: Settings, replica_id: str, verbose: bool = False) -> FastAPI:
    """create_app(settings) as one replica serves it: its lifespan startup ends when the model is loaded
    (Ray starts routing to a replica when its startup ends), and every answer names the replica."""
    from sdxl_bedrock.app import create_app
    from sdxl_bedrock.logs import configure_logging

    configure_logging(json_lines=settings.log_json, verbose=verbose)
    load = ModelLoad()
    app = create_app(settings, on_ready=load.ready, on_load_failed=load.failed)
    loading_in_background = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan_until_loaded(app: FastAPI) -> AsyncIterator[Any]:
        async with loading_in_background(app) as state:
            await load.wait()
            yield state

    app.router.lifespan_context = lifespan_until_loaded
    app.add_middleware(ReplicaHeaderMiddleware, replica_id=replica_id)
    return app


def checkpoints_per_replica(settings: Settings) -> int:
    """How many checkpoints one replica reports to Ray's multiplexing: those its CheckpointEngines keeps off
    the disk (on the device, then in host memory). Where --max-loaded-checkpoints is left to what fits on
    the GPU, that is only known once a model is loaded, after Ray has the number: it counts as 1."""
    return (settings.max_loaded_checkpoints or 1) + settings.max_host_checkpoints


# What a request's ASGI scope says that the replica's app reads; the rest (Ray's own entries) stays behind,
# and all of it must pickle to cross to the replica.
FORWARDED_SCOPE_KEYS = (
    "type",
    "asgi",
    "http_version",
    "method",
    "scheme",
    "path",
    "raw_path",
    "root_path",
    "query_string",
    "headers",
    "client",
    "server",
)


def forwarded_scope(scope: Scope) -> dict[str, Any]:
    return {key: scope[key] for key in FORWARDED_SCOPE_KEYS if key in scope}


async def read_whole_body(receive: Receive) -> bytes | None:
    """The request's body, or None where the client left before sending all of it."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class RoutingApp:
    """The ingress of a model library on Ray: reads which checkpoint a request names and hands the request,
    whole, to a replica of the model deployment through a handle whose `multiplexed_model_id` is that name.
    Its answer comes back as the replica's own ASGI messages, streamed (Bedrock's event streams included).

    Requests that name no checkpoint (lists, /ping, A1111 without override_settings) go to any replica,
    as Ray's proxy would send them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime: Runtime | None = None
        self.handle: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if scope["type"] != "http" or self.runtime is None:
            return
        from sdxl_bedrock.api.routing import checkpoint_of_request

        body = await read_whole_body(receive)
        if body is None:
            return
        checkpoint = await checkpoint_of_request(self.runtime, scope, body)
        handle = self.handle.options(stream=True)
        if checkpoint:
            handle = handle.options(multiplexed_model_id=checkpoint)
        answer = handle.forward.remote(forwarded_scope(scope), body)
        try:
            async for message in answer:
                await send(message)
        except BaseException:
            answer.cancel()  # the client left: the replica stops working on it
            raise
        if scope["path"].endswith("/refresh-checkpoints"):
            # The listing that names are resolved against follows the replica that re-read the folders.
            await self.runtime.refresh_library()

    async def lifespan(self, receive: Receive, send: Send) -> None:
        from ray import serve

        from sdxl_bedrock.runtime import Runtime

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    runtime = Runtime(self.settings)
                    await runtime.refresh_library()
                    app_name = serve.get_replica_context().app_name
                    self.handle = serve.get_deployment_handle(DEPLOYMENT_NAME, app_name=app_name)
                    self.runtime = runtime
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def current_replica_id() -> str:
    from ray import serve

    return str(serve.get_replica_context().replica_tag)


class ReplicaApp:
    """The ASGI app under Ray's ingress. It is pickled with the deployment and built on each replica at its
    first call (the lifespan startup), so that every replica makes its own `replica_app(settings)`."""

    def __init__(self, settings: Settings, verbose: bool = False) -> None:
        self.settings = settings
        self.verbose = verbose
        self.app: FastAPI | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is None:
            self.app = replica_app(self.settings, current_replica_id(), self.verbose)
        await self.app(scope, receive, send)

    async def forwarded(self, scope: dict[str, Any], body: bytes) -> AsyncIterator[Message]:
        """Serve a request that RoutingApp passed on: the app's ASGI messages, as it sends them. Closing the
        iterator early (the client left) tells the app the client disconnected, then cancels it."""
        assert self.app is not None, "the lifespan startup builds the app before any request"
        app = self.app
        sent: asyncio.Queue[Message | None] = asyncio.Queue()
        left = asyncio.Event()
        body_read = False

        async def receive() -> Message:
            nonlocal body_read
            if not body_read:
                body_read = True
                return {"type": "http.request", "body": body, "more_body": False}
            await left.wait()
            return {"type": "http.disconnect"}

        async def run() -> None:
            try:
                await app(scope, receive, sent.put)
            finally:
                await sent.put(None)

        task = asyncio.create_task(run())
        try:
            while (message := await sent.get()) is not None:
                yield message
            await task  # its exception, if it raised after its last message
        finally:
            if not task.done():
                left.set()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def check_loaded(self) -> None:
        """Raise unless the model is loaded and serving (what /ping answers 200 to)."""
        runtime: Runtime | None = None if self.app is None else self.app.state.runtime
        if runtime is not None and runtime.load_error is not None:
            raise RuntimeError(f"the model failed to load: {runtime.load_error}")
        if runtime is None or not runtime.ready.is_set():
            raise RuntimeError("the model is not loaded")


def build_application(settings: Settings, scaling: Scaling, verbose: bool = False) -> Any:
    """The bound Serve application: one deployment whose replicas each serve `replica_app(settings)`."""
    from ray import serve

    scaling.check()

    options = deployment_options(settings, scaling)
    if "max_constructor_retry_count" not in inspect.signature(serve.deployment).parameters:
        del options["max_constructor_retry_count"]  # an older Ray: its own retry count stands
    if not settings.checkpoint_dirs:

        @serve.ingress(ReplicaApp(settings, verbose))
        class SDXLBedrock:
            async def check_health(self) -> None:
                """Ray's health check, first run when the replica has started (so its model is loaded)."""
                self.app.check_loaded()  # type: ignore[attr-defined]

        return serve.deployment(name=DEPLOYMENT_NAME, **options)(SDXLBedrock).bind()

    # Ray takes one @serve.ingress an application: with the routing ingress in front, the model
    # deployment runs its app's lifespan itself (as Ray's ingress wrapper would, through uvicorn's).
    class SDXLBedrockLibrary:
        async def __init__(self) -> None:  # type: ignore[misc]
            from uvicorn import Config
            from uvicorn.lifespan.on import LifespanOn

            self.app = ReplicaApp(settings, verbose)
            config = Config(self.app, lifespan="on", log_level=None, log_config=None, access_log=False)
            self.lifespan = LifespanOn(config)
            await self.lifespan.startup()  # until the model is loaded, as replica_app holds it
            if self.lifespan.should_exit:
                raise RuntimeError("the replica's app did not start: its log says why")

        async def __del__(self) -> None:
            await self.lifespan.shutdown()  # Ray calls it once the replica's requests are answered

        async def check_health(self) -> None:
            self.app.check_loaded()

        @serve.multiplexed(max_num_models_per_replica=checkpoints_per_replica(settings))
        async def hold_checkpoint(self, name: str) -> str:
            # Only recorded, so that Ray routes this checkpoint's next requests here: the replica's
            # CheckpointEngines loads it when its rows first run, and keeps it by the same LRU rule and
            # count, so what Ray forgets (its own LRU) the engine has moved to disk too.
            return name

        async def forward(self, scope: dict[str, Any], body: bytes) -> AsyncIterator[Message]:
            """A request RoutingApp passed on, on the checkpoint Ray routed it here for."""
            checkpoint = serve.get_multiplexed_model_id()
            if checkpoint:
                await self.hold_checkpoint(checkpoint)
            async for message in self.app.forwarded(scope, body):
                yield message

    model = serve.deployment(name=DEPLOYMENT_NAME, **options)(SDXLBedrockLibrary)

    @serve.ingress(RoutingApp(settings))
    class SDXLBedrockRouting:
        def __init__(self, model: Any) -> None:
            self.model = model  # bound so that the model deployment is part of the application

    routing = serve.deployment(name=ROUTING_NAME, **routing_options(options, scaling))(SDXLBedrockRouting)
    return routing.bind(model.bind())


def routing_options(model_options: dict[str, Any], scaling: Scaling) -> dict[str, Any]:
    """The routing ingress: no CPU of its own (it parses bodies and passes bytes on), and room for as many
    requests as all the model replicas together take."""
    return {
        "num_replicas": 1,
        "ray_actor_options": {"num_cpus": 0},
        "max_ongoing_requests": model_options["max_ongoing_requests"] * max(scaling.most_replicas, 1),
        "graceful_shutdown_timeout_s": model_options["graceful_shutdown_timeout_s"],
    }


SETTINGS_FIELDS = Settings.model_fields


def settings_from_args(args: dict[str, Any]) -> Settings:
    """Settings from a Serve config file's `args:`, by field name, validated by the model the `serve` flags
    come from (so types, ranges and defaults are its own); a field the args leave out comes from its
    `SDXL_BEDROCK_*` variable where the builder runs, else its default.

    Raises ValueError for an unknown name (a `serve --ray` flag such as `replicas` belongs in the config's
    `deployments:` entry), and pydantic.ValidationError (a ValueError too) for a bad value.
    """
    unknown = sorted(set(args) - set(SETTINGS_FIELDS))
    if unknown:
        raise ValueError(f"unknown sdxl-bedrock settings in args: {', '.join(unknown)}")
    return Settings(**args)


def app_builder(args: dict[str, Any]) -> Any:
    """For `serve run sdxl_bedrock.serve.ray_serve:app_builder model=...` and Serve config files: `args` are
    Settings fields; replicas, resources and autoscaling come from the config's `deployments:` entry."""
    return build_application(settings_from_args(args), Scaling())


def serve_with_ray(settings: Settings, scaling: Scaling, verbose: bool = False) -> int:
    """Run the app on Ray Serve until SIGTERM/SIGINT; returns the process exit code.

    The first signal takes the app down gracefully (each replica finishes what it accepted, within
    --shutdown-timeout) and a second one stops at once; either way a Ray this process started is stopped
    with it, raylet and GCS included.
    """
    cluster = os.environ.get("RAY_ADDRESS") or None
    set_ray_environment(settings, local=cluster is None)
    try:
        import ray
        from ray import serve
    except ImportError as error:
        print(
            f"sdxl-bedrock: --ray needs Ray Serve: pip install 'sdxl-bedrock[ray]' ({error})", file=sys.stderr
        )
        return 2
    from sdxl_bedrock.logs import configure_logging

    configure_logging(json_lines=settings.log_json, verbose=verbose)
    try:
        scaling.check()
    except ValueError as error:
        print(f"sdxl-bedrock: {error}", file=sys.stderr, flush=True)
        return 2
    started = time.monotonic()
    stop_on_signals()
    try:
        start_ray(ray, cluster, scaling)
        stop_on_signals()  # again: ray.init installs a SIGTERM handler of its own
        if not verbose:
            logging.getLogger("ray.serve").setLevel(logging.WARNING)
        scaling = scaling.with_gpus(settings.device, ray.cluster_resources().get("GPU", 0))
        # Serve's own INFO lines and access log only with -v: the replicas log each request themselves.
        serve_logging = {"log_level": "INFO" if verbose else "WARNING", "enable_access_log": verbose}
        serve.start(http_options=http_options(settings), logging_config=serve_logging)
        application = build_application(settings, scaling, verbose)
        serve.run(application, name=APP_NAME, route_prefix="/", logging_config=serve_logging)
        print(
            f"sdxl-bedrock listening on {settings.scheme}://{settings.host}:{settings.port} "
            f"(model {settings.model}, {describe(scaling)} on Ray Serve, "
            f"ready in {time.monotonic() - started:.1f} s)",
            flush=True,
        )
        while True:
            time.sleep(3600)
    except StopRequested:
        print("sdxl-bedrock: shutting down, finishing accepted requests", file=sys.stderr, flush=True)
        return stop(ray, serve, timeout_s=settings.shutdown_timeout_s + SHUTDOWN_MARGIN_S)
    except Exception as error:
        print(f"sdxl-bedrock: could not serve on Ray: {error}", file=sys.stderr, flush=True)
        stop(ray, serve, timeout_s=SHUTDOWN_MARGIN_S)
        return 1


def set_ray_environment(settings: Settings, *, local: bool) -> None:
    """What Ray reads from the environment when it is imported and started; a value already set wins."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    # Only our own ray.init starts or joins a Ray: a Ray call racing ray.shutdown must not start another.
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    # The replicas' log lines (one per request, a failed load) reach this process's output, every one
    # (no "repeated 5x" folding), each prefixed by Ray with the replica's name and pid ...
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if settings.log_json:  # ... except where that prefix would break JSON lines
        os.environ.setdefault("RAY_DISABLE_WORKER_LOG_PREFIX", "1")
    if local:
        # Ray's own default for a Ray it starts (a token in ~/.ray), said here so that Ray does not warn.
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def start_ray(ray: Any, cluster: str | None, scaling: Scaling) -> None:
    """Join the cluster RAY_ADDRESS names, or start a Ray on this machine alone: no dashboard, node address
    127.0.0.1 (nothing needs a routable address), as many CPUs as the replicas reserve (GPUs as Ray finds
    them)."""
    if cluster is not None:
        ray.init(address=cluster, logging_level=logging.WARNING)
        return
    ray.init(
        address="local",
        include_dashboard=False,
        num_cpus=max(1, math.ceil(scaling.most_replicas * scaling.cpus_per_replica)),
        logging_level=logging.WARNING,
        _node_ip_address="127.0.0.1",
    )


class StopRequested(BaseException):
    """SIGTERM or SIGINT arrived. Not an Exception, like KeyboardInterrupt: code that catches Exception
    (Ray's start-up does) must not swallow it."""


def stop_on_signals() -> None:
    def raise_stop(signum: int, frame: FrameType | None) -> None:
        raise StopRequested(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, raise_stop)


def http_options(settings: Settings) -> dict[str, Any]:
    """Ray's HTTP proxy (HTTP/1.1 only) on --host/--port, with --tls-cert/--tls-key when given."""
    options: dict[str, Any] = {"host": settings.host, "port": settings.port}
    if settings.tls_cert is not None and settings.tls_key is not None:
        options.update(ssl_certfile=str(settings.tls_cert), ssl_keyfile=str(settings.tls_key))
    return options


def stop(ray: Any, serve: Any, *, timeout_s: float) -> int:
    """Take the app down within `timeout_s` (a second signal cuts it short), then stop the Ray this process
    started (raylet, GCS, every worker) or leave the cluster it joined."""

    def take_down() -> None:
        if not ray.is_initialized():
            return
        # Deleting the application (not Serve) keeps Ray's proxy up while each replica finishes the requests
        # it accepted, within --shutdown-timeout; the proxy sends nothing new to a stopping replica.
        try:
            serve.delete(APP_NAME)
        except Exception as error:  # no Serve yet, or a second signal stopped Ray meanwhile
            if ray.is_initialized():
                print(f"sdxl-bedrock: taking the app down: {error}", file=sys.stderr, flush=True)

    graceful = threading.Thread(target=take_down, name="serve-shutdown", daemon=True)
    graceful.start()
    code = 0
    try:
        graceful.join(timeout_s)
        if graceful.is_alive():
            print(f"sdxl-bedrock: Ray Serve did not stop in {timeout_s:g} s", file=sys.stderr, flush=True)
            code = 1
    except StopRequested:
        print("sdxl-bedrock: stopping now", file=sys.stderr, flush=True)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)  # ray.shutdown must run to its end: it stops raylet and GCS
    started_here = child_processes()
    ray.shutdown()
    end_processes(started_here, timeout_s=3)
    return code


def child_processes() -> list[Any]:
    """This process's descendants: for a Ray it started, raylet, GCS, their agents and the workers."""
    import psutil  # accelerate's dependency, so always here

    return list(psutil.Process().children(recursive=True))


def end_processes(processes: list[Any], timeout_s: float) -> None:
    """Wait for `processes` to exit, then end those left (a start-up cut short can leave Ray's agents)."""
    import psutil

    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(alive, timeout=timeout_s)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()


def describe(scaling: Scaling) -> str:
    if scaling.autoscaling:
        count = f"{scaling.fewest_replicas}..{scaling.most_replicas} replicas (autoscaling)"
    else:
        count = f"{scaling.replicas} replica{'s' if scaling.replicas != 1 else ''}"
    gpus = f", {scaling.gpus_per_replica:g} GPU each" if scaling.gpus_per_replica else ""
    return count + gpus
