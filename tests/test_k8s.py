"""The Kubernetes manifests in deploy/k8s/, checked offline.

The core objects against the Kubernetes 1.30 OpenAPI schemas bundled by kubernetes-validate,
in strict mode (an unknown or misspelt field fails); the KEDA objects, which those schemas
lack, against KEDA 2.x's documented shape; and all of them against the application: the
keys they reference exist, the settings load, the probes hit routes the app serves, the
grace periods cover the drain, the spool is on a persistent volume.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, cast

import kubernetes_validate
import pytest
import yaml

from callback_sink.environment import SOURCES
from callback_sink.handlers.registry import load
from callback_sink.ingress.app import create_app
from callback_sink.service import CHILD_STOP_MARGIN
from callback_sink.shutdown import (
    chain_seconds,
    ingress_steps,
    ingress_stop_seconds,
    worker_stop_seconds,
)
from callback_sink.sink.setting import setting_of
from callback_sink.sink.settings import Settings
from callback_sink.sink.topology import Topology
from callback_sink.worker.consumer import Worker
from callback_sink.worker.probes import create_probe_app

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30"
KEDA_API = "keda.sh/v1alpha1"
#: Beyond a worker's worst-case stop: its @on_shutdown hooks, which nothing bounds.
HOOKS_MARGIN = 10
#: Beyond the supervisor's kill time-out: the parent's own exit.
PARENT_EXIT = 5
#: Measured idle: 219 MiB resident summed over parent + 2 children (178 MiB PSS), plus room.
INGRESS_MEMORY_REQUEST_MIB = 256

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
#: Names of variables whose value is a secret: never a literal in a manifest.
SECRET_WORDS = re.compile(r"SECRET|PASSWORD|TOKEN|AMQP_URL|DEDUP_URL|APPS$", re.I)


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


def test_the_kustomization_lists_every_manifest_except_the_examples() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    examples = {name for name in manifests if name.endswith(".example.yaml")}
    assert examples == {"secret.example.yaml", "networkpolicy.example.yaml"}
    assert set(kustomization["resources"]) == manifests - examples
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
            if "value" in var:  # a literal: never a secret (see the next test)
                continue
            ref = var["valueFrom"]
            if "secretKeyRef" in ref:
                assert ref["secretKeyRef"]["name"] == secret["metadata"]["name"]
                assert ref["secretKeyRef"]["key"] in _secret(), var["name"]
            else:
                assert ref["configMapKeyRef"]["key"] in _config(), var["name"]


def _file_settings() -> dict[str, str]:
    """``SINK_*`` variables that have a ``*_FILE`` variant (a setting declared with a file
    reader, e.g. SINK_SECRETS, SINK_APPS, SINK_EASEMOB_CLIENT_SECRET)."""
    found = {}
    for cls, prefix in SOURCES:
        for f in fields(cls):
            if setting_of(f).file is not None:
                found[f"{prefix}{f.name.upper()}"] = f"{prefix}{f.name.upper()}_FILE"
    return found


def _secret_files(workload: dict[str, Any]) -> dict[str, str]:
    """Path → key of the Secret, for every file a container mounts from the Secret."""
    pod = workload["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in _container(workload).get("volumeMounts", [])}
    files = {}
    for volume in pod.get("volumes", []):
        if "secret" in volume and volume["name"] in mounts:
            assert volume["secret"]["secretName"] == _one("Secret")["metadata"]["name"]
            for item in volume["secret"]["items"]:
                files[f"{mounts[volume['name']]}/{item['path']}"] = item["key"]
    return files


def test_secrets_with_a_file_variant_are_mounted_as_files_not_passed_in_the_environment() -> None:
    variants = _file_settings()
    assert {"SINK_SECRETS", "SINK_APPS", "SINK_EASEMOB_CLIENT_SECRET"} <= set(variants)
    for workload in _workloads():
        env = _container(workload).get("env", [])
        from_secret = {v["name"] for v in env if "secretKeyRef" in v.get("valueFrom", {})}
        assert not from_secret & set(variants), "mount it, and set its _FILE variable"
        files = _secret_files(workload)
        literals = {v["name"]: v["value"] for v in env if "value" in v}
        for name, value in literals.items():
            if name.endswith("_FILE"):
                # The file holds the Secret's key of the same setting.
                assert files.get(value) == name.removesuffix("_FILE"), name
                assert name in variants.values(), name
            else:
                assert not SECRET_WORDS.search(name), f"{name} is a literal secret"
    ingress = {v["name"] for v in _container(_one("StatefulSet"))["env"]}
    assert "SINK_SECRETS_FILE" in ingress


def test_the_ingress_loads_its_secrets_from_the_mounted_file(tmp_path: Path) -> None:
    [(path, key)] = _secret_files(_one("StatefulSet")).items()
    mounted = tmp_path / Path(path).name
    mounted.write_text(_secret()[key] + "\n")
    env = {k: v for k, v in _secret().items() if k != key}
    settings = Settings.from_env({**_config(), **env, f"{key}_FILE": str(mounted)})
    assert settings.secrets == (_secret()[key],)


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


def _settings_of(workload: dict[str, Any]) -> Settings:
    """What a workload's container runs with: its own literal env over the ConfigMap over the
    declared defaults (secret values from the example Secret)."""
    env = {v["name"]: v["value"] for v in _container(workload).get("env", []) if "value" in v}
    return Settings.from_env({**_config(), **_secret(), **env})


def _grace(workload: dict[str, Any]) -> int:
    return cast(int, workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])


def test_grace_periods_cover_each_process_worst_case_stop() -> None:
    ingress, worker = _workloads()
    settings = _settings_of(ingress)
    # The supervisor kills a child still running CHILD_STOP_MARGIN after its worst case.
    assert _grace(ingress) >= ingress_stop_seconds(settings) + CHILD_STOP_MARGIN + PARENT_EXIT
    assert _grace(worker) >= worker_stop_seconds(_settings_of(worker)) + HOOKS_MARGIN
    # A drain delay long enough for endpoints to drop the pod, and readiness probed faster.
    readiness = _container(ingress)["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= settings.drain_delay


def test_one_callbacks_handlers_finish_within_the_workers_shutdown_time() -> None:
    settings = _settings_of(_one("Deployment"))
    handlers = load(settings.handlers, use_entry_points=False).handlers
    assert chain_seconds(settings, handlers) <= settings.shutdown_timeout


def test_the_ingress_stop_sum_is_what_the_manifest_comment_says() -> None:
    settings = _settings_of(_one("StatefulSet"))
    total = ingress_stop_seconds(settings)
    assert total == sum(step.seconds for step in ingress_steps(settings)) == 65
    assert f"= {total:g} s" in (K8S / "ingress.yaml").read_text()


def _compose_env(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment, each ``${VAR:-default}`` read as its default."""
    env = {k: str(v) for k, v in service.get("environment", {}).items()}
    return {k: re.sub(r"\$\{[A-Z_]+:[-?]([^}]*)\}", r"\1", v) for k, v in env.items()}


