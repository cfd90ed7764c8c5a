"""Every file under deploy/ parses and names only flags and settings that exist.

Command lines are parsed by the real argparse parsers of the two daemons, and
example configs load through the real config loaders, so a renamed flag or
setting breaks these tests instead of a deployment.
"""

from __future__ import annotations

import argparse
import configparser
import copy
import shlex
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from spikefleet.errors import ServerConfigError
from spikefleet_agent import cli as agent_cli
from spikefleet_agent import config as agent_config
from spikefleet_server import cli as server_cli
from spikefleet_server import config as server_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DATABASE_ENV = "SPIKEFLEET_DATABASE_URL"
PARSERS = {
    "spikefleet-server": server_cli.build_parser,
    "spikefleet-agent": agent_cli.build_parser,
}

YAML_FILES = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
TOML_FILES = sorted(DEPLOY.rglob("*.toml"))
UNIT_FILES = sorted(DEPLOY.rglob("*.service"))


def parse_command(argv: list[str]) -> argparse.Namespace:
    """Parse a daemon command line with its real parser; unknown flags fail the test."""
    program = Path(argv[0]).name
    assert program in PARSERS, f"{argv[0]} is not a spikefleet daemon"
    parser = PARSERS[program]()
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit as exc:
        raise AssertionError(f"{shlex.join(argv)} does not parse (exit {exc.code})") from None
    assert getattr(args, "func", None) is not None, f"{shlex.join(argv)} names no subcommand"
    return args


def k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d is not None)
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_documents() if d["kind"] == kind}


def pod_containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def load_server_toml(text: str, tmp_path: Path) -> server_config.ServerConfig:
    """Load through the real loader; TLS files are swapped for existing ones (it checks them)."""
    path = tmp_path / "server.toml"
    path.write_text(text)
    declared = tomllib.loads(text).get("tls", {})
    tls = {}
    for name in declared:
        stand_in = tmp_path / f"{name}.pem"
        stand_in.write_text("stand-in")
        tls[name] = stand_in
    return server_config.load_config(path, environ={}, overrides={"tls": tls} if tls else None)


