"""The Kubernetes manifests (deploy/kubernetes): every overlay renders with `kubectl
kustomize` and validates offline against the API schemas of kubectl's Kubernetes version
(strict: an unknown field fails), then holds what the kit promises of it: probes,
resources, drain times, budgets, autoscaling, who may reach Redis and PostgreSQL, a
REDIS_URLS that names the shards the StatefulSet runs, in order, the project's image in
every container that runs the project (kustomize's `images:` names it), the static files
in every nginx pod, and the worker tiers' channels from the ConfigMap.

No cluster runs here: these are checks of the rendered objects, not of a deployment.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
OVERLAYS = sorted(path.name for path in (KUBERNETES / "overlays").iterdir() if path.is_dir())
WORKLOADS = ("Deployment", "StatefulSet")
# The image each overlay runs the project with: the kit's demo build, or a project's own
# (overlays/example-project names it with kustomize's images transformer).
APP_IMAGES = {"example-project": "registry.example.com/mysite:v2"}
# (workload, container) that run the project's image, in every mode; Daphne's in direct mode.
APP_CONTAINERS = {
    ("migrate", "migrate"),
    ("worker", "wait-for-migrations"),
    ("worker", "worker"),
    ("worker-slow", "wait-for-migrations"),
    ("worker-slow", "worker"),
    ("nginx", "static"),
}
DIRECT_APP_CONTAINERS = {("daphne", "wait-for-migrations"), ("daphne", "daphne")}
# Overlays without a slow channel (components/no-slow-worker): no worker-slow.
WITHOUT_SLOW_WORKER = {"example-project"}
# The Secret's keys (deploy/kubernetes/secret), each mounted as a file by the pods that need it.
SECRET_KEYS = {
    "django_secret_key",
    "postgres_password",
    "demo_password",
    "redis_admin_password",
    "redis_worker_password",
    "redis_relay_password",
}

assert shutil.which("kubectl"), "these tests render the manifests with kubectl (with its kustomize)"


@cache
def kubernetes_version() -> str:
    """kubectl's own minor version (``1.32``): the cluster version it is made for."""
    out = subprocess.run(["kubectl", "version", "--client", "-o", "json"], check=True, capture_output=True)
    client = json.loads(out.stdout)["clientVersion"]
    return f"{client['major']}.{re.sub(r'[^0-9]', '', client['minor'])}"


@cache
def render(overlay: str) -> tuple[dict, ...]:
    return render_directory(KUBERNETES / "overlays" / overlay)


def render_directory(directory: Path) -> tuple[dict, ...]:
    out = subprocess.run(["kubectl", "kustomize", str(directory)], check=True, capture_output=True)
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def app_image(overlay: str) -> str:
    return APP_IMAGES.get(overlay, "channels-kit/app:dev")


def is_direct(overlay: str) -> bool:
    return not overlay.startswith("relay")


def objects(overlay: str, kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in render(overlay) if doc["kind"] == kind}


def containers(workload: dict) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def config(overlay: str) -> dict[str, str]:
    (configmap,) = [doc for doc in render(overlay) if doc["kind"] == "ConfigMap"]
    return configmap["data"]