def test_compose_stop_grace_periods_cover_the_same_sums() -> None:
    compose = yaml.safe_load((K8S.parent / "compose.yaml").read_text())["services"]
    secret = {"SINK_SECRETS": "placeholder-secret-of-32-characters"}
    ingress = Settings.from_env({**_compose_env(compose["ingress"]), **secret})
    worker = Settings.from_env(_compose_env(compose["worker"]))

    def grace(name: str) -> float:
        return float(re.fullmatch(r"(\d+)s", compose[name]["stop_grace_period"])[1])  # type: ignore[index]

    assert grace("ingress") >= ingress_stop_seconds(ingress) + CHILD_STOP_MARGIN + PARENT_EXIT
    assert grace("worker") >= worker_stop_seconds(worker) + HOOKS_MARGIN
    handlers = load(worker.handlers, use_entry_points=False).handlers
    assert chain_seconds(worker, handlers) <= worker.shutdown_timeout


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


def test_the_example_network_policies_open_the_ports_the_pods_name() -> None:
    policies = {d["metadata"]["name"]: d for f, d in DOCS if d["kind"] == "NetworkPolicy"}
    for workload in _workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        selects = [p["spec"]["podSelector"]["matchLabels"] for p in policies.values()]
        [policy] = [p for p, s in zip(policies.values(), selects, strict=True)
                    if s.items() <= labels.items()]  # fmt: skip
        ports = {p["name"] for p in _container(workload)["ports"]}
        opened = {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
        assert opened == ports, workload["metadata"]["name"]


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


# --- deploy/k8s/monitoring: the Prometheus-operator objects and the dashboard ConfigMap. ---
# kubernetes-validate knows only core kinds: the operator's CRDs are checked against the fields
# of monitoring.coreos.com/v1 that these manifests may use (a typo the operator would reject or
# silently ignore fails here), and against the application and the alert rules.

MONITORING = K8S / "monitoring"
OPERATOR_API = "monitoring.coreos.com/v1"
POD_MONITOR_SPEC = {
    "jobLabel",
    "podTargetLabels",
    "podMetricsEndpoints",
    "selector",
    "namespaceSelector",
    "sampleLimit",
    "targetLimit",
    "attachMetadata",
}
POD_METRICS_ENDPOINT = {
    "port",
    "portNumber",
    "targetPort",
    "path",
    "scheme",
    "params",
    "interval",
    "scrapeTimeout",
    "honorLabels",
    "honorTimestamps",
    "relabelings",
    "metricRelabelings",
    "enableHttp2",
    "filterRunning",
}
RELABELING = {
    "sourceLabels",
    "separator",
    "targetLabel",
    "regex",
    "modulus",
    "replacement",
    "action",
}
RULE_GROUP = {"name", "interval", "rules", "limit", "partial_response_strategy"}
RULE = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}


