"""The servers of the local cluster stack: how each starts, when it is ready, how it stops.

Every process is started in its own session and recorded by PID in ``state.json``; Ray's daemons
(which ``ray start`` detaches) are found by the stack's marker in their environment.
Nothing here touches a process the stack did not start.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent  # the project's environment: its mlflow, moto_server, ray


class StackError(RuntimeError):
    """A part of the stack did not come up; the message names it and its log."""


def _port(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    if not value.isdigit():
        raise StackError(f"{name} must be a port number, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Settings:
    data_dir: Path  # env.sh, state.json, logs, the shared folder every node sees
    run_dir: Path  # short path for sockets and the Postgres cluster (the postgres user must reach it)
    pg_port: int
    mlflow_port: int
    s3_port: int
    ray_port: int
    dashboard_port: int
    workers: int
    worker_cpus: int
    object_store_mb: int
    bucket: str = "cast-data"
    client_user: str = "cast"

    @classmethod
    def from_env(cls) -> "Settings":
        ray_port = _port("CAST_RAY_PORT", 6420)
        workers = int(os.environ.get("CAST_RAY_WORKERS", "3"))
        if workers < 2:
            raise StackError(f"CAST_RAY_WORKERS must be >= 2 (training spreads over worker nodes), got {workers}")
        return cls(data_dir=Path(os.environ.get("CAST_CLUSTER_DIR", REPO / "data" / "cluster")).resolve(),
                   run_dir=Path(os.environ.get("CAST_CLUSTER_RUN_DIR", f"/tmp/cast-cluster-{ray_port}")),
                   pg_port=_port("CAST_PG_PORT", 5442), mlflow_port=_port("CAST_MLFLOW_PORT", 5060),
                   s3_port=_port("CAST_S3_PORT", 5061), ray_port=ray_port,
                   dashboard_port=_port("CAST_RAY_DASHBOARD_PORT", 8285), workers=workers,
                   worker_cpus=int(os.environ.get("CAST_RAY_WORKER_CPUS", "1")),
                   object_store_mb=int(os.environ.get("CAST_RAY_OBJECT_STORE_MB", "512")))

    @property
    def state_file(self) -> Path:
        return self.data_dir / "state.json"

    @property
    def env_file(self) -> Path:
        return self.data_dir / "env.sh"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def shared_dir(self) -> Path:
        return self.data_dir / "shared"

    def ray_temp(self, node: int) -> Path:
        """Node ``node``'s own Ray temp folder (0: the head). One folder shared by the nodes of one
        machine has each node's log monitor stream every node's worker logs: each job log line 4x."""
        return self.run_dir / ("ray" if node == 0 else f"ray-node-{node}")

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def ports(self) -> dict[str, int]:
        """The listening ports ``up`` takes, by the variable that moves each."""
        return {"CAST_PG_PORT": self.pg_port, "CAST_MLFLOW_PORT": self.mlflow_port, "CAST_S3_PORT": self.s3_port,
                "CAST_RAY_PORT": self.ray_port, "CAST_RAY_PORT + 1 (Ray client server)": self.ray_port + 1,
                "CAST_RAY_DASHBOARD_PORT": self.dashboard_port}


def busy_ports(s: Settings) -> dict[str, int]:
    """The stack's ports that another process already listens on. Checked before ``up`` touches
    anything: a second stack on the same ports (two test runs side by side) would otherwise fail
    part-way with a server's own error, or stop the first stack's Ray nodes as leftovers."""
    busy = {}
    for name, port in s.ports().items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # as the servers bind: a closed socket's TIME_WAIT is no owner, a listener is
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                busy[name] = port
    return busy


# -- processes ----------------------------------------------------------------------------------------
def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None, user: str | None = None) -> int:
    """Start ``cmd`` in its own session (so its whole group can be stopped), output to ``log``."""
    if user and os.geteuid() == 0:
        cmd = ["runuser", "-u", user, "--", *cmd]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    return proc.pid


def _alive(pid: int) -> bool:
    if pid <= 0:  # os.kill(0, ...) would address our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _stop_group(pgid: int, sig: int = signal.SIGTERM, grace_s: float = 20.0) -> None:
    """Signal process group ``pgid`` (started in its own session); SIGKILL what is left after ``grace_s``."""
    if pgid <= 0:
        return
    for s in (sig, signal.SIGKILL):
        try:
            os.killpg(pgid, s)
        except ProcessLookupError:
            return
        deadline = time.time() + grace_s
        while time.time() < deadline and _group_members(pgid):
            time.sleep(0.2)
        if not _group_members(pgid):
            return


STACK_MARKER = "CAST_CLUSTER_STACK"  # in the environment of every Ray node, inherited by all it starts


def ray_pids(run_dir: Path) -> list[int]:
    """PIDs of the processes of this stack's Ray nodes: daemons, agents, workers and job drivers all
    inherit the nodes' ``CAST_CLUSTER_STACK=<run dir>`` (workers rename themselves and leave the
    node's process group, so neither their command line nor their group finds them)."""
    needle = f"{STACK_MARKER}={run_dir}\0".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ and _alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def stop_ray(run_dir: Path, groups: list[int], grace_s: float = 10.0) -> None:
    """Stop the Ray nodes' process groups and every process carrying the stack's marker: all at once,
    SIGKILL for what is left after ``grace_s`` (Ray's agents outlive a SIGTERM)."""
    def left() -> list[int]:
        return [p for g in groups for p in _group_members(g)] + ray_pids(run_dir)

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace_s
        while time.time() < deadline and left():
            time.sleep(0.3)
        if not left():
            return