def test_there_are_overlays_for_both_modes_and_the_shard_count():
    assert {"direct", "relay", "relay-4-shards", "example-project"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(overlay):
    version = kubernetes_version()
    kinds = set()
    for doc in render(overlay):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(
                f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {error.message} at {error.path}"
            )
        kinds.add(doc["kind"])
    expected = {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Ingress",
        "Job",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
        "StatefulSet",
    }
    assert kinds == expected, kinds ^ expected


def test_the_validator_refuses_an_unknown_field():
    """The check above can fail: a misspelt field is refused in strict mode."""
    (daphne,) = [
        doc for doc in render("relay") if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "daphne"
    ]
    broken = json.loads(json.dumps(daphne))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_version(), strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_a_memory_limit_and_runs_unprivileged(overlay):
    """Least privilege: no root, no capability, no privilege escalation, the runtime's seccomp
    profile, a read-only root file system and no service account token, in every pod."""
    for kind in (*WORKLOADS, "Job"):
        for name, workload in objects(overlay, kind).items():
            pod = workload["spec"]["template"]["spec"]
            assert pod["automountServiceAccountToken"] is False, name
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            assert pod["securityContext"]["runAsUser"] > 0, name
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
            for container in containers(workload):
                where = (name, container["name"])
                resources = container.get("resources", {})
                assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
                assert "memory" in resources.get("limits", {}), where
                context = container["securityContext"]
                assert context["allowPrivilegeEscalation"] is False, where
                assert context["readOnlyRootFilesystem"] is True, where
                assert context["capabilities"] == {"drop": ["ALL"]}, where
                assert "privileged" not in context and "add" not in context["capabilities"], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_files_never_environment_variables(overlay):
    """Each pod mounts only the Secret's keys it needs, as files; no container takes a secret
    into its environment (where `kubectl describe` and crash dumps show it)."""
    relay = not is_direct(overlay)
    needs = {
        "redis": {"redis_admin_password", "redis_worker_password", "redis_relay_password"},
        "db": {"postgres_password"},
        "migrate": {"django_secret_key", "postgres_password", "demo_password"},
        "worker": {"django_secret_key", "postgres_password", "redis_worker_password"},
        "worker-slow": {"django_secret_key", "postgres_password", "redis_worker_password"},
        "daphne": {"redis_relay_password"}
        if relay
        else {"django_secret_key", "postgres_password", "redis_worker_password"},
        "nginx": set(),
    }
    for kind in (*WORKLOADS, "Job"):
        for name, workload in objects(overlay, kind).items():
            pod = workload["spec"]["template"]["spec"]
            mounted = {
                item["key"]
                for volume in pod.get("volumes", [])
                if "secret" in volume
                for item in volume["secret"]["items"]
            }
            assert mounted == needs[name], (name, mounted ^ needs[name])
            for volume in pod.get("volumes", []):
                if "secret" in volume:
                    assert volume["secret"]["secretName"] == "channels-kit"
                    assert volume["secret"]["defaultMode"] == 0o440, name
            for container in containers(workload):
                for item in container.get("env", []) + container.get("envFrom", []):
                    assert "secretKeyRef" not in item.get("valueFrom", {}), (name, item)
                    assert "secretRef" not in item, (name, item)
                for variable, item in env_of(container).items():
                    if variable.endswith("_FILE"):
                        assert item["value"].removeprefix("/run/secrets/") in mounted, (name, variable)
                        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
                        assert "/run/secrets" in mounts, (name, container["name"])
    (daphne,) = objects(overlay, "Deployment")["daphne"]["spec"]["template"]["spec"]["containers"]
    assert env_of(daphne)["REDIS_USERNAME"]["value"] == ("relay" if relay else "worker")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_long_running_container_has_liveness_and_readiness_probes(overlay):
    for kind in WORKLOADS:
        for name, workload in objects(overlay, kind).items():
            for container in workload["spec"]["template"]["spec"]["containers"]:
                assert "livenessProbe" in container and "readinessProbe" in container, (
                    name,
                    container["name"],
                )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_periods_cover_the_drains(overlay):
    deployments = objects(overlay, "Deployment")
    daphne = deployments["daphne"]
    spec = daphne["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(env_of(container)["DAPHNE_DRAIN_SECONDS"]["value"])
    # preStop, then SIGTERM: stop listening, close sockets over the drain, exit.
    assert spec["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + drain + 10
    assert daphne["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    nginx = deployments["nginx"]["spec"]["template"]["spec"]
    shutdown = float(env_of(nginx["containers"][0])["NGINX_SHUTDOWN_TIMEOUT"]["value"].rstrip("s"))
    pre_stop = nginx["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert nginx["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + shutdown + 5
    for name in ("worker", "worker-slow"):
        if name not in deployments and overlay in WITHOUT_SLOW_WORKER:
            continue
        spec = deployments[name]["spec"]["template"]["spec"]
        grace = float(env_of(spec["containers"][0])["WORKER_GRACE_PERIOD_SECONDS"]["value"])
        assert spec["terminationGracePeriodSeconds"] >= grace + 5, name
        assert deployments[name]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_budgets_and_autoscaling_cover_the_tiers(overlay):
    budgets = {
        doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for doc in objects(overlay, "PodDisruptionBudget").values()
    }
    assert {"daphne", "worker", "nginx", "redis"} <= budgets
    (hpa,) = objects(overlay, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"}
    assert 1 < hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def pod_labels(workload: dict) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions with In) selects ``labels``."""
    matched = all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        matched = matched and labels.get(expression["key"]) in expression["values"]
    return matched


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_kits_pods_reach_redis_and_postgres_and_nothing_else_is_published(overlay):
    policies = objects(overlay, "NetworkPolicy").values()
    workloads = {name: doc for kind in (*WORKLOADS, "Job") for name, doc in objects(overlay, kind).items()}
    namespaces = {doc["metadata"].get("namespace") for doc in render(overlay)}
    assert len(namespaces) == 1 and None not in namespaces, namespaces
    (namespace,) = namespaces
    for guarded, port in (("redis", 6379), ("db", 5432)):
        (policy,) = [p for p in policies if selects(p["spec"]["podSelector"], pod_labels(workloads[guarded]))]
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        (rule,) = policy["spec"]["ingress"]
        assert [p["port"] for p in rule["ports"]] == [port]
        # Each source names the namespace by the label the API server sets (no pod can set
        # it), the objects' own namespace, and the pods by name: not a label any pod may carry.
        for source in rule["from"]:
            assert source["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            assert set(source) == {"namespaceSelector", "podSelector"}, source
        allowed = [source["podSelector"] for source in rule["from"]]
        # Every pod of the kit that talks to them is let in, or the site would not work; nginx,
        # the one facing the internet, is not, nor is a pod with only the kit's common label.
        for name in ("daphne", "worker", "worker-slow", "migrate"):
            if name not in workloads and overlay in WITHOUT_SLOW_WORKER:
                continue
            assert any(selects(source, pod_labels(workloads[name])) for source in allowed), (guarded, name)
        for labels in (pod_labels(workloads["nginx"]), {"app.kubernetes.io/part-of": "channels-kit"}):
            assert not any(selects(source, labels) for source in allowed), (guarded, labels)
    for service in objects(overlay, "Service").values():
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]["name"]
    (ingress,) = objects(overlay, "Ingress").values()
    backends = {
        path["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == {"nginx"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_urls_name_the_statefulsets_shards_in_order(overlay):
    redis = objects(overlay, "StatefulSet")["redis"]
    urls = config(overlay)["REDIS_URLS"].split(",")
    service = redis["spec"]["serviceName"]
    hosts = [re.match(r"redis://([^:/]+)", url).group(1) for url in urls]
    assert hosts == [f"redis-{i}.{service}" for i in range(redis["spec"]["replicas"])]
    assert objects(overlay, "Service")[service]["spec"]["clusterIP"] == "None"
    assert len(urls) == (4 if "4-shards" in overlay else 2)


def test_relay_daphne_runs_the_relay_image_without_the_projects_secrets():
    for overlay in OVERLAYS:
        (container,) = objects(overlay, "Deployment")["daphne"]["spec"]["template"]["spec"]["containers"]
        secrets = {
            name for name, item in env_of(container).items() if "secretKeyRef" in item.get("valueFrom", {})
        }
        files = {name for name in env_of(container) if name.endswith("_FILE")}
        assert not secrets, secrets  # files only (test_secrets_are_files_never_environment_variables)
        if overlay.startswith("relay"):
            assert config(overlay)["ASGI_MODE"] == "relay"
            assert container["image"].startswith("channels-kit/relay:") and container["args"] == ["relay"]
            assert files == {"REDIS_PASSWORD_FILE"}
            assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
        else:
            assert config(overlay)["ASGI_MODE"] == "direct"
            assert container["image"] == app_image(overlay) and container["args"] == ["daphne"]
            assert {"DJANGO_SECRET_KEY_FILE", "POSTGRES_PASSWORD_FILE", "REDIS_PASSWORD_FILE"} <= files
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_every_setting_the_manifests_pass_is_documented_in_env_example():
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.M))
    # Read by the images' own entrypoints (PostgreSQL's, redis-cli), or set per service as
    # compose.yaml does (SERVER_ROLE; nginx's STATIC_URL_PATH, which compose derives from
    # PROJECT_STATIC_URL): not settings of the user's.
    # DEMO_PASSWORD_FILE: the demo's DEMO_PASSWORD from a file (the images' entrypoints).
    images_own = {"PGDATA", "SERVER_ROLE", "STATIC_URL_PATH", "DEMO_PASSWORD_FILE"}
    for overlay in OVERLAYS:
        names = set(config(overlay))
        for kind in (*WORKLOADS, "Job"):
            for workload in objects(overlay, kind).values():
                for container in containers(workload):
                    names |= set(env_of(container))
        assert names - documented - images_own == set(), overlay


def test_scripts_kubernetes_secret_makes_the_secret_every_manifest_refers_to(tmp_path):
    env = tmp_path / ".env"
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    values = {key: f"{key}-value" for key in SECRET_KEYS}
    for key, value in values.items():
        (secrets / key).write_text(value)
    env.write_text(f"SECRETS_DIR={secrets}\nDJANGO_DEBUG=false\n")
    script = [str(REPO / "deploy" / "kubernetes" / "secret"), str(env)]
    clean = {k: v for k, v in os.environ.items() if k != "SECRETS_DIR"}
    out = subprocess.run(script, check=True, capture_output=True, env=clean)
    secret = yaml.safe_load(out.stdout)
    kubernetes_validate.validate(secret, kubernetes_version(), strict=True)
    assert secret["metadata"]["name"] == "channels-kit"
    assert {key: base64.b64decode(value).decode() for key, value in secret["data"].items()} == values
    for overlay in OVERLAYS:
        for kind in (*WORKLOADS, "Job"):
            for workload in objects(overlay, kind).values():
                for volume in workload["spec"]["template"]["spec"].get("volumes", []):
                    if "secret" in volume:
                        assert {item["key"] for item in volume["secret"]["items"]} <= set(values), volume
    (secrets / "postgres_password").unlink()
    refused = subprocess.run(script, capture_output=True, text=True, env=clean)
    assert refused.returncode != 0 and "the secret postgres_password is not in" in refused.stderr


def app_containers(overlay: str) -> dict[tuple[str, str], dict]:
    """(workload, container) -> container, of every Deployment, StatefulSet and Job."""
    found = {}
    for kind in (*WORKLOADS, "Job"):
        for name, workload in objects(overlay, kind).items():
            for container in containers(workload):
                found[(name, container["name"])] = container
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_projects_image_runs_in_every_container_that_runs_the_project(overlay):
    expected = APP_CONTAINERS | (DIRECT_APP_CONTAINERS if is_direct(overlay) else set())
    if overlay in WITHOUT_SLOW_WORKER:
        expected = {pair for pair in expected if pair[0] != "worker-slow"}
    running = {pair for pair, c in app_containers(overlay).items() if c["image"] == app_image(overlay)}
    assert running == expected, running ^ expected


@pytest.mark.parametrize("base", ["direct", "relay"])
def test_kustomize_images_names_the_projects_image_as_the_docs_say(tmp_path, base):
    """The snippet of docs/several-machines.md: an overlay of one's own, beside no kit file,
    naming the project's image once; every container that runs the project gets it."""
    overlay = tmp_path / "mysite"
    overlay.mkdir()
    kit = os.path.relpath(KUBERNETES / "overlays" / base, overlay)
    overlay.joinpath("kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{kit}]\n"
        "images:\n  - {name: channels-kit/app, newName: registry.example.com/mysite, newTag: v2}\n"
    )
    docs = (REPO / "docs" / "several-machines.md").read_text()
    assert "{name: channels-kit/app, newName: registry.example.com/mysite, newTag: v2}" in docs
    images: dict[tuple[str, str], str] = {}
    for doc in render_directory(overlay):
        if doc["kind"] in (*WORKLOADS, "Job"):
            for container in containers(doc):
                images[(doc["metadata"]["name"], container["name"])] = container["image"]
    expected = APP_CONTAINERS | (DIRECT_APP_CONTAINERS if base == "direct" else set())
    assert {pair for pair, image in images.items() if image == "registry.example.com/mysite:v2"} == expected
    assert not any(image.startswith("channels-kit/app") for image in images.values()), images


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_nginx_pod_serves_the_static_files_of_the_projects_image(overlay):
    pod = objects(overlay, "Deployment")["nginx"]["spec"]["template"]["spec"]
    (static,) = pod["initContainers"]
    (nginx,) = pod["containers"]
    assert static["image"] == app_image(overlay)
    # The image's STATIC_ROOT (images/app/Dockerfile), copied as it is; the entrypoint is skipped.
    assert static["command"] == ["cp", "-R", "/app/static/.", "/srv/static/"]
    dockerfile = (REPO / "images" / "app" / "Dockerfile").read_text()
    assert "STATIC_ROOT=/app/static" in dockerfile
    (volume,) = [volume for volume in pod["volumes"] if volume["name"] == "static"]
    assert volume == {"name": volume["name"], "emptyDir": {}}
    assert static["volumeMounts"] == [{"name": volume["name"], "mountPath": "/srv/static"}]
    assert nginx["volumeMounts"][0] == {"name": volume["name"], "mountPath": "/srv/static", "readOnly": True}
    assert env_of(nginx)["STATIC_URL_PATH"]["value"] == "/static/"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_worker_tiers_take_their_channels_from_the_configmap(overlay):
    deployments = objects(overlay, "Deployment")
    (configmap,) = objects(overlay, "ConfigMap")
    tiers = {"worker": "WORKER_EXCLUDE_CHANNELS", "worker-slow": "WORKER_ONLY_CHANNELS"}
    if overlay in WITHOUT_SLOW_WORKER:
        assert "worker-slow" not in deployments
        assert config(overlay)["SLOW_CHANNELS"] == ""  # worker serves every channel
        del tiers["worker-slow"]
    else:
        assert config(overlay)["SLOW_CHANNELS"] == "thumbnail"  # the demo's
    for name, variable in tiers.items():
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["worker"], name  # no channel flag: the environment's
        ref = env_of(container)[variable]["valueFrom"]["configMapKeyRef"]
        assert ref == {"name": configmap, "key": "SLOW_CHANNELS"}, name
