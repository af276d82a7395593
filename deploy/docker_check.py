"""Build the Docker image with buildah, run it with podman and check it end to end; where this machine cannot
run containers (or lacks the disk, or the CIFAR-10 test images) it says why and exits 0 without checking.

Steps, each under a time limit: install buildah, podman, runc and debootstrap from Debian's packages when
missing; pull the image's base, or bootstrap a Debian bookworm base with debootstrap where no registry is
reachable; build the Dockerfile; inspect the image (non-root user, HEALTHCHECK, only the runtime set of
requirements.lock, ONNX Runtime's CUDA build, each CUDA library once); run it; wait until its HEALTHCHECK
passes; infer LABEL, PROBS, SALIENCY, ERASED_LABEL and CORRECTED_LABEL with tritonclient on CIFAR-10 test
images; send a malformed request (a clean INVALID_ARGUMENT); read /metrics; stop it with SIGTERM under load
(exit 0, every request it accepted answered, the rest refused with UNAVAILABLE); remove the container, the
images and the build storage, all of which live under --work.

example:
  make docker-check
  .venv/bin/python deploy/docker_check.py --data ../shared/data/cifar10 --per-class 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"buildah": "buildah", "podman": "podman", "runc": "runc", "debootstrap": "debootstrap"}
IMAGE = "localhost/miscause-server:check"
LOCAL_BASE = "localhost/miscause-base:bookworm"
RUN_FLAGS = ("--runtime", "runc", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096")
# CUDA libraries torch and ONNX Runtime load; each must lie in the image exactly once.
CUDA_LIBRARIES = ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcudnn.so.9", "libcufft.so.12",
                  "libcurand.so.10", "libcusolver.so.12", "libcusparse.so.12", "libnvrtc.so.13",
                  "libnvJitLink.so.13", "libnccl.so.2", "libcusparseLt.so.0")
# What the image's Python reports about itself: installed distributions, CUDA libraries, unresolved links.
INVENTORY = r"""
import importlib.metadata as md, json, os, subprocess, sys
import onnxruntime, torch
names = set(sys.argv[1].split(","))
found = {}
for top in ("/opt", "/usr"):
    for folder, _, files in os.walk(top):
        for name in files:
            if name in names and not os.path.islink(os.path.join(folder, name)):
                found.setdefault(name, []).append(os.path.join(folder, name))