def _monitoring() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(MONITORING.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


MONITORING_DOCS = [(f, d) for f, d in _monitoring() if d["kind"] != "Kustomization"]


def _monitors() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in MONITORING_DOCS if d["kind"] == "PodMonitor"}


def _job_names_of_the_rules() -> set[str]:
    rules = (K8S.parent / "prometheus" / "alerts.yaml").read_text()
    return set(re.findall(r'up\{job="([^"]+)"\}', rules))


def test_the_monitoring_kustomization_lists_its_manifests_and_stays_out_of_the_main_one() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    manifests = {p.name for p in MONITORING.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests
    main = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert not any("monitoring" in r for r in main["resources"]), "it needs the operator's CRDs"
    kinds = sorted(d["kind"] for _, d in MONITORING_DOCS)
    assert kinds == ["ConfigMap", "PodMonitor", "PodMonitor", "PrometheusRule"]


def test_a_pod_monitor_per_workload_sets_the_job_names_the_rules_match_on() -> None:
    monitors = _monitors()
    jobs = {}
    for workload in _workloads():
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        (monitor,) = [
            m for m in monitors.values()
            if m["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        ]  # fmt: skip
        assert monitor["apiVersion"] == OPERATOR_API
        spec = monitor["spec"]
        assert set(spec) <= POD_MONITOR_SPEC, set(spec) - POD_MONITOR_SPEC
        (endpoint,) = spec["podMetricsEndpoints"]
        assert set(endpoint) <= POD_METRICS_ENDPOINT, set(endpoint) - POD_METRICS_ENDPOINT
        ports = {p["name"]: p["containerPort"] for p in _container(workload)["ports"]}
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
        (relabel,) = endpoint["relabelings"]
        assert set(relabel) <= RELABELING and relabel["targetLabel"] == "job"
        assert relabel.get("action", "replace") == "replace" and "sourceLabels" not in relabel
        jobs[workload["spec"]["template"]["spec"]["containers"][0]["name"]] = relabel["replacement"]
        # No second scrape of the same pods under another job name by annotation.
        assert "prometheus.io/scrape" not in workload["spec"]["template"]["metadata"].get(
            "annotations", {}
        )
    assert jobs == {"ingress": "callback-sink-ingress", "worker": "callback-sink-worker"}
    assert set(jobs.values()) == _job_names_of_the_rules()
    scrape = yaml.safe_load((K8S.parent / "prometheus" / "prometheus.yml").read_text())
    assert {j["job_name"] for j in scrape["scrape_configs"]} == set(jobs.values())


def test_the_metrics_path_of_both_pod_monitors_is_served_on_their_port(tmp_path: Path) -> None:
    settings = Settings.from_env({**_config(), **_secret(), "SINK_SPOOL_DIR": str(tmp_path)})
    monitors = _monitors()
    ingress = monitors["callback-sink-ingress"]["spec"]["podMetricsEndpoints"][0]
    worker = monitors["callback-sink-worker"]["spec"]["podMetricsEndpoints"][0]
    ports = {p["name"]: p["containerPort"] for w in _workloads() for p in _container(w)["ports"]}
    assert ports[ingress["port"]] == settings.port
    assert ports[worker["port"]] == settings.worker_port
    assert ingress["path"] in _routes(create_app(settings))
    assert worker["path"] in _routes(create_probe_app(cast(Worker, object())))


def test_the_prometheus_rule_carries_exactly_the_shipped_alert_rules() -> None:
    from tests.monitoring_manifests import RULE_FILE, render_rule

    (rule,) = [d for _, d in MONITORING_DOCS if d["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == OPERATOR_API and set(rule["spec"]) == {"groups"}
    shipped = yaml.safe_load((K8S.parent / "prometheus" / "alerts.yaml").read_text())
    assert rule["spec"]["groups"] == shipped["groups"]
    for group in rule["spec"]["groups"]:
        assert set(group) <= RULE_GROUP
        for each in group["rules"]:
            assert set(each) <= RULE, set(each) - RULE
    assert RULE_FILE.read_text() == render_rule(), "run `python -m tests.monitoring_manifests`"


def test_the_dashboard_config_map_holds_the_shipped_dashboard_for_grafanas_sidecar() -> None:
    from tests.monitoring_manifests import DASHBOARD, DASHBOARD_FILE, render_dashboard

    (config_map,) = [d for _, d in MONITORING_DOCS if d["kind"] == "ConfigMap"]
    kubernetes_validate.validate(config_map, KUBERNETES_VERSION, strict=True)
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = config_map["data"].values()
    assert json.loads(text) == json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert DASHBOARD_FILE.read_text() == render_dashboard(), (
        "run `python -m tests.monitoring_manifests`"
    )
