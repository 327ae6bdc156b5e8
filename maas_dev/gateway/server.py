"""The local gateway: a loopback HTTP server that answers as the deployed REST API stage does.

For each request, in API Gateway's order: the stage prefix and the route (resource and method, ``{proxy+}``
greedy); the method's authorizer (identity sources required when its results are cached; the answer cached per
identity for its TTL; the policy evaluated against the method's ARN; refusals as the stage's gateway responses);
the usage plan of the key the authorizer named (or ``x-api-key``), with its throttles and its per-method throttles;
then the integration: a mock, a Lambda proxy invocation of the function's execution environment (a long-lived
process of its built bundle, :mod:`maas_dev.bundle_process`), or — for a STREAM integration of a web-adapter
function — the adapter's HTTP request to the function's server, its answer streamed to the client as it comes, and a
client that hangs up disconnecting the server. Not emulated: SigV4 (IAM) methods, request validators, quotas,
stage-wide throttling.
"""

from __future__ import annotations

import base64
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from maas_dev.gateway import adapter
from maas_dev.gateway.environments import Environments
from maas_dev.gateway.events import Request, authorizer_event, evaluate, gateway_response, method_arn, proxy_event
from maas_dev.gateway.handler import GatewayHandler
from maas_dev.gateway.stage import Authorizer, FunctionDef, Method, Stage
from maas_dev.lambda_bundle import BundleRunError


class Refusal(Exception):
    """Control flow: the request ends with one of the stage's gateway responses instead of its integration."""

    def __init__(self, kind: str, context: Mapping[str, Any] | None = None, message: str = "") -> None:
        super().__init__(kind)
        self.kind, self.context, self.message = kind, context, message


@dataclass
class Bucket:
    """A token bucket: ``rate`` requests a second, at most ``burst`` at once."""

    rate: float
    burst: int
    tokens: float = -1.0
    at: float = field(default_factory=time.monotonic)

    def ready(self) -> bool:
        """Refill for the time passed; whether a request may pass."""
        now = time.monotonic()
        self.tokens = self.burst if self.tokens < 0 else min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return self.tokens >= 1

    def take(self) -> bool:
        if not self.ready():
            return False
        self.tokens -= 1
        return True


