"""A fake Kubernetes API server: apps/v1 Deployments and StatefulSets and their ``scale`` subresource,
in memory, answering in the documented shapes and checking each request against them.

What it checks (a violation goes to ``errors``, which tests assert empty, and gets the API's answer):
- a bearer token on every request (else 401 with a ``Status`` body);
- only the paths ``/apis/apps/v1/namespaces/{ns}/{deployments|statefulsets}/{name}[/scale]``, with
  GET and PATCH on the workload and GET, PATCH and PUT on ``scale``;
- a workload PATCH is ``application/strategic-merge-patch+json`` (or ``merge-patch+json``) whose body
  touches nothing but ``spec.template.metadata.annotations`` (what ``kubectl rollout restart`` sends);
- a scale PUT is an ``autoscaling/v1`` ``Scale`` naming the object, with ``spec.replicas``; a
  ``resourceVersion`` in it must be the current one (else 409, as the API server answers);
- ``dryRun`` is only ever ``All``, and with it nothing changes (the answer shows what would be);
- query parameters are only ``dryRun``, ``fieldManager``, ``fieldValidation`` and ``pretty``.
The Role: ``roles`` maps each namespace to the verbs allowed there (get, patch, update); anything else
is 403 with a ``Status`` body worded like the API server's. An unknown workload is 404.
Status bodies go out as exactly ``application/json``, as the API server sends them (lightkube turns
only those into its ApiError).
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

TOKEN = "fake-kube-token-0123456789"
SERVICE_ACCOUNT = "system:serviceaccount:observability:agentic-observability"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
_PATH = re.compile(
    r"^/apis/apps/v1/namespaces/(?P<ns>[^/]+)/(?P<plural>deployments|statefulsets)/(?P<name>[^/]+)"
    r"(?P<scale>/scale)?$"
)
_KINDS = {"deployments": "Deployment", "statefulsets": "StatefulSet"}
_PATCH_TYPES = ("application/strategic-merge-patch+json", "application/merge-patch+json")
_QUERY = {"dryRun", "fieldManager", "fieldValidation", "pretty"}
_VERBS = {"GET": "get", "PATCH": "patch", "PUT": "update"}


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any
    authorization: str


class FakeKube:
    def __init__(self, roles: dict[str, set[str]] | None = None, token: str = TOKEN) -> None:
        self.roles = roles if roles is not None else {"shop": {"get", "patch", "update"}}
        self.token = token
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (plural, namespace, name)
        self.requests: list[Recorded] = []
        self.errors: list[str] = []
        self.fail_next: list[tuple[str, int]] = []  # (method, status): answered instead, once each
        self.delay = 0.0
        self._version = 100

    # -- what tests set up and look at -------------------------------------------------------------

    def add(
        self,
        kind: str,
        namespace: str,
        name: str,
        replicas: int = 2,
        annotations: dict[str, str] | None = None,
    ) -> None:
        plural = {v: k for k, v in _KINDS.items()}[kind]
        labels = {"app": name}
        self.objects[(plural, namespace, name)] = {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"uid-{namespace}-{name}",
                "resourceVersion": self._next_version(),
                "generation": 1,
                "labels": labels,
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                **({"serviceName": name} if kind == "StatefulSet" else {}),
                "template": {
                    "metadata": {"labels": labels, "annotations": dict(annotations or {})},
                    "spec": {"containers": [{"name": name, "image": f"example/{name}:1.0"}]},
                },
            },
            "status": {"replicas": replicas, "readyReplicas": replicas, "observedGeneration": 1},
        }

    def workload(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        plural = {v: k for k, v in _KINDS.items()}[kind]
        return self.objects[(plural, namespace, name)]

    def writes(self, method: str | None = None, dry_run: bool | None = None) -> list[Recorded]:
        """The PATCH and PUT requests (of ``method``; dry runs or real ones when ``dry_run`` says)."""
        return [
            r
            for r in self.requests
            if r.method in ("PATCH", "PUT")
            and (method is None or r.method == method)
            and (dry_run is None or ("dryRun" in r.query) == dry_run)
        ]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    # -- the API ------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "Unauthorized")
        failing = next((f for f in self.fail_next if f[0] == request.method), None)
        if failing is not None:
            self.fail_next.remove(failing)
            return _status(
                failing[1], "ServiceUnavailable", "the server is currently unable to handle the request"
            )
        if self.delay:
            await asyncio.sleep(self.delay)
        found = _PATH.match(request.path)
        problem = self._request_problem(request, found)
        if problem is not None:
            self.errors.append(f"{request.method} {request.path_qs}: {problem}")
            return _status(400, "BadRequest", problem)
        assert found is not None
        ns, plural, name, scale = found["ns"], found["plural"], found["name"], bool(found["scale"])
        resource = f"{plural}/scale" if scale else plural
        verb = _VERBS[request.method]
        if verb not in self.roles.get(ns, set()):
            message = (
                f'{plural}.apps "{name}" is forbidden: User "{SERVICE_ACCOUNT}" cannot {verb} resource '
                f'"{resource}" in API group "apps" in the namespace "{ns}"'
            )
            return _status(403, "Forbidden", message, {"name": name, "group": "apps", "kind": resource})
        stored = self.objects.get((plural, ns, name))
        if stored is None:
            return _status(
                404,
                "NotFound",
                f'{plural}.apps "{name}" not found',
                {"name": name, "group": "apps", "kind": plural},
            )
        dry_run = request.query.get("dryRun") == "All"
        if scale:
            return self._scale(request, stored, body, dry_run)
        if request.method == "GET":
            return _json(stored)
        return self._patch_workload(request, stored, body, dry_run)

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                dict(request.query),
                request.content_type,
                body,
                request.headers.get("Authorization", ""),
            )
        )
        return body

    def _request_problem(self, request: web.Request, found: re.Match[str] | None) -> str | None:
        if found is None:
            return "not a path of this API (apps/v1 deployments or statefulsets, and their scale)"
        allowed = ("GET", "PATCH", "PUT") if found["scale"] else ("GET", "PATCH")
        if request.method not in allowed:
            return f"method {request.method} is not used here (allowed: {', '.join(allowed)})"
        unknown = set(request.query) - _QUERY
        if unknown:
            return f"unknown query parameters {sorted(unknown)}"
        if "dryRun" in request.query and request.query["dryRun"] != "All":
            return f"dryRun must be All, not {request.query['dryRun']!r}"
        if request.method == "PATCH" and request.content_type not in _PATCH_TYPES:
            return f"a PATCH here is a strategic-merge or merge patch, not {request.content_type!r}"
        if request.method == "PUT" and request.content_type != "application/json":
            return f"a PUT sends application/json, not {request.content_type!r}"
        return None

    def _patch_workload(
        self, request: web.Request, stored: dict[str, Any], body: Any, dry_run: bool
    ) -> web.Response:
        annotations = _only_template_annotations(body)
        if annotations is None:
            self.errors.append(f"PATCH {request.path}: the body touches more than the template annotations")
            return _status(422, "Invalid", "this fake accepts only spec.template.metadata.annotations")
        updated = copy.deepcopy(stored)
        template = updated["spec"]["template"]["metadata"]
        if {**template["annotations"], **annotations} != template["annotations"]:
            template["annotations"].update(annotations)
            updated["metadata"]["generation"] += 1  # a template change: a new rollout
            updated["metadata"]["resourceVersion"] = self._next_version()
        if not dry_run:
            stored.clear()
            stored.update(updated)
        return _json(updated)

    def _scale(self, request: web.Request, stored: dict[str, Any], body: Any, dry_run: bool) -> web.Response:
        current = _scale_object(stored)
        if request.method == "GET":
            return _json(current)
        replicas = self._replicas_in(request, stored, body)
        if isinstance(replicas, web.Response):
            return replicas
        updated = copy.deepcopy(stored)
        if replicas != updated["spec"]["replicas"]:
            updated["spec"]["replicas"] = replicas
            updated["metadata"]["resourceVersion"] = self._next_version()
        if not dry_run:
            stored.clear()
            stored.update(updated)
        return _json(_scale_object(updated))

    def _replicas_in(self, request: web.Request, stored: dict[str, Any], body: Any) -> int | web.Response:
        name, ns = stored["metadata"]["name"], stored["metadata"]["namespace"]
        problem = _scale_body_problem(request.method, body, name, ns)
        if problem is not None:
            self.errors.append(f"{request.method} {request.path}: {problem}")
            return _status(422, "Invalid", problem)
        version = (body.get("metadata") or {}).get("resourceVersion")
        if version is not None and version != stored["metadata"]["resourceVersion"]:
            message = (
                f'Operation cannot be fulfilled on {request.path.split("/")[6]}.apps "{name}": the object '
                "has been modified; please apply your changes to the latest version and try again"
            )
            return _status(409, "Conflict", message)
        return int(body["spec"]["replicas"])

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)


def _only_template_annotations(body: Any) -> dict[str, str] | None:
    """The annotations of a patch that touches nothing else, or None."""
    if not isinstance(body, dict) or set(body) != {"spec"}:
        return None
    spec = body["spec"]
    if not isinstance(spec, dict) or set(spec) != {"template"}:
        return None
    template = spec["template"]
    if not isinstance(template, dict) or set(template) != {"metadata"}:
        return None
    metadata = template["metadata"]
    if not isinstance(metadata, dict) or set(metadata) != {"annotations"}:
        return None
    annotations = metadata["annotations"]
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        return None
    return annotations


def _scale_body_problem(method: str, body: Any, name: str, namespace: str) -> str | None:
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    if method == "PATCH":
        if set(body) != {"spec"} or set(body["spec"] or {}) != {"replicas"}:
            return "a scale patch sets spec.replicas and nothing else"
    else:
        if body.get("apiVersion") != "autoscaling/v1" or body.get("kind") != "Scale":
            return f"a scale PUT is an autoscaling/v1 Scale, not {body.get('apiVersion')}/{body.get('kind')}"
        if set(body) - {"apiVersion", "kind", "metadata", "spec", "status"}:
            return (
                f"unknown fields {sorted(set(body) - {'apiVersion', 'kind', 'metadata', 'spec', 'status'})}"
            )
        metadata = body.get("metadata") or {}
        if metadata.get("name") != name or metadata.get("namespace", namespace) != namespace:
            return (
                f"metadata names {metadata.get('namespace')}/{metadata.get('name')}, not {namespace}/{name}"
            )
    replicas = (body.get("spec") or {}).get("replicas")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        return f"spec.replicas must be a non-negative integer, not {replicas!r}"
    return None


def _scale_object(workload: dict[str, Any]) -> dict[str, Any]:
    metadata = workload["metadata"]
    labels = workload["spec"]["selector"]["matchLabels"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"],
        },
        "spec": {"replicas": workload["spec"]["replicas"]},
        "status": {
            "replicas": workload["status"]["replicas"],
            "selector": ",".join(f"{k}={v}" for k, v in labels.items()),
        },
    }


def _json(data: Any, status: int = 200) -> web.Response:
    # exactly application/json (no charset), as the API server sends it
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json")


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> web.Response:
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        status["details"] = details
    return _json(status, code)


def write_kubeconfig(path: Path, server: str, token: str = TOKEN, context: str = "fake") -> Path:
    """A kubeconfig with one cluster (``server``), one token user and one context, current."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server}}],
        "users": [{"name": f"{context}-user", "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": f"{context}-user"}}],
        "current-context": context,
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path
