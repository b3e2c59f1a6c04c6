"""Which environment grafted Python transforms run in, and which SDK version it is.

Beam's cache transforms are Python DoFns and coders. They must run where the
pipeline's other Python transforms run: the same container image, the same
staged artifacts, the same capabilities and resource hints, so they go into
the pipeline's own Python SDK environment, never a copy of the one the
installed SDK builds its templates with. A pipeline with no Python
environment (every transform from another SDK) gets one for the installed
Beam, built by Beam's own ``Environment.from_options`` (Docker by default,
``--environment-type`` / ``--environment-config`` as Beam spells them).

Nothing here imports the Beam SDK except :func:`new_python_environment` and
:func:`environment_from_options`.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from beaminst.errors import BeaminstError
from beaminst.graph.index import Node, read_nodes
from beaminst.model import urns
from beaminst.options import unknown_environment_type

# apache/beam_python3.11_sdk:2.77.0, gcr.io/.../beam_python3.10_sdk:2.71.0rc1, ...
_PYTHON_IMAGE = re.compile(r"beam_python(?P<py>\d+(?:\.\d+)?)_sdk(?::(?P<tag>[^@/\s]+))?")
_VERSION = re.compile(r"^(?P<major>\d+)\.(?P<minor>\d+)(?:\.(?P<patch>\d+))?")


def _is_python_transform(urn: str, info: urns.PayloadInfo | None) -> bool:
    """A transform carrying a Python function (its DoFn, CombineFn, ...), by
    its URN and its payload's info (None: the payload does not parse)."""
    if urn == urns.PICKLED_TRANSFORM:
        return True
    return info is not None and bool(info.functions & urns.PYTHON_FUNCTIONS)


def says_python(env: Any) -> bool:
    """An environment that declares itself a Python SDK's."""
    if env.urn in urns.PYTHON_ENVIRONMENTS:
        return True
    if any(c.startswith(urns.SDK_BASE_CAPABILITY) and "beam_python" in c for c in env.capabilities):
        return True
    return env.urn == urns.ENV_DOCKER and _PYTHON_IMAGE.search(_docker_image(env) or "") is not None


def python_environment(pipeline: Any, nodes: Mapping[str, Node] | None = None) -> str | None:
    """The id of the environment the pipeline's Python transforms use: the one
    most of them name (ties: the smallest id); else an environment that says
    it is Python's; None when there is none. ``nodes``: the transforms'
    (:func:`beaminst.graph.index.read_nodes`), when read already."""
    c = pipeline.components
    if nodes is None:
        nodes = read_nodes(c.transforms)
    counts: Counter[str] = Counter(
        n.environment_id for n in nodes.values()
        if n.environment_id in c.environments and _is_python_transform(n.urn, n.info)
    )
    counts.update(
        ws.environment_id for ws in c.windowing_strategies.values()
        if ws.environment_id in c.environments and ws.window_fn.urn == urns.PICKLED_WINDOW_FN
    )
    if counts:
        return min(counts, key=lambda e: (-counts[e], e))
    for eid in sorted(c.environments):
        if says_python(c.environments[eid]):
            return eid
    return None


def _docker_image(env: Any) -> str | None:
    if env.urn != urns.ENV_DOCKER:
        return None
    from beaminst.model.beamproto import runner_api

    try:
        return runner_api().DockerPayload.FromString(env.payload).container_image
    except Exception:
        return None