linked = [os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime_providers_cuda.so"),
          os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cuda.so")]
# Libraries ldd cannot find are resolved in the server's process only if torch has loaded them already.
loaded = {os.path.basename(line.split()[-1]) for line in open("/proc/self/maps") if ".so" in line}
missing = {path: [line.split()[0] for line in subprocess.run(["ldd", path], capture_output=True, text=True)
                  .stdout.splitlines() if "not found" in line and line.split()[0] not in loaded]
           for path in linked}
print(json.dumps({"dists": {d.metadata["Name"]: d.version for d in md.distributions()},
                  "providers": onnxruntime.get_available_providers(), "libraries": found, "missing": missing,
                  "uid": os.getuid()}))
"""


class Skip(Exception):
    """This machine cannot run the check; the reason is printed and the exit status is 0."""


class Failed(Exception):
    """The image does not do what it must; the reason is printed and the exit status is 1."""


def say(started: float, message: str) -> None:
    print(f"[{time.monotonic() - started:6.0f} s] {message}", flush=True)


@dataclass
class Storage:
    """buildah and podman on a private storage under `work`, so that removing `work` removes everything."""

    work: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "TMPDIR": str(self.work / "tmp")}

    def flags(self) -> list[str]:
        return ["--root", str(self.work / "storage"), "--runroot", str(self.work / "run"),
                "--storage-driver", "overlay"]

    def call(self, tool: str, *args: str, limit: float, what: str, check: bool = True,
             stdin: bytes | None = None) -> subprocess.CompletedProcess:
        """Run buildah or podman on this storage and return its output; Failed past the limit or on a non-zero
        exit (when `check`), with the output's tail."""
        command = [tool, *self.flags(), *args]
        try:
            done = subprocess.run(command, input=stdin, capture_output=True, timeout=limit, env=self.env())
        except subprocess.TimeoutExpired:
            raise Failed(f"{what}: no result within {limit:.0f} s ({' '.join(command[:6])} ...)") from None
        if check and done.returncode != 0:
            raise Failed(f"{what}: exit {done.returncode}\n{tail(done.stdout + done.stderr)}")
        return done


def shown(path: Path) -> str:
    """`path` relative to the repository when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def tail(output: bytes | str, lines: int = 30) -> str:
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def disk_use(path: Path) -> int:
    """Bytes used under `path` on its own file system (du), 0 if it is gone."""
    done = subprocess.run(["du", "-sx", "--block-size=1", str(path)], capture_output=True, text=True, timeout=120)
    return int(done.stdout.split()[0]) if done.returncode == 0 and done.stdout else 0


class DiskPeak(threading.Thread):
    """Samples the disk used under `work` every few seconds; `peak` is the largest sample."""

    def __init__(self, work: Path, every: float = 5.0) -> None:
        super().__init__(daemon=True, name="disk-peak")
        self.work, self.every, self.peak, self.done = work, every, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.peak = max(self.peak, disk_use(self.work))


def install_tools() -> None:
    """buildah, podman, runc and debootstrap from Debian's packages when missing; Skip where that cannot be done."""
    missing = [package for package, command in TOOLS.items() if shutil.which(command) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise Skip(f"{', '.join(missing)} missing, and installing Debian's packages needs apt-get as root")
    for command in (["apt-get", "update", "-q"],
                    ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q", *missing]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if done.returncode != 0:
            raise Skip(f"cannot install {', '.join(missing)} from Debian's packages:\n"
                       f"{tail(done.stdout + done.stderr)}")


def dockerfile_arg(name: str) -> str:
    """The default of a build argument of the Dockerfile."""
    found = re.search(rf"^ARG {name}=(\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    if found is None:
        raise Failed(f"the Dockerfile gives ARG {name} no default")
    return found.group(1)


def base_image(storage: Storage, args: argparse.Namespace, started: float) -> list[str]:
    """The build arguments for the image's base: the Dockerfile's own when a registry serves it, else a Debian
    bookworm root file system bootstrapped from Debian's packages and imported as a local image. Skip where a
    trivial container cannot run on it: this machine cannot run containers."""
    default = dockerfile_arg("BASE_IMAGE")
    pulled = storage.call("buildah", "pull", "--quiet", f"docker.io/library/{default}", limit=180,
                          what="pull the base", check=False)
    if pulled.returncode == 0:
        say(started, f"base: pulled {default}")
        can_run_containers(storage, f"docker.io/library/{default}")
        return []
    say(started, f"base: {default} cannot be pulled here; bootstrapping Debian bookworm from {args.mirror}")
    rootfs = args.work / "rootfs"
    try:
        done = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), args.mirror],
                              capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise Failed("debootstrap: no result within 900 s") from None
    if done.returncode != 0:
        raise Failed(f"debootstrap: exit {done.returncode}\n{tail(done.stdout + done.stderr)}")
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / leftover).glob("*"):
            if path.is_file():
                path.unlink()
    mirror = args.mirror.rstrip("/")
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {mirror} bookworm main\ndeb {mirror} bookworm-updates main\n"
        f"deb {mirror}-security bookworm-security main\n")
    archive = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, timeout=300).stdout
    imported = storage.call("podman", "import", "-", LOCAL_BASE, stdin=archive, limit=300, what="import the base",
                            check=False)
    if imported.returncode != 0:
        raise Skip(f"podman cannot store images here (overlay storage under {shown(args.work)}):\n"
                   f"{tail(imported.stdout + imported.stderr)}")
    shutil.rmtree(rootfs)
    say(started, f"base: bootstrapped and imported as {LOCAL_BASE}")
    can_run_containers(storage, LOCAL_BASE)
    return ["--build-arg", f"BASE_IMAGE={LOCAL_BASE}"]