def _wait(what: str, ready, timeout_s: float, log: Path, pid: int | None = None) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if ready():
            return
        if pid is not None and not _alive(pid):
            raise StackError(f"{what} exited during start-up; see {log}:\n{_tail(log)}")
        time.sleep(0.5)
    raise StackError(f"{what} not ready after {timeout_s:.0f}s; see {log}:\n{_tail(log)}")


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def _http_ok(url: str, auth: tuple[str, str] | None = None, headers: dict | None = None) -> bool:
    req = urllib.request.Request(url, headers=dict(headers or {}))
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as err:
        return err.code < 500
    except OSError:
        return False


# -- the parts -------------------------------------------------------------------------------------------
def start_s3(s: Settings, secrets_: dict[str, str]) -> int:
    log = s.log_dir / "s3.log"
    pid = _spawn([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s.s3_port)], log)
    _wait("the S3 server (moto)", lambda: _http_ok(s.s3_url + "/moto-api/"), 60, log, pid)
    import boto3

    boto3.client("s3", endpoint_url=s.s3_url, region_name="us-east-1",
                 aws_access_key_id=secrets_["aws_key"],
                 aws_secret_access_key=secrets_["aws_secret"]).create_bucket(Bucket=s.bucket)
    return pid


def pg_bindir() -> Path:
    candidates = []
    if shutil.which("pg_config"):
        candidates.append(Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                              check=True).stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for c in candidates:
        if (c / "initdb").is_file():
            return c
    raise StackError("PostgreSQL server binaries (initdb) not found: install Debian's `postgresql` "
                     "(apt-get install -y postgresql)")


def start_postgres(s: Settings, secrets_: dict[str, str]) -> int:
    """A fresh Postgres cluster in ``run_dir/pg``, run as the ``postgres`` user when we are root
    (initdb and postgres refuse root), TCP on 127.0.0.1 with password logins."""
    bindir, pgdata, log = pg_bindir(), s.run_dir / "pg", s.log_dir / "postgres.log"
    user = "postgres" if os.geteuid() == 0 else None
    pgdata.mkdir(parents=True)
    if user:
        shutil.chown(pgdata, user, user)
    pgdata.chmod(0o700)
    cmd = [str(bindir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth-local=trust",
           "--auth-host=scram-sha-256", "-E", "UTF8"]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    with open(log, "ab") as out:
        if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=120).returncode:
            raise StackError(f"initdb failed; see {log}:\n{_tail(log)}")
    pid = _spawn([str(bindir / "postgres"), "-D", str(pgdata), "-p", str(s.pg_port),
                  "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={pgdata}"], log, user=user)
    import psycopg2

    def connect():
        return psycopg2.connect(host=str(pgdata), port=s.pg_port, user="postgres", dbname="postgres",
                                connect_timeout=3)

    def ready() -> bool:
        try:
            connect().close()
            return True
        except psycopg2.OperationalError:
            return False

    _wait("PostgreSQL", ready, 60, log, pid)
    conn = connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE ROLE mlflow LOGIN PASSWORD %s", (secrets_["pg_password"],))
        cur.execute("CREATE DATABASE mlflow OWNER mlflow")
        cur.execute("CREATE DATABASE mlflow_auth OWNER mlflow")
    conn.close()
    return pid


def _pg_uri(s: Settings, secrets_: dict[str, str], db: str) -> str:
    return f"postgresql+psycopg2://mlflow:{secrets_['pg_password']}@127.0.0.1:{s.pg_port}/{db}"