@dataclass(frozen=True, order=True)
class SdkVersion:
    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> SdkVersion | None:
        m = _VERSION.match(text.strip())
        if m is None:
            return None
        return cls(int(m["major"]), int(m["minor"]), int(m["patch"] or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


class Declared(NamedTuple):
    """What an environment says of its workers, and where it says it."""

    value: Any  # an SdkVersion, or a Python version string ("3.12")
    where: str  # "container image ..." or "capability ..."
    from_image: bool  # the Docker image (what runs) rather than a capability (what saved it)


def declared_sdk_version(env: Any) -> Declared | None:
    """The Python SDK version an environment says it runs, and where it says
    so: a Docker image tag (``beam_python3.11_sdk:2.77.0``: what the workers
    run), else a ``beam:version:sdk_base:<image>`` capability (what the SDK
    that saved the pipeline advertises: Beam writes its own default image
    there whatever image is configured, for every kind of environment). A
    tag that is no Beam 2.x version (a custom image's own) is passed over.
    None when nothing says (the placeholder ``beam:env:default:v1``, a
    pipeline saved without capabilities)."""
    for m, where, from_image in _python_images(env):
        version = SdkVersion.parse(m["tag"]) if m["tag"] else None
        if version is not None and version.major == 2:
            return Declared(version, where, from_image)
    return None


def declared_python(env: Any) -> Declared | None:
    """The Python version (``3.12``) an environment's image names, and where
    (a container image, which runs it, or a capability, which the Python that
    saved the pipeline wrote), in the order :func:`declared_sdk_version` reads them."""
    for m, where, from_image in _python_images(env):
        if "." in m["py"]:
            return Declared(m["py"], where, from_image)
    return None


def _python_images(env: Any) -> list[tuple[Any, str, bool]]:
    """The Beam Python image names an environment holds, what runs first:
    its Docker image, then its ``sdk_base`` capabilities."""
    found = []
    image = _docker_image(env)
    m = _PYTHON_IMAGE.search(image) if image else None
    if m:
        found.append((m, f"container image {image}", True))
    for cap in env.capabilities:
        if cap.startswith(urns.SDK_BASE_CAPABILITY):
            m = _PYTHON_IMAGE.search(cap[len(urns.SDK_BASE_CAPABILITY):])
            if m:
                found.append((m, f"capability {cap}", False))
    return found


# What PROCESS and EXTERNAL environments need to start a worker.
# By the environment's URN: Beam takes the type as PROCESS or as beam:env:process:v1.
_NEEDS = {urns.ENV_PROCESS: 'the boot command as JSON, {"command": "/opt/apache/beam/boot"}',
          urns.ENV_EXTERNAL: "the worker pool's address, HOST:PORT"}
_TYPE_URNS = {"PROCESS": urns.ENV_PROCESS, "EXTERNAL": urns.ENV_EXTERNAL}


def _nothing_to_start(environment_type: str, urn: str) -> BeaminstError:
    return BeaminstError(f"--environment-type {environment_type} needs --environment-config: {_NEEDS[urn]}")


def _starts_nothing(env: Any) -> bool:
    """A process environment with no boot command, or an external one with no
    worker pool address: a worker nobody can start."""
    from apache_beam.portability.api import beam_runner_api_pb2 as rapi

    if env.urn == urns.ENV_PROCESS:
        return not rapi.ProcessPayload.FromString(env.payload).command
    if env.urn == urns.ENV_EXTERNAL:
        return not rapi.ExternalPayload.FromString(env.payload).endpoint.url
    return False


def environment_from_options(options: Any) -> Any:
    """The environment proto Beam's ``Environment.from_options`` builds from
    ``options``' ``--environment_type`` / ``--environment_config`` (and
    ``--environment_options``), refusing one that starts nothing: Beam takes a
    missing command or address as an empty one, and fails with a TypeError on
    an EXTERNAL environment with no config. Beam's own errors (a config that
    is not JSON, an unknown type) propagate."""
    from apache_beam.options.pipeline_options import PortableOptions
    from apache_beam.runners.pipeline_context import PipelineContext
    from apache_beam.transforms import environments

    portable = options.view_as(PortableOptions)
    kind = portable.environment_type or "DOCKER"
    urn = _TYPE_URNS.get(kind, kind)  # Beam spells types in capitals, or as their URN
    if urn == urns.ENV_EXTERNAL and portable.environment_config is None:  # Beam would raise a TypeError
        raise _nothing_to_start(kind, urn)
    try:
        env = environments.Environment.from_options(portable).to_runner_api(PipelineContext())
    except ValueError as e:
        if not str(e).startswith("Unknown environment type"):
            raise
        raise BeaminstError(f"--environment-type {kind}: {unknown_environment_type(kind)}") from None
    if _starts_nothing(env):
        raise _nothing_to_start(kind, env.urn)
    return env


def new_python_environment(environment_type: str | None, environment_config: str | None) -> Any:
    """A Python SDK environment for the installed Beam, as Beam's
    ``Environment.from_options`` builds it (capabilities, artifacts and all)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    args = [f"--environment_type={environment_type or 'DOCKER'}"]
    if environment_config:
        args.append(f"--environment_config={environment_config}")
    if (environment_type or "DOCKER").upper() in ("LOOPBACK", "EMBEDDED"):
        raise BeaminstError(
            f"--environment-type {environment_type} only exists while a runner process is alive; "
            "use DOCKER, PROCESS or EXTERNAL for a saved pipeline"
        )
    try:
        return environment_from_options(PipelineOptions(args))
    except BeaminstError:
        raise
    except Exception as e:
        raise BeaminstError(f"cannot build a Python SDK environment from --environment-type/--environment-config: {e}") from None


# The oldest Python SDK worker that loads the cache transforms the installed
# Beam builds (measured: see the README's "Worker SDK versions").
OLDEST_WORKER = SdkVersion(2, 68)


def installed_sdk_version() -> SdkVersion:
    from beaminst.model.beamproto import beam_version

    version = SdkVersion.parse(beam_version())
    assert version is not None
    return version


def check_worker_sdk(
    pipeline: Any, target_sdk: str | None, nodes: Mapping[str, Node] | None = None,
    environment_type: str | None = None, environment_config: str | None = None,
) -> list[str]:
    """Refuse when the workers that will run ``pipeline`` cannot load the
    pickles the installed Beam builds; returns warnings for workers newer
    than the installed Beam (not measured) and for workers of another Python
    version (Beam pickles functions by value as this Python's bytecode).

    The worker is described by ``target_sdk`` when given, else by the
    pipeline's Python environment, else (another SDK's pipeline, which gets
    a Python environment added) by the Docker image ``environment_config``
    names; one that says nothing is trusted. ``nodes``: as for
    :func:`python_environment`."""
    env = None
    eid = python_environment(pipeline, nodes)
    if eid is not None:
        env, named = pipeline.components.environments[eid], f"environment {eid!r}"
    elif (environment_type or "DOCKER").upper() in ("DOCKER", urns.ENV_DOCKER.upper()) and environment_config:
        env, named = _docker_environment(environment_config), "the environment added from --environment-config"
    warnings = []
    python = declared_python(env) if env is not None else None
    if python is not None and python.value != _running_python():
        said = "runs" if python.from_image else "was saved by"
        warnings.append(
            f"{named} ({python.where}) {said} Python {python.value}, but the cache transforms were pickled by Python "
            f"{_running_python()} here, and Beam pickles functions by value as bytecode, which loads only on the "
            f"Python that made it: run beaminst under Python {python.value}"
        )
    if target_sdk is not None:
        version = SdkVersion.parse(target_sdk)
        if version is None or not re.fullmatch(r"\d+\.\d+(\.\d+)?(\S*)", target_sdk.strip()):
            raise BeaminstError(f"--target-sdk {target_sdk!r} is not a Beam version such as 2.77.0")
        where, declared = f"--target-sdk {target_sdk}", None
    else:
        declared = declared_sdk_version(env) if env is not None else None
        if declared is None:
            return warnings
        version, where = declared.value, f"{named} ({declared.where})"
    installed = installed_sdk_version()
    if version < OLDEST_WORKER:
        span = f"{OLDEST_WORKER.major}.{OLDEST_WORKER.minor} to {installed.major}.{installed.minor}"
        if target_sdk is not None:
            fix = f"run its workers on apache-beam {span}"
        elif declared is not None and declared.from_image:
            how = "--environment-config" if eid is None else "--environment_config when saving it"
            fix = f"give it a Beam Python image of {span} ({how}), or pass --target-sdk if its workers run another version"
        else:
            fix = (f"re-save the pipeline with apache-beam>={OLDEST_WORKER.major}.{OLDEST_WORKER.minor}, or pass "
                   "--target-sdk if its workers run another version")
        raise BeaminstError(
            f"{where} means Beam Python {version} workers, but the cache transforms apache-beam {installed} builds "
            f"load only on Python SDK workers {span}: {fix}"
        )
    if (version.major, version.minor) > (installed.major, installed.minor):
        warnings.append(
            f"{where} runs Beam Python {version}, newer than the apache-beam {installed} that built the cache "
            f"transforms (tested on workers {OLDEST_WORKER.major}.{OLDEST_WORKER.minor} to {installed.major}.{installed.minor})"
        )
    return warnings


def _running_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _docker_environment(image: str) -> Any:
    """A Docker environment proto naming ``image`` (what reading its version needs)."""
    from beaminst.model.beamproto import runner_api

    rapi = runner_api()
    return rapi.Environment(urn=urns.ENV_DOCKER, payload=rapi.DockerPayload(container_image=image).SerializeToString())