def can_run_containers(storage: Storage, base: str) -> None:
    """Skip unless a trivial container runs: tells a machine that cannot run containers from a broken image."""
    trial = storage.call("podman", "run", "--rm", "--network", "none", "--no-healthcheck", *RUN_FLAGS, base, "true",
                         limit=120, what="run a container", check=False)
    if trial.returncode != 0:
        raise Skip(f"this machine cannot run containers with podman:\n{tail(trial.stdout + trial.stderr)}")


def build(storage: Storage, base_args: list[str], args: argparse.Namespace) -> None:
    """buildah build of the Dockerfile as written; the host's CA bundle goes in as the build secret pip-ca."""
    secret = ["--secret", f"id=pip-ca,src={args.pip_ca}"] if args.pip_ca.is_file() else []
    storage.call("buildah", "build", "--isolation", "chroot", "--format", "docker", *secret, *base_args,
                 "--tag", IMAGE, str(ROOT), limit=args.build_limit, what="build the image")


def canonical(name: str) -> str:
    """A distribution's name as PyPI compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """Canonical name -> version of a lock file."""
    lines = [line.split("==") for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return {canonical(name): version for name, version in lines}


def image_pins() -> dict[str, str]:
    """What the image installs: the runtime lock with ONNX Runtime's CUDA build in place of the CPU one."""
    runtime = pins(ROOT / "requirements.lock")
    del runtime["onnxruntime"]
    return {**runtime, "onnxruntime-gpu": dockerfile_arg("ONNXRUNTIME_GPU")}