class LocalGateway:
    """The stage's REST API on ``http://<host>:<port>/<stage>/``."""

    def __init__(
        self,
        stage: Stage,
        environments: Environments,
        usage_keys: Mapping[str, str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.stage, self.environments = stage, environments
        self.plan_of = {
            usage_keys[name]: plan for plan in stage.usage_plans for name in plan.key_names if name in usage_keys
        }
        self.buckets: dict[tuple[str, str], Bucket] = {}
        self.cache: dict[tuple[str, tuple[str, ...]], tuple[float, dict[str, Any]]] = {}
        self.authorizer_calls = 0
        self.disconnects: list[float] = []  # when a streaming client was seen gone (time.monotonic())
        self._lock = threading.Lock()
        handler = type("Handler", (GatewayHandler,), {"gateway": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/{self.stage.name}"

    def __enter__(self) -> LocalGateway:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.environments.close()

    # --- the request pipeline -------------------------------------------------------------------------------
    def route(self, request: Request) -> Method:
        """The method of the most specific resource matching the path (exact, else the longest ``{proxy+}``)."""
        resources: dict[str, list[Method]] = {}
        for method in self.stage.methods:
            prefix = method.path.removesuffix("{proxy+}")
            proxy = method.path.endswith("{proxy+}")
            if (not proxy and request.path == method.path) or (
                proxy and request.path.startswith(prefix) and len(request.path) > len(prefix)
            ):
                resources.setdefault(method.path, []).append(method)
        if resources:
            best = max(resources, key=lambda path: (not path.endswith("{proxy+}"), len(path)))
            for method in resources[best]:
                if method.http_method in (request.method, "ANY"):
                    return method
        raise Refusal("MISSING_AUTHENTICATION_TOKEN")  # API Gateway's answer to unknown paths and methods alike

    def authorize(self, method: Method, request: Request) -> tuple[dict[str, Any] | None, str | None]:
        """The authorizer context and usage key of an allowed request; raises :class:`Refusal` otherwise."""
        if method.authorization == "AWS_IAM":
            raise Refusal("MISSING_AUTHENTICATION_TOKEN")  # SigV4 is not emulated here
        authorizer = method.authorizer
        if authorizer is None:
            return None, request.header("x-api-key")
        answer = self.authorizer_answer(authorizer, method, request)
        if not evaluate(answer.get("policyDocument") or {}, method_arn(self.stage, request)):
            raise Refusal("ACCESS_DENIED", answer.get("context"))
        context = {**(answer.get("context") or {}), "principalId": answer.get("principalId")}
        key = answer.get("usageIdentifierKey") if self.stage.key_source == "AUTHORIZER" else request.header("x-api-key")
        return context, key

    def authorizer_answer(self, authorizer: Authorizer, method: Method, request: Request) -> dict[str, Any]:
        identity = tuple(_identity(source, request) for source in authorizer.identity_sources)
        if authorizer.ttl_s > 0 and (not identity or not all(identity)):
            raise Refusal("UNAUTHORIZED")  # a cached authorizer's identity sources are required
        key = (authorizer.logical_id, identity)
        with self._lock:
            cached = self.cache.get(key) if authorizer.ttl_s > 0 else None
        if cached and cached[0] > time.monotonic():
            return cached[1]
        event = authorizer_event(self.stage, request, method.path)
        with self._lock:
            self.authorizer_calls += 1
        environment = self.environments.process(authorizer.function)
        try:
            reply = environment.invoke(event)
        except BundleRunError as exc:
            raise Refusal("AUTHORIZER_CONFIGURATION_ERROR", message=str(exc)[:200]) from None
        if not reply["ok"]:
            if reply.get("errorMessage") == "Unauthorized":
                raise Refusal("UNAUTHORIZED")
            raise Refusal("AUTHORIZER_CONFIGURATION_ERROR", message=str(reply.get("errorMessage")))
        answer: dict[str, Any] = reply["response"]
        if authorizer.ttl_s > 0:
            with self._lock:
                self.cache[key] = (time.monotonic() + authorizer.ttl_s, answer)
        return answer

    def meter(self, method: Method, key: str | None) -> None:
        """The usage plan of ``key``: it must exist, and its throttles (plan, then method) must let the request in."""
        if not method.api_key_required:
            return
        plan = self.plan_of.get(key or "")
        if plan is None:
            raise Refusal("INVALID_API_KEY")
        method_key = f"{method.path}/{method.http_method}"
        limits = [("plan", (plan.rate, plan.burst))]
        if method_key in plan.method_throttles:
            limits.append((method_key, plan.method_throttles[method_key]))
        with self._lock:
            buckets = [self.buckets.setdefault((f"{key}:{plan.name}", name), Bucket(*limit)) for name, limit in limits]
            if not all(bucket.ready() for bucket in buckets):  # a throttled request takes no token of any limit
                raise Refusal("THROTTLED")
            for bucket in buckets:
                bucket.take()

    def handle(self, handler: GatewayHandler) -> None:
        parts = urllib.parse.urlsplit(handler.path)
        stage_prefix = f"/{self.stage.name}"
        body = handler.read_body()
        if not (parts.path == stage_prefix or parts.path.startswith(stage_prefix + "/")):
            handler.answer(*gateway_response(self.stage, "MISSING_AUTHENTICATION_TOKEN"))
            return
        request = Request(
            method=handler.command,
            path=parts.path[len(stage_prefix) :] or "/",
            query=urllib.parse.parse_qs(parts.query, keep_blank_values=True),
            headers=list(handler.headers.items()),
            body=body or b"",
            source_ip=handler.client_address[0],
        )
        try:
            if body is None:
                raise Refusal("REQUEST_TOO_LARGE")
            method = self.route(request)
            context, key = self.authorize(method, request)
            self.meter(method, key)
            self.integrate(method, request, context, key, handler)
        except Refusal as refusal:
            handler.answer(
                *gateway_response(self.stage, refusal.kind, context=refusal.context, message=refusal.message)
            )

    def integrate(
        self, method: Method, request: Request, context: dict[str, Any] | None, key: str | None, handler: GatewayHandler
    ) -> None:
        if method.integration == "MOCK":
            handler.answer(200, {"content-type": "application/json"}, (method.mock_body or "").encode())
            return
        if method.integration != "AWS_PROXY" or method.function is None:
            raise Refusal("INTEGRATION_FAILURE", message=f"{method.integration} integrations are not emulated")
        function = method.function
        event = proxy_event(self.stage, request, method.path, authorizer=context, api_key=key)
        with self.environments.lock(function):
            if function.web_adapter:
                self.stream(method, function, event, handler)
            else:
                self.invoke(method, function, event, handler)

    def invoke(self, method: Method, function: FunctionDef, event: dict[str, Any], handler: GatewayHandler) -> None:
        limit = min(method.timeout_s, function.timeout_s)
        started = time.monotonic()
        try:
            reply = self.environments.process(function).invoke(event, timeout_s=limit)
        except BundleRunError:
            timed_out = time.monotonic() - started >= method.timeout_s - 0.05
            raise Refusal("INTEGRATION_TIMEOUT" if timed_out else "INTEGRATION_FAILURE") from None
        if not reply["ok"]:
            raise Refusal("INTEGRATION_FAILURE", message=str(reply.get("errorMessage")))
        response = reply["response"]
        headers = {k.lower(): str(v) for k, v in (response.get("headers") or {}).items()}
        for name, values in (response.get("multiValueHeaders") or {}).items():
            headers[name.lower()] = ",".join(str(v) for v in values)
        body = response.get("body") or ""
        payload = base64.b64decode(body) if response.get("isBase64Encoded") else body.encode("utf-8")
        handler.answer(int(response.get("statusCode", 200)), headers, payload)

    def stream(self, method: Method, function: FunctionDef, event: dict[str, Any], handler: GatewayHandler) -> None:
        """The web adapter's invocation with response streaming: chunks reach the client as the server sends them."""
        try:
            server = self.environments.server(function)
        except BundleRunError as exc:
            raise Refusal("INTEGRATION_FAILURE", message=str(exc)[:200]) from None
        ends_at = time.monotonic() + function.timeout_s  # Lambda stops the invocation at the function's timeout
        arn = f"arn:aws:lambda:{self.stage.region}:{self.stage.account}:function:{function.name}"
        try:
            upstream = adapter.forward(
                server.port,
                event,
                deadline_s=adapter.lambda_deadline(function.timeout_s),
                function_arn=arn,
                timeout_s=method.timeout_s,
            )
        except TimeoutError:
            raise Refusal("INTEGRATION_TIMEOUT") from None
        except OSError as exc:
            raise Refusal("INTEGRATION_FAILURE", message=str(exc)) from None
        gone = threading.Event()

        def hang_up() -> None:
            if not gone.is_set():
                gone.set()
                with self._lock:
                    self.disconnects.append(time.monotonic())
                upstream.abort()

        def watch() -> None:  # API Gateway drops the invocation's stream as soon as its client goes away
            while not finished.wait(0.005):
                if handler.client_gone():
                    hang_up()
                    return

        finished = threading.Event()
        watcher = threading.Thread(target=watch, daemon=True)
        try:
            handler.start_chunked(upstream.status, upstream.headers)
            watcher.start()
            for piece in upstream.chunks():
                if gone.is_set() or not handler.send_chunk(piece):
                    hang_up()
                    return
                if time.monotonic() > ends_at:
                    break
            if not gone.is_set():
                handler.end_chunked()
        except OSError:
            hang_up()
        finally:
            finished.set()
            upstream.close()


def _identity(source: str, request: Request) -> str:
    if source.startswith("method.request.header."):
        return (request.header(source.removeprefix("method.request.header.")) or "").strip()
    if source.startswith("method.request.querystring."):
        values = request.query.get(source.removeprefix("method.request.querystring."), [""])
        return values[-1]
    return ""