def test_deploy_has_files_of_each_kind() -> None:
    assert YAML_FILES and TOML_FILES and UNIT_FILES


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses_into_kubernetes_objects(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys()
        assert doc["metadata"]["name"]


@pytest.mark.parametrize("path", TOML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_toml_loads_through_its_real_config_loader(path: Path, tmp_path: Path) -> None:
    data = tomllib.loads(path.read_text())
    if path.parent.name == "server":
        config = load_server_toml(path.read_text(), tmp_path)
        assert config.listen == data["listen"]
    elif path.parent.name == "agent":
        config_a = agent_config.load_config(path)
        assert config_a.agent_id == data["agent_id"]
    else:
        pytest.fail(f"no loader known for {path}")


def read_unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(path.read_text())
    return unit


@pytest.mark.parametrize("path", UNIT_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_systemd_unit_commands_parse_with_the_real_parsers(path: Path) -> None:
    unit = read_unit(path)
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    commands = [
        unit["Service"][key] for key in ("ExecStartPre", "ExecStart") if key in unit["Service"]
    ]
    assert commands
    for line in commands:
        args = parse_command(shlex.split(line))
        config = getattr(args, "config", None)
        if config is not None:
            assert Path(config).name in {p.name for p in TOML_FILES}


def test_server_unit_runs_serve() -> None:
    unit = read_unit(DEPLOY / "server" / "spikefleet-server.service")
    assert parse_command(shlex.split(unit["Service"]["ExecStart"])).command == "serve"


def test_k8s_has_the_server_objects() -> None:
    kinds = {d["kind"] for d in k8s_documents()}
    expected = {"Deployment", "Service", "Secret", "ConfigMap", "PodDisruptionBudget", "Cluster"}
    assert expected <= kinds


# CloudNativePG's Cluster is a custom resource: its schema is not among the Kubernetes
# ones kubernetes-validate ships, so the fields the deployment relies on are checked here.
CUSTOM_KINDS = {("postgresql.cnpg.io/v1", "Cluster")}


@pytest.mark.parametrize(
    "doc",
    [d for d in k8s_documents() if (d["apiVersion"], d["kind"]) not in CUSTOM_KINDS],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_k8s_objects_validate_against_the_kubernetes_schemas(doc: dict[str, Any]) -> None:
    """Strict: a misspelt or misplaced field fails, as kubectl --validate=strict would."""
    try:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_schema_validation_catches_a_wrong_field() -> None:
    (deployment,) = copy.deepcopy(list(by_kind("Deployment").values()))
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)
    deployment["spec"]["replicas"] = 3
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_k8s_postgresql_cluster_makes_the_secret_the_servers_read() -> None:
    (cluster,) = by_kind("Cluster").values()
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["spec"]["instances"] >= 2  # a primary and a standby to fail over to
    assert cluster["spec"]["storage"]["size"]
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    assert initdb["database"] and initdb["owner"]
    refs = database_secret_refs(next(iter(by_kind("Deployment").values())))
    # CloudNativePG writes the application user's connection URI to <cluster>-app, key uri
    assert refs == {(f"{cluster['metadata']['name']}-app", "uri")}


def database_secret_refs(deployment: dict[str, Any]) -> set[tuple[str, str]]:
    refs = set()
    for container in daemon_containers(deployment):
        for env in container.get("env", []):
            if env["name"] == DATABASE_ENV:
                ref = env["valueFrom"]["secretKeyRef"]
                refs.add((ref["name"], ref["key"]))
    return refs


def test_k8s_runs_replicas_behind_a_disruption_budget_and_grpc_readiness(tmp_path: Path) -> None:
    (deployment,) = by_kind("Deployment").values()
    (budget,) = by_kind("PodDisruptionBudget").values()
    replicas = deployment["spec"]["replicas"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert replicas >= 2
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= budget["spec"]["maxUnavailable"] < replicas
    config = load_server_toml(assembled_config(deployment)[0], tmp_path)
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    probe = server["readinessProbe"]["grpc"]
    # the kubelet's grpc probe speaks plaintext: it must hit the health-only port
    assert probe["port"] == server_config.split_address(config.health_listen)[1]
    assert probe["port"] != server_config.split_address(config.listen)[1]
    assert config.max_connection_age_seconds > 0, "agents rebalance over new replicas"
    # the variable the deployment sets is the one the server reads its database from
    url = "postgresql://spikefleet:pw@spikefleet-db-rw:5432/spikefleet"
    assert (
        server_config.load_config(
            None, environ={DATABASE_ENV: url}, overrides={"insecure_loopback": True}
        ).database.url
        == url
    )
    # every daemon container (check-config too) sees the same database
    assert len(database_secret_refs(deployment)) == 1
    assert all(
        any(e["name"] == DATABASE_ENV for e in c.get("env", []))
        for c in daemon_containers(deployment)
    )


def daemon_containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in pod_containers(deployment) if c["command"][0] != "/bin/sh"]


def volume_file(deployment: dict[str, Any], container: dict[str, Any], path: str) -> str:
    """The text a container sees at ``path``, read from the ConfigMap or Secret behind it."""
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    for mount in container["volumeMounts"]:
        directory = mount["mountPath"]
        if path.startswith(directory + "/"):
            volume = volumes[mount["name"]]
            key = path[len(directory) + 1 :]
            if "configMap" in volume:
                return str(by_kind("ConfigMap")[volume["configMap"]["name"]]["data"][key])
            if "secret" in volume:
                return str(by_kind("Secret")[volume["secret"]["secretName"]]["stringData"][key])
    raise AssertionError(f"{path} is not in a ConfigMap or Secret mounted in {container['name']}")


def assembled_config(deployment: dict[str, Any]) -> tuple[str, str]:
    """Run the assemble-config script's one job (cat A B > C) on the manifests' data."""
    (assembler,) = [c for c in pod_containers(deployment) if c["command"][0] == "/bin/sh"]
    assert assembler["command"] == ["/bin/sh", "-c"]
    argv = shlex.split(assembler["args"][0])
    assert argv[0] == "cat" and argv[-2] == ">", "the script only concatenates files"
    text = "".join(volume_file(deployment, assembler, source) for source in argv[1:-2])
    output = argv[-1]
    mounts = {m["mountPath"]: m["name"] for m in assembler["volumeMounts"]}
    assert str(Path(output).parent) in mounts, f"{output} is not on a shared volume"
    return text, output


def test_k8s_container_commands_parse_with_the_real_parser() -> None:
    for deployment in by_kind("Deployment").values():
        commands = {
            parse_command(c["command"] + c.get("args", [])).command
            for c in daemon_containers(deployment)
        }
        assert commands == {"serve", "check-config"}


def test_k8s_assembled_config_loads_and_its_paths_are_mounted(tmp_path: Path) -> None:
    (deployment,) = by_kind("Deployment").values()
    text, output = assembled_config(deployment)
    config = load_server_toml(text, tmp_path)
    declared = tomllib.loads(text)
    for container in daemon_containers(deployment):
        args = parse_command(container["command"] + container.get("args", []))
        assert str(args.config) == output, "the daemons read the assembled config"
        mounts = [m["mountPath"] for m in container["volumeMounts"]]
        paths = [Path(declared["data_dir"]), Path(declared["signing_key"]), Path(output)]
        paths += [Path(declared["trusted_keys_dir"])]
        paths += [Path(p) for p in declared.get("tls", {}).values()]
        for path in paths:
            assert any(path.is_relative_to(m) for m in mounts), f"{path} is not mounted"
    assert config.metrics_listen, "the liveness probe scrapes /metrics"


def test_k8s_tokens_secret_entries_load_as_tokens(tmp_path: Path) -> None:
    (deployment,) = by_kind("Deployment").values()
    text, _ = assembled_config(deployment)
    entry = '[[tokens]]\nname = "ci"\nrole = "deployer"\nsha256 = "' + "a" * 64 + '"\n'
    config = load_server_toml(text + entry, tmp_path)
    assert [t.name for t in config.tokens] == ["ci"]


def test_k8s_names_resolve() -> None:
    (deployment,) = by_kind("Deployment").values()
    pod = deployment["spec"]["template"]
    secrets, claims, configmaps = (
        by_kind("Secret"),
        by_kind("PersistentVolumeClaim"),
        by_kind("ConfigMap"),
    )
    # Secrets the PostgreSQL operator creates for its clusters
    secrets.update({f"{name}-app": {} for name in by_kind("Cluster")})
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    for volume in volumes.values():
        if "secret" in volume:
            assert volume["secret"]["secretName"] in secrets
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims
        if "configMap" in volume:
            assert volume["configMap"]["name"] in configmaps
    for container in pod_containers(deployment):
        for mount in container["volumeMounts"]:
            assert mount["name"] in volumes
        for env in container.get("env", []):
            assert env["valueFrom"]["secretKeyRef"]["name"] in secrets
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    labels = pod["metadata"]["labels"]
    for service in by_kind("Service").values():
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports


def test_k8s_ports_match_the_config(tmp_path: Path) -> None:
    (deployment,) = by_kind("Deployment").values()
    config = load_server_toml(assembled_config(deployment)[0], tmp_path)
    ports = {
        p["name"]: p["containerPort"]
        for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert server_config.split_address(config.listen)[1] == ports["grpc"]
    assert server_config.split_address(config.metrics_listen)[1] == ports["metrics"]


def test_a_made_up_flag_is_refused() -> None:
    with pytest.raises(AssertionError, match="does not parse"):
        parse_command(["spikefleet-server", "serve", "--no-such-flag"])


def test_an_unknown_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ServerConfigError, match="unknown setting"):
        load_server_toml('listen = "127.0.0.1:7443"\nno_such_setting = 1\n', tmp_path)
