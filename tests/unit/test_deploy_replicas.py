"""The shipped deployment runs the broker as replicas that clients balance over: the
Kubernetes manifests and the Compose file, parsed and checked against the product."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pullbroker_client.broker_target import channel_target
from pullbroker_client.home import Home
from pullbroker_service.config.broker import load_config

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "deploy" / "compose"
# A connection string with a password in it: scheme://user:password@host
INLINE_PASSWORD = re.compile(r"postgres(?:ql)?://[^/\s:@]+:[^@\s%$]+@")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


@pytest.fixture(scope="module")
def broker_docs() -> list[dict[str, Any]]:
    return documents(KUBE / "broker.yaml")


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def config_map_file(docs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(one(docs, "ConfigMap", "pullbroker")["data"][key])
    return data


class TestBrokerDeployment:
    def test_three_replicas_rolled_without_losing_one(self, broker_docs: list[Any]) -> None:
        spec = one(broker_docs, "Deployment", "pullbroker")["spec"]
        assert spec["replicas"] >= 3
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    def test_pdb_selects_the_deployments_pods(self, broker_docs: list[Any]) -> None:
        deployment = one(broker_docs, "Deployment", "pullbroker")
        pdb = one(broker_docs, "PodDisruptionBudget")
        assert selects(pdb["spec"]["selector"], pod_labels(deployment))
        assert 2 <= pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]

    def test_anti_affinity_spreads_pods_over_nodes(self, broker_docs: list[Any]) -> None:
        deployment = one(broker_docs, "Deployment", "pullbroker")
        anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        terms = [
            t["podAffinityTerm"] for t in anti["preferredDuringSchedulingIgnoredDuringExecution"]
        ]
        by_host = [t for t in terms if t["topologyKey"] == "kubernetes.io/hostname"]
        assert by_host
        assert selects(by_host[0]["labelSelector"], pod_labels(deployment))

    def test_headless_service_selects_the_pods(self, broker_docs: list[Any]) -> None:
        deployment = one(broker_docs, "Deployment", "pullbroker")
        headless = one(broker_docs, "Service", "pullbroker-headless")
        assert headless["spec"]["clusterIP"] == "None"
        assert headless["spec"]["selector"].items() <= pod_labels(deployment).items()
        assert [p["port"] for p in headless["spec"]["ports"]] == [50051]

    def test_no_persistent_volume_per_replica(self, broker_docs: list[Any]) -> None:
        """The replicas are stateless: the home folder is scratch, state is in PostgreSQL."""
        assert not [d for d in broker_docs if d["kind"] == "PersistentVolumeClaim"]

    def test_config_loads_with_the_product(self, broker_docs: list[Any], tmp_path: Path) -> None:
        """The ConfigMap's broker.yaml is a config `pullbroker serve` accepts."""
        path = tmp_path / "broker.yaml"
        path.write_text(yaml.safe_dump(config_map_file(broker_docs, "broker.yaml")))
        config = load_config(home=Home(tmp_path), config_file=path)
        assert config.database is not None
        assert config.limits.max_connection_age_seconds > 0


class TestDatabaseUrl:
    def test_from_a_mounted_secret_file(self, broker_docs: list[Any]) -> None:
        """database.url_file lies in a volume mounted from a Secret (or url_env comes from a
        secretKeyRef); nothing inline."""
        database = config_map_file(broker_docs, "broker.yaml")["database"]
        assert not {"url", "dsn", "conninfo", "password"} & database.keys()
        pod = one(broker_docs, "Deployment", "pullbroker")["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        if "url_env" in database:
            (env,) = [e for e in container.get("env", []) if e["name"] == database["url_env"]]
            assert "secretKeyRef" in env["valueFrom"]
            return
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = [
            m
            for m in container["volumeMounts"]
            if database["url_file"].startswith(m["mountPath"] + "/")
        ]
        assert mounts, database["url_file"]
        assert "secret" in volumes[mounts[0]["name"]]

    @pytest.mark.parametrize("path", sorted((ROOT / "deploy").rglob("*.y*ml")), ids=str)
    def test_no_connection_string_with_a_password(self, path: Path) -> None:
        assert not INLINE_PASSWORD.search(path.read_text())


class TestSidecarTarget:
    def test_daemonset_dials_the_headless_service(self, broker_docs: list[Any]) -> None:
        """The sidecar's --broker is the headless Service by DNS, balanced by round_robin,
        and the broker's certificate names what it dials (gRPC checks each replica)."""
        daemonset = one(documents(KUBE / "sidecar-daemonset.yaml"), "DaemonSet")
        containers = daemonset["spec"]["template"]["spec"]["containers"]
        container = next(c for c in containers if c["name"] == "sidecar")
        (broker,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--broker=")]
        headless = one(broker_docs, "Service", "pullbroker-headless")
        name = f"{headless['metadata']['name']}.{headless['metadata']['namespace']}.svc"
        assert broker == f"dns:///{name}:50051"
        assert channel_target(broker).uri == broker
        certificate = one(broker_docs, "Certificate", "pullbroker-server")
        assert name in certificate["spec"]["dnsNames"]


class TestCompose:
    def test_broker_on_postgres_with_the_url_as_a_secret_file(self) -> None:
        compose: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
        services = compose["services"]
        assert services["postgres"]["image"].startswith("postgres:")
        assert "POSTGRES_PASSWORD" not in services["postgres"]["environment"]
        broker = services["broker"]
        assert broker["depends_on"]["postgres"]["condition"] == "service_healthy"
        config: dict[str, Any] = yaml.safe_load((COMPOSE / "broker.yaml").read_text())
        url_file = config["database"]["url_file"]
        assert url_file.startswith("/run/secrets/")
        secret = url_file.removeprefix("/run/secrets/")
        assert secret in broker["secrets"]
        assert "file" in compose["secrets"][secret]
        assert any(
            "broker.yaml" in v and "--config" in broker["command"] for v in broker["volumes"]
        )