def start_mlflow(s: Settings, secrets_: dict[str, str]) -> int:
    """``mlflow server --app-name basic-auth``: runs and registry in Postgres, users in a second Postgres
    database, artifacts proxied to the bucket (clients never hold the S3 keys)."""
    log, ini = s.log_dir / "mlflow.log", s.run_dir / "basic_auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = READ\n"
                   f"database_uri = {_pg_uri(s, secrets_, 'mlflow_auth')}\n"
                   "admin_username = admin\n"
                   f"admin_password = {secrets_['mlflow_admin_password']}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    ini.chmod(0o600)
    env = dict(os.environ, MLFLOW_AUTH_CONFIG_PATH=str(ini), MLFLOW_S3_ENDPOINT_URL=s.s3_url,
               AWS_ACCESS_KEY_ID=secrets_["aws_key"], AWS_SECRET_ACCESS_KEY=secrets_["aws_secret"],
               AWS_DEFAULT_REGION="us-east-1", MLFLOW_FLASK_SERVER_SECRET_KEY=secrets_["flask_key"])
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(var, None)
    pid = _spawn([str(BIN / "mlflow"), "server", "--app-name", "basic-auth",
                  "--backend-store-uri", _pg_uri(s, secrets_, "mlflow"),
                  "--artifacts-destination", f"s3://{s.bucket}/mlflow",
                  "--host", "127.0.0.1", "--port", str(s.mlflow_port), "--workers", "1"], log, env=env)
    _wait("the MLflow server", lambda: _http_ok(s.mlflow_url + "/health"), 180, log, pid)
    admin = ("admin", secrets_["mlflow_admin_password"])
    body = json.dumps({"username": s.client_user, "password": secrets_["mlflow_password"]}).encode()
    req = urllib.request.Request(s.mlflow_url + "/api/2.0/mlflow/users/create", data=body, method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": "Basic " +
                                          base64.b64encode(f"{admin[0]}:{admin[1]}".encode()).decode()})
    try:
        urllib.request.urlopen(req, timeout=30).close()
    except urllib.error.HTTPError as err:
        raise StackError(f"creating MLflow user {s.client_user!r} failed: HTTP {err.code} {err.read()[:300]!r}")
    return pid