def inspect_image(storage: Storage) -> dict:
    """The image's configuration and contents, checked; returns the facts reported at the end."""
    config = json.loads(storage.call("podman", "image", "inspect", IMAGE, limit=60, what="inspect").stdout)[0]
    user, health = config["Config"].get("User", ""), config.get("Healthcheck") or {}
    problems = []
    if user.split(":")[0] in ("", "root", "0"):
        problems.append(f"runs as {user!r}, not an unprivileged user")
    if "miscause.server.healthcheck" not in " ".join(health.get("Test", [])):
        problems.append(f"no HEALTHCHECK calling miscause.server.healthcheck: {health}")
    inventory = storage.call("podman", "run", "--rm", "--network", "none", "--no-healthcheck", *RUN_FLAGS,
                             "--entrypoint", "python", IMAGE, "-c", INVENTORY, ",".join(CUDA_LIBRARIES), limit=300,
                             what="list the image")
    facts = json.loads(inventory.stdout.decode().strip().splitlines()[-1])
    runtime = image_pins()
    dists = {canonical(name): version for name, version in facts["dists"].items()}
    extra = sorted(set(dists) - set(runtime) - {"miscause", "pip"})
    wrong = {name: (dists.get(name), version) for name, version in runtime.items() if dists.get(name) != version}
    dev = sorted(set(dists) & set(pins(ROOT / "requirements-dev.lock")))
    if extra or wrong or dev:
        problems.append(f"installed set differs from the runtime lock: extra {extra}, development {dev}, "
                        f"(installed, pinned) {wrong}")
    if "CUDAExecutionProvider" not in facts["providers"]:
        problems.append(f"ONNX Runtime without its CUDA provider: {facts['providers']}")
    counts = {name: len(facts["libraries"].get(name, [])) for name in CUDA_LIBRARIES}
    if any(count != 1 for count in counts.values()):
        problems.append(f"CUDA libraries not exactly once: {facts['libraries']}")
    unresolved = {path: names for path, names in facts["missing"].items() if set(names) - {"libcuda.so.1"}}
    if unresolved:
        problems.append(f"libraries that do not resolve in the image (the driver's libcuda.so.1 aside): {unresolved}")
    if facts["uid"] == 0:
        problems.append("the server's user is root")
    if problems:
        raise Failed("the image:\n" + "\n".join("    " + problem for problem in problems))
    return {"size": int(config["Size"]), "user": user, "packages": len(dists)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def container_state(storage: Storage, name: str) -> dict:
    done = storage.call("podman", "inspect", name, limit=60, what="inspect the container")
    return json.loads(done.stdout)[0]["State"]


def wait_healthy(storage: Storage, name: str, limit: float) -> float:
    """Seconds until the image's HEALTHCHECK passes (`podman healthcheck run`); Failed if the container exits
    or the limit passes first."""
    begun = time.monotonic()
    while time.monotonic() - begun < limit:
        state = container_state(storage, name)
        if state.get("Status") != "running":
            raise Failed(f"the container stopped before it was healthy: {state.get('Status')}, exit "
                         f"{state.get('ExitCode')}\n{tail(logs(storage, name))}")
        if storage.call("podman", "healthcheck", "run", name, limit=60, what="health check", check=False
                        ).returncode == 0:
            return time.monotonic() - begun
        time.sleep(3)
    raise Failed(f"not healthy within {limit:.0f} s\n{tail(logs(storage, name))}")


def logs(storage: Storage, name: str) -> bytes:
    done = storage.call("podman", "logs", name, limit=60, what="logs", check=False)
    return done.stdout + done.stderr


def test_images(data: Path, per_class: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The first `per_class` CIFAR-10 test images of each class (uint8 [N,32,32,3]), their labels, the classes."""
    classes = json.loads((ROOT / "models/cifarnet/config.json").read_text())["classes"]
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted((data / "test" / name).iterdir())[:per_class]
        if len(files) < per_class:
            raise Skip(f"{data / 'test' / name} holds fewer than {per_class} images")
        for path in files:
            images.append(np.asarray(Image.open(path).convert("RGB").resize((32, 32))))
            labels.append(label)
    return np.stack(images), np.array(labels), classes


def infer(client, images: np.ndarray, outputs: tuple[str, ...], request_id: str = "") -> dict[str, np.ndarray]:
    import tritonclient.grpc as triton

    image = triton.InferInput("IMAGE", list(images.shape), "UINT8")
    image.set_data_from_numpy(images)
    result = client.infer("cifarnet", [image], outputs=[triton.InferRequestedOutput(name) for name in outputs],
                          request_id=request_id, client_timeout=120)
    return {name: result.as_numpy(name) for name in outputs}


def check_requests(target: str, metrics_url: str, images: np.ndarray, labels: np.ndarray) -> dict:
    """The four outputs on real images, a malformed request, /metrics; returns the reference answers."""
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(target)
    if not (client.is_server_live() and client.is_server_ready() and client.is_model_ready("cifarnet")):
        raise Failed("the server is healthy but not live and ready over the Open Inference Protocol")
    answer = infer(client, images, ("LABEL", "PROBS", "SALIENCY", "ERASED_LABEL", "CORRECTED_LABEL"))
    count = len(images)
    label, probs = answer["LABEL"].astype(int), answer["PROBS"]
    accuracy = float((label == labels).mean())
    problems = []
    if accuracy < 0.8:
        problems.append(f"LABEL right on {accuracy:.0%} of the test images (the model makes about 91%)")
    if answer["SALIENCY"].shape != (count, 32, 32) or not np.isfinite(answer["SALIENCY"]).all():
        problems.append(f"SALIENCY of shape {answer['SALIENCY'].shape} or not finite")
    for name in ("ERASED_LABEL", "CORRECTED_LABEL"):
        if answer[name].shape != (count,) or not ((answer[name] >= 0) & (answer[name] < 10)).all():
            problems.append(f"{name} {answer[name].tolist()} not one class per image")
    if not (ROOT / "models/cifarnet/policy.json").exists() and (answer["CORRECTED_LABEL"] != answer["LABEL"]).any():
        problems.append("CORRECTED_LABEL differs from LABEL although the model has no correction policy")
    for one in range(2):
        if int(infer(client, images[one:one + 1], ("LABEL",))["LABEL"][0]) != label[one]:
            problems.append(f"image {one} alone is labelled differently from within the batch")
    count += 2
    try:
        malformed = triton.InferInput("IMAGE", [2, 32, 96], "UINT8")
        malformed.set_data_from_numpy(np.zeros((2, 32, 96), np.uint8))
        client.infer("cifarnet", [malformed], client_timeout=60)
        problems.append("a [2,32,96] image tensor was accepted")
    except triton.InferenceServerException as error:
        if error.status() != "StatusCode.INVALID_ARGUMENT" or not error.message():
            problems.append(f"a malformed request got {error.status()}: {error.message()!r}")
        malformed_answer = f"{error.status()}: {error.message()}"
    if not client.is_server_ready():
        problems.append("the server is not ready after a malformed request")
    with urllib.request.urlopen(metrics_url, timeout=30) as response:
        metrics = response.read().decode()
    served = re.search(r'^miscause_inference_count_total\{model="cifarnet",status="OK"\} (\S+)$', metrics, re.M)
    if served is None or float(served.group(1)) != count:
        problems.append(f"/metrics counts {served and served.group(1)} images inferred, {count} were sent")
    if problems:
        raise Failed("requests:\n" + "\n".join("    " + problem for problem in problems))
    top2 = np.sort(probs, axis=1)[:, -2:]
    return {"label": label, "clear": top2[:, 1] - top2[:, 0] > 0.01, "accuracy": accuracy, "images": count,
            "malformed": malformed_answer}


@dataclass
class Outcomes:
    """Per request id: the status a caller saw; requests answered with a wrong label; when SIGTERM was sent."""

    seen: dict[str, str] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    signalled_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def caller(index: int, target: str, images: np.ndarray, reference: dict, outcomes: Outcomes,
           stop: threading.Event) -> None:
    """Sends 8-image LABEL requests until refused after the signal, the stop, or 3,000 requests."""
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(target)
    pick = np.random.default_rng(index).permutation(len(images))[:8]
    for number in range(3000):
        if stop.is_set():
            return
        request_id = f"drain-{index}-{number}"
        try:
            label = infer(client, images[pick], ("LABEL",), request_id)["LABEL"].astype(int)
            status = "OK"
            if (label != reference["label"][pick])[reference["clear"][pick]].any():
                outcomes.wrong.append(request_id)
        except triton.InferenceServerException as error:
            status = str(error.status()).removeprefix("StatusCode.")
        with outcomes.lock:
            outcomes.seen[request_id] = status
        if status != "OK" and outcomes.signalled_at is not None:
            return


def check_drain(storage: Storage, name: str, target: str, images: np.ndarray, reference: dict) -> dict:
    """SIGTERM (podman stop) while callers keep the server busy: exit 0, nothing accepted lost."""
    outcomes, stop = Outcomes(), threading.Event()
    callers = [threading.Thread(target=caller, args=(index, target, images, reference, outcomes, stop), daemon=True)
               for index in range(4)]
    for thread in callers:
        thread.start()
    deadline = time.monotonic() + 60
    while sum(status == "OK" for status in list(outcomes.seen.values())) < 40 and time.monotonic() < deadline:
        time.sleep(0.2)
    outcomes.signalled_at = time.monotonic()
    storage.call("podman", "stop", "--time", "60", name, limit=120, what="stop the container")
    stopped = time.monotonic() - outcomes.signalled_at
    stop.set()
    for thread in callers:
        thread.join(60)
    state = container_state(storage, name)
    handled, draining, drained, stopped_report = {}, False, 0, None
    for line in logs(storage, name).decode(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            draining = draining or entry.get("message") == "draining"
            if entry.get("message") == "stopped":
                stopped_report = {key: entry.get(key) for key in ("accepted", "answered", "refused", "dropped",
                                                                   "cancelled", "unfinished")}
            if entry.get("message") == "infer" and str(entry.get("id", "")).startswith("drain-"):
                handled[entry["id"]] = entry["status"]
                if draining and entry["status"] == "OK":
                    drained += 1
    statuses = Counter(outcomes.seen.values())
    problems = []
    if state.get("ExitCode") != 0 or state.get("OOMKilled"):
        problems.append(f"exit {state.get('ExitCode')} (OOM killed: {state.get('OOMKilled')}) after SIGTERM")
    if set(statuses) - {"OK", "UNAVAILABLE"}:
        problems.append(f"callers saw {dict(statuses)}: only OK and UNAVAILABLE (refused) are allowed")
    lost = sorted(request for request, status in handled.items() if status == "OK" and outcomes.seen.get(request)
                  != "OK")
    if sum(status == "OK" for status in handled.values()) != statuses["OK"]:
        problems.append(f"the server logged {Counter(handled.values())} for the callers' {dict(statuses)}")
    if lost or set(handled.values()) - {"OK", "UNAVAILABLE"}:
        problems.append(f"accepted but not answered OK: {lost[:10]}; server statuses {Counter(handled.values())}")
    if stopped_report is None or stopped_report["dropped"] or stopped_report["unfinished"]:
        problems.append(f"the server's account of its drain: {stopped_report} (dropped and unfinished must be 0)")
    if not draining or not drained:
        problems.append(f"no request was answered OK after the server logged it was draining (logged the drain: "
                        f"{draining}): nothing was in flight to drain")
    if outcomes.wrong:
        problems.append(f"wrong labels in {outcomes.wrong[:10]}")
    if problems:
        raise Failed("SIGTERM:\n" + "\n".join("    " + problem for problem in problems)
                     + f"\n{tail(logs(storage, name), 15)}")
    return {"seconds": stopped, "statuses": dict(statuses), "drained": drained, "account": stopped_report,
            "handled": sum(status == "OK" for status in handled.values())}


def clean(storage: Storage) -> None:
    """Remove the containers, images and build storage: everything under --work."""
    for tool, args in (("podman", ("rm", "--all", "--force")), ("buildah", ("rm", "--all")),
                       ("podman", ("rmi", "--all", "--force"))):
        if (storage.work / "storage").exists() and shutil.which(tool):
            storage.call(tool, *args, limit=300, what=f"{tool} {args[0]}", check=False)
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
              if line.split()[1].startswith(str(storage.work) + "/")]
    for mount in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mount], capture_output=True, timeout=60)
    shutil.rmtree(storage.work, ignore_errors=True)
    if storage.work.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(storage.work)], capture_output=True, timeout=600)


def check(args: argparse.Namespace, storage: Storage, started: float) -> dict:
    if sys.platform != "linux":
        raise Skip("containers are built and run with buildah and podman on Linux only")
    if not (args.data / "test").is_dir():
        raise Skip(f"CIFAR-10 not found at {args.data} (set MISCAUSE_DATA)")
    clean(storage)  # what an interrupted run left behind
    args.work.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.work.parent).free
    if free < args.min_free_gb * 1e9:
        raise Skip(f"{free / 1e9:.1f} GB free under {args.work.parent}; the check needs {args.min_free_gb} GB")
    install_tools()
    images, labels, _ = test_images(args.data, args.per_class)
    (args.work / "tmp").mkdir(parents=True, exist_ok=True)
    say(started, f"tools ready; {free / 1e9:.0f} GB free; storage under {shown(args.work)}")
    base_args = base_image(storage, args, started)
    begun = time.monotonic()
    say(started, f"building {IMAGE} with buildah (at most {args.build_limit:.0f} s)")
    build(storage, base_args, args)
    report = {"build_seconds": time.monotonic() - begun}
    say(started, f"built {IMAGE} in {report['build_seconds']:.0f} s")
    report["image"] = inspect_image(storage)
    say(started, f"image: {report['image']['size'] / 1e9:.2f} GB, user {report['image']['user']}, "
                 f"{report['image']['packages']} Python distributions (runtime lock only), each CUDA library once")
    report.update(exercise(storage, args, images, labels, started))
    return report


def exercise(storage: Storage, args: argparse.Namespace, images: np.ndarray, labels: np.ndarray,
             started: float) -> dict:
    """Run the built image, wait until healthy, send requests, read /metrics, stop it under load."""
    report = {}
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    name = f"miscause-check-{os.getpid()}"
    storage.call("podman", "run", "--detach", "--name", name, *RUN_FLAGS, "--publish", f"127.0.0.1:{grpc_port}:8001",
                 "--publish", f"127.0.0.1:{http_port}:8000", "--publish", f"127.0.0.1:{metrics_port}:8002", IMAGE,
                 "--grpc-port", "8001", "--http-port", "8000", "--metrics-port", "8002", "--drain-seconds", "25",
                 "--log-level", "debug", limit=120, what="start the container")
    report["healthy_seconds"] = wait_healthy(storage, name, args.health_limit)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=30) as response:
            rest = response.status
    except OSError as error:
        raise Failed(f"the HTTP/REST front end on 8000 does not answer /v2/health/ready: {error}") from None
    say(started, f"healthy after {report['healthy_seconds']:.0f} s (the image's HEALTHCHECK); "
                 f"GET /v2/health/ready on 8000: {rest}")
    target = f"127.0.0.1:{grpc_port}"
    reference = check_requests(target, f"http://127.0.0.1:{metrics_port}/metrics", images, labels)
    report["requests"] = {key: reference[key] for key in ("accuracy", "images", "malformed")}
    say(started, f"tritonclient: LABEL {reference['accuracy']:.0%} right on {len(images)} CIFAR-10 test images, "
                 f"PROBS, SALIENCY, ERASED_LABEL, CORRECTED_LABEL; malformed -> {reference['malformed']}; "
                 f"/metrics counts {reference['images']} images")
    report["drain"] = check_drain(storage, name, target, images, reference)
    say(started, f"SIGTERM under load: exit 0 in {report['drain']['seconds']:.1f} s; callers saw "
                 f"{report['drain']['statuses']}, {report['drain']['drained']} answered once draining; "
                 f"every request the server accepted answered ({report['drain']['handled']} OK); its account: "
                 f"{report['drain']['account']}")
    return report


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "docker-check",
                        help="folder for the build storage, removed at the end (default %(default)s)")
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("MISCAUSE_DATA", ROOT.parent / "shared" / "data" / "cifar10")),
                        help="CIFAR-10 image folder (default $MISCAUSE_DATA, else ../shared/data/cifar10)")
    parser.add_argument("--per-class", type=int, default=2, help="test images per class (default %(default)s)")
    parser.add_argument("--mirror", default="http://deb.debian.org/debian", help="Debian mirror for debootstrap")
    parser.add_argument("--pip-ca", type=Path, default=Path("/etc/ssl/certs/ca-certificates.crt"),
                        help="CA bundle handed to the build as the secret pip-ca, when it exists")
    parser.add_argument("--min-free-gb", type=float, default=30.0,
                        help="free disk needed, or the check skips (default %(default)s)")
    parser.add_argument("--build-limit", type=float, default=1800.0, help="seconds the build may take")
    parser.add_argument("--health-limit", type=float, default=300.0, help="seconds until healthy")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.work = args.work.resolve()
    started = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    storage = Storage(args.work)
    peak = DiskPeak(args.work)
    peak.start()
    try:
        report = check(args, storage, started)
    except Skip as reason:
        print(f"docker-check: SKIPPED, not run: {reason}", flush=True)
        return 0
    except Failed as reason:
        print(f"docker-check: FAILED after {time.monotonic() - started:.0f} s: {reason}", flush=True)
        return 1
    finally:
        peak.done.set()
        peak.join()
        clean(storage)
        say(started, f"removed the container, the images and the build storage ({shown(args.work)} exists: "
                     f"{args.work.exists()})")
    print(f"docker-check: PASSED in {time.monotonic() - started:.0f} s; image {report['image']['size'] / 1e9:.2f} "
          f"GB; peak disk under {shown(args.work)}: {peak.peak / 1e9:.1f} GB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
