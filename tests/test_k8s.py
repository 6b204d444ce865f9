"""The Kubernetes manifests in deploy/k8s/, checked offline.

The core objects against the Kubernetes 1.30 OpenAPI schemas bundled by kubernetes-validate,
in strict mode (an unknown or misspelt field fails); the KEDA objects, which those schemas
lack, against KEDA 2.x's documented shape; and all of them against the application: the
keys they reference exist, the settings load, the probes hit routes the app serves, the
grace periods cover the drain, the spool is on a persistent volume.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, cast

import kubernetes_validate
import pytest
import yaml

from callback_sink.ingress.app import create_app
from callback_sink.sink.settings import Settings
from callback_sink.sink.topology import Topology
from callback_sink.worker.consumer import Worker
from callback_sink.worker.probes import create_probe_app

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30"
KEDA_API = "keda.sh/v1alpha1"
#: Seconds a pod needs beyond the drain delay and the shutdown time-out (closing the spool,
#: the drainer's last batch, the broker connection).
GRACE_MARGIN = 10
#: The benchmark's resident memory: about 50 MiB per process; ingress = parent + 2 children.
INGRESS_MEMORY_REQUEST_MIB = 150

# KEDA 2.x's documented fields (keda.sh: "ScaledObject specification", "RabbitMQ Queue"
# scaler, "TriggerAuthentication"): anything else is a typo KEDA would reject or ignore.
SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
SCALE_TARGET_REF = {"apiVersion", "kind", "name", "envSourceContainerName"}
ADVANCED = {"restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig", "scalingModifiers"}
TRIGGER = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
RABBITMQ_METADATA = {
    "host",
    "hostFromEnv",
    "usernameFromEnv",
    "passwordFromEnv",
    "protocol",
    "mode",
    "value",
    "activationValue",
    "queueName",
    "vhostName",
    "useRegex",
    "excludeUnacknowledged",
    "operation",
    "pageSize",
    "timeout",
    "unsafeSsl",
}
SECRET_TARGET_REF = {"parameter", "name", "key"}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


DOCS = _documents()
CORE = [(f, d) for f, d in DOCS if not d["apiVersion"].startswith(("keda.sh/", "kustomize."))]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in DOCS if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _workloads() -> list[dict[str, Any]]:
    return [_one("StatefulSet"), _one("Deployment")]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return cast(dict[str, Any], containers[0])


def _config() -> dict[str, str]:
    return cast(dict[str, str], _one("ConfigMap")["data"])


def _secret() -> dict[str, str]:
    return cast(dict[str, str], _one("Secret")["stringData"])


def _mib(quantity: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([KMGT]i)?", quantity).groups()  # type: ignore[union-attr]
    return float(number) * {None: 2**-20, "Ki": 2**-10, "Mi": 1, "Gi": 2**10, "Ti": 2**20}[unit]


@pytest.mark.parametrize(("file", "doc"), CORE, ids=[f"{f}:{d['kind']}" for f, d in CORE])
def test_core_objects_validate_against_the_kubernetes_schemas_in_strict_mode(
    file: str, doc: dict[str, Any]
) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_strict_validation_catches_a_misspelt_field() -> None:
    broken = copy.deepcopy(_one("StatefulSet"))
    _container(broken)["readinesProbe"] = _container(broken).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest_except_the_example_secret() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests - {"secret.example.yaml"}
    images = {image["name"] for image in kustomization["images"]}
    for workload in _workloads():
        assert _container(workload)["image"].split(":")[0] in images


def test_the_example_secret_holds_only_marked_placeholders() -> None:
    assert _secret(), "the example Secret is empty"
    for key, value in _secret().items():
        assert "PLACEHOLDER" in value, f"{key} does not look like a placeholder"
    assert "EXAMPLE ONLY" in (K8S / "secret.example.yaml").read_text()


def test_every_reference_names_a_key_of_the_example_secret_or_configmap() -> None:
    secret, config = _one("Secret"), _one("ConfigMap")
    for workload in _workloads():
        container = _container(workload)
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] == config["metadata"]["name"]
        for var in container.get("env", []):
            ref = var["valueFrom"]
            if "secretKeyRef" in ref:
                assert ref["secretKeyRef"]["name"] == secret["metadata"]["name"]
                assert ref["secretKeyRef"]["key"] in _secret(), var["name"]
            else:
                assert ref["configMapKeyRef"]["key"] in _config(), var["name"]


def test_the_settings_load_from_the_configmap_and_the_example_secret() -> None:
    known = {f"SINK_{name.upper()}" for name in Settings.__dataclass_fields__}
    assert set(_config()) <= known, f"unknown settings: {set(_config()) - known}"
    settings = Settings.from_env({**_config(), **_secret()})
    assert settings.secrets and settings.dedup_url.startswith("redis://")
    # The image's user owns the spool directory the ConfigMap points at.
    assert settings.spool_dir == "/var/lib/callback-sink/spool"


def _probe_paths(container: dict[str, Any]) -> dict[str, tuple[str, int]]:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probes = {}
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[kind]["httpGet"]
        probes[kind] = (get["path"], ports[get["port"]])
    return probes


def _routes(app: Any) -> set[str]:
    return {resource.canonical for resource in app.router.resources()}


def test_the_probes_hit_paths_and_ports_the_app_serves(tmp_path: Path) -> None:
    settings = Settings.from_env({**_config(), **_secret(), "SINK_SPOOL_DIR": str(tmp_path)})
    ingress = _probe_paths(_container(_one("StatefulSet")))
    assert ingress["readinessProbe"] == ("/readyz", settings.port)
    assert ingress["livenessProbe"] == ("/healthz", settings.port)
    assert {path for path, _ in ingress.values()} <= _routes(create_app(settings))
    worker = _probe_paths(_container(_one("Deployment")))
    assert worker["readinessProbe"] == ("/readyz", settings.worker_port)
    assert worker["livenessProbe"] == ("/healthz", settings.worker_port)
    assert {path for path, _ in worker.values()} <= _routes(
        create_probe_app(cast(Worker, object()))
    )
    # kubelet probes from outside the container: loopback would never answer them.
    assert settings.host == settings.worker_host == "0.0.0.0"


def test_grace_periods_cover_the_drain_delay_and_the_shutdown_time() -> None:
    settings = Settings.from_env({**_config(), **_secret()})
    ingress, worker = _workloads()
    needed = settings.drain_delay + settings.shutdown_timeout + GRACE_MARGIN
    assert ingress["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= needed
    needed = settings.shutdown_timeout + GRACE_MARGIN
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= needed
    # A drain delay long enough for endpoints to drop the pod, and readiness probed faster.
    readiness = _container(ingress)["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= settings.drain_delay


def test_the_ingress_spool_is_on_a_persistent_volume_of_each_pod() -> None:
    settings = Settings.from_env({**_config(), **_secret()})
    ingress = _one("StatefulSet")
    claims = {c["metadata"]["name"]: c for c in ingress["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in _container(ingress)["volumeMounts"]}
    claim = claims[mounts[settings.spool_dir]]
    assert mounts[settings.spool_dir] not in {
        v["name"] for v in ingress["spec"]["template"]["spec"].get("volumes", [])
    }, "the spool must not be an emptyDir or any other pod volume"
    spool_mib = settings.ingress_processes * settings.spool_max_bytes / 2**20
    assert _mib(claim["spec"]["resources"]["requests"]["storage"]) > spool_mib
    retention = ingress["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert retention == {"whenDeleted": "Retain", "whenScaled": "Retain"}


def test_resources_follow_the_benchmark_memory() -> None:
    for workload in _workloads():
        resources = _container(workload)["resources"]
        request = _mib(resources["requests"]["memory"])
        assert _mib(resources["limits"]["memory"]) >= 2 * request
    ingress = _container(_one("StatefulSet"))["resources"]
    assert _mib(ingress["requests"]["memory"]) >= INGRESS_MEMORY_REQUEST_MIB


def test_services_and_budgets_select_their_pods() -> None:
    for workload in _workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
        budgets = [
            d for _, d in DOCS
            if d["kind"] == "PodDisruptionBudget"
            and d["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]  # fmt: skip
        assert len(budgets) == 1, workload["metadata"]["name"]
    ingress = _one("StatefulSet")
    for service in (d for _, d in DOCS if d["kind"] == "Service"):
        assert service["spec"]["selector"] == ingress["spec"]["selector"]["matchLabels"]
        assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http"}
    assert _one("Service", ingress["spec"]["serviceName"])["spec"]["clusterIP"] == "None"


def test_pods_run_as_the_images_unprivileged_user() -> None:
    dockerfile = (K8S.parent / "Dockerfile").read_text()
    user = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)[-1]
    for workload in _workloads():
        pod = workload["spec"]["template"]["spec"]
        context = pod["securityContext"]
        assert (str(context["runAsUser"]), str(context["runAsGroup"])) == user
        assert context["runAsNonRoot"] is True
        assert _container(workload)["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["automountServiceAccountToken"] is False


def test_the_scaled_object_has_kedas_documented_shape() -> None:
    scaled = _one("ScaledObject")
    assert scaled["apiVersion"] == KEDA_API
    spec = scaled["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC, set(spec) - SCALED_OBJECT_SPEC
    target = spec["scaleTargetRef"]
    assert set(target) <= SCALE_TARGET_REF
    assert target.get("kind", "Deployment") == "Deployment"
    worker = _one("Deployment", target["name"])
    assert spec["minReplicaCount"] <= worker["spec"]["replicas"] <= spec["maxReplicaCount"]
    assert spec["minReplicaCount"] >= 2, "one worker stopping must not stop handling"
    assert set(spec["advanced"]) <= ADVANCED
    # The HPA behaviour KEDA passes through is Kubernetes' own: validate it as such.
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "check"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
            "maxReplicas": spec["maxReplicaCount"],
            **spec["advanced"]["horizontalPodAutoscalerConfig"],
        },
    }
    kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)


def test_the_rabbitmq_trigger_watches_the_work_queue_with_credentials_from_the_secret() -> None:
    (trigger,) = _one("ScaledObject")["spec"]["triggers"]
    assert set(trigger) <= TRIGGER
    assert trigger["type"] == "rabbitmq"
    metadata = trigger["metadata"]
    assert set(metadata) <= RABBITMQ_METADATA, set(metadata) - RABBITMQ_METADATA
    assert all(isinstance(value, str) for value in metadata.values()), "metadata are strings"
    prefix = _config()["SINK_TOPOLOGY_PREFIX"]
    assert metadata["queueName"] == Topology(prefix).work_queue == f"{prefix}.work"
    assert metadata["mode"] in ("QueueLength", "MessageRate")
    assert float(metadata["value"]) > 0
    assert metadata["protocol"] == "amqp"
    assert "host" not in metadata, "credentials belong in the TriggerAuthentication"
    auth = _one("TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["apiVersion"] == KEDA_API
    assert set(auth["spec"]) == {"secretTargetRef"}
    (ref,) = auth["spec"]["secretTargetRef"]
    assert set(ref) == SECRET_TARGET_REF and ref["parameter"] == "host"
    assert ref["name"] == _one("Secret")["metadata"]["name"]
    assert _secret()[ref["key"]].startswith("amqp")