def client_env(s: Settings, secrets_: dict[str, str]) -> dict[str, str]:
    """What a client (and every Ray node, as the pods of infra/k8s get from their secrets) needs."""
    return {
        "RAY_ADDRESS": f"http://127.0.0.1:{s.dashboard_port}",  # the job API, for `ray job submit`
        "CAST_RAY_GCS_ADDRESS": f"127.0.0.1:{s.ray_port}",  # for a driver run directly on this machine
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(s.data_dir / "ray_auth_token"),
        "MLFLOW_TRACKING_URI": s.mlflow_url,
        "MLFLOW_TRACKING_USERNAME": s.client_user,
        "MLFLOW_TRACKING_PASSWORD": secrets_["mlflow_password"],
        "AWS_ENDPOINT_URL": s.s3_url,
        "AWS_ACCESS_KEY_ID": secrets_["aws_key"],
        "AWS_SECRET_ACCESS_KEY": secrets_["aws_secret"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "CAST_BUCKET": s.bucket,
        "CAST_SHARED_DIRS": str(s.shared_dir),
    }


def _node_ports(s: Settings, index: int) -> list[str]:
    # Nodes on one machine must not share the per-node agent ports (Ray's defaults are fixed numbers).
    base = s.ray_port + 100 + 10 * index
    return ["--dashboard-agent-listen-port", str(base), "--dashboard-agent-grpc-port", str(base + 1),
            "--runtime-env-agent-port", str(base + 2), "--metrics-export-port", str(base + 3)]


def _start_node(cmd: list[str], env: dict[str, str], log: Path, record: Callable[[int], object], head: bool,
                attempts: int = 3) -> None:
    """``ray start`` in its own session (its daemons keep that process group, which ``down`` stops).
    ``ray start`` gives a node 30 s (fixed in Ray) to register with the GCS; on a loaded machine that
    can pass, so a worker node is tried again after its group is stopped."""
    for attempt in range(1, attempts + 1):
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
        record(proc.pid)
        try:
            rc = proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            rc = -1
        if rc == 0:
            return
        _stop_group(proc.pid, grace_s=10)
        if head or attempt == attempts:
            raise StackError(f"`{' '.join(cmd[:4])} ...` failed (exit {rc}, attempt {attempt}); see {log}:\n"
                             f"{_tail(log)}")
        print(f"cluster-up: `{' '.join(cmd[:4])} ...` failed (exit {rc}); trying again", file=sys.stderr)


def start_ray(s: Settings, env: dict[str, str], record: Callable[[str, int], None]) -> None:
    """A head that runs no tasks (0 CPUs: drivers and Train's controller only) and ``s.workers`` worker
    nodes of ``s.worker_cpus`` CPUs each, with the venv first on PATH (``ray job submit -- python``
    runs the nodes' ``python``) and the cluster's credentials in the nodes' environment."""
    node_env = dict(os.environ, **env, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    node_env.pop("RAY_ADDRESS")
    node_env[STACK_MARKER] = str(s.run_dir)
    log, groups = s.log_dir / "ray.log", []
    common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats",
              # Ray's default object store is 30% of RAM per node: four nodes on one machine would ask
              # for more shared memory than it has.
              "--object-store-memory", str(s.object_store_mb << 20)]
    head = [str(BIN / "ray"), "start", "--head", "--port", str(s.ray_port), "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(s.dashboard_port), "--ray-client-server-port", str(s.ray_port + 1),
            "--num-cpus", "0", "--resources", json.dumps({"cast_head": 1}), "--temp-dir", str(s.ray_temp(0)),
            *common, *_node_ports(s, 0)]
    nodes = [head] + [
        [str(BIN / "ray"), "start", "--address", f"127.0.0.1:{s.ray_port}", "--num-cpus", str(s.worker_cpus),
         "--resources", json.dumps({f"cast_worker_{i}": 1}), "--temp-dir", str(s.ray_temp(i)), *common,
         *_node_ports(s, i)]
        for i in range(1, s.workers + 1)]
    def add_group(pid: int) -> None:
        record(f"ray_node_{len(groups)}", pid)
        groups.append(pid)

    for index, cmd in enumerate(nodes):
        _start_node(cmd, node_env, log, add_group, head=index == 0)
    token = Path(env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    url = f"http://127.0.0.1:{s.dashboard_port}/api/v0/nodes?limit=100"

    def all_nodes() -> bool:
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                rows = json.load(resp)["data"]["result"]["result"]
        except (OSError, KeyError, ValueError):
            return False
        return sum(r.get("state") == "ALIVE" for r in rows) == s.workers + 1

    _wait(f"the Ray cluster (1 head + {s.workers} worker nodes)", all_nodes, 120, log)


def new_secrets() -> dict[str, str]:
    return {"pg_password": secrets.token_urlsafe(16), "mlflow_admin_password": secrets.token_urlsafe(16),
            "mlflow_password": secrets.token_urlsafe(16), "aws_key": "cast", "aws_secret": secrets.token_urlsafe(16),
            "flask_key": secrets.token_urlsafe(24), "ray_token": secrets.token_hex(32)}


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


# -- the stack -------------------------------------------------------------------------------------------
def start_stack(s: Settings) -> None:
    if s.run_dir.exists():
        shutil.rmtree(s.run_dir)
    s.run_dir.mkdir(parents=True)
    s.run_dir.chmod(0o755)
    s.shared_dir.mkdir(parents=True, exist_ok=True)
    s.log_dir.mkdir(parents=True, exist_ok=True)
    sec = new_secrets()
    env = client_env(s, sec)
    write_private(Path(env["RAY_AUTH_TOKEN_PATH"]), sec["ray_token"])
    state: dict = {"run_dir": str(s.run_dir), "ray_temp": [str(s.ray_temp(i)) for i in range(s.workers + 1)],
                   "pids": {}}

    def record(name: str, pid: int) -> None:
        state["pids"][name] = pid
        write_private(s.state_file, json.dumps(state, indent=1))

    record("s3", start_s3(s, sec))
    record("postgres", start_postgres(s, sec))
    record("mlflow", start_mlflow(s, sec))
    start_ray(s, env, record)
    write_private(s.env_file, "# The local cluster stack (infra/local/cluster): source me.\n" +
                  "".join(f"export {k}={v}\n" for k, v in env.items()))


def stop_stack(s: Settings) -> None:
    """Stop what ``state.json`` records, Ray nodes by their temp folder; remove the stack's state."""
    state = json.loads(s.state_file.read_text()) if s.state_file.exists() else {}
    pids = state.get("pids", {})
    # Ray processes stay in their node's group, except workers (found by the marker).
    stop_ray(Path(state.get("run_dir", s.run_dir)), [p for n, p in pids.items() if n.startswith("ray_node_")])
    for name in ("mlflow", "s3"):
        if name in pids:
            _stop_group(pids[name])
    if "postgres" in pids:
        _stop_group(pids["postgres"], signal.SIGINT)  # Postgres' "fast" shutdown
    run_dir = Path(state.get("run_dir", s.run_dir))
    if run_dir.exists():
        shutil.rmtree(run_dir)
    for f in (s.state_file, s.env_file, s.data_dir / "ray_auth_token"):
        f.unlink(missing_ok=True)


def stack_alive(s: Settings) -> bool:
    if not s.state_file.exists() or not s.env_file.exists():
        return False
    state = json.loads(s.state_file.read_text())
    pids = state.get("pids", {})
    return (all(_alive(pids.get(n, 0) or 0) for n in ("s3", "postgres", "mlflow"))
            and bool(ray_pids(Path(state["run_dir"]))))
