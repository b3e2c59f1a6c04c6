"""Where a cache directory lives: a local path, or a URL on one of Beam's filesystems.

Interactive Beam's ``FileBasedCacheManager`` reads and writes through Beam's
``FileSystems``, so its cache can live on any filesystem Beam has
(``gs://``, ``s3://``, ``azfs://``, ``hdfs://``): the one a cluster's workers
all reach. A URL is kept exactly as given (never made into a local path); a
local path is made absolute, so workers with another working directory find
it.

Everything about URLs goes through Beam's ``FileSystems``, imported only when
a cache dir is a URL (``analyze`` with a local cache never imports the SDK):

* :func:`check_url`: a scheme Beam has, with its extra installed
  (``apache-beam[gcp]``, ``[aws]``, ``[azure]``, ``[hadoop]``), and no glob
  characters (Beam's readers glob under the cache dir);
* :func:`list_full`: ``<url>/full`` listed with ``FileSystems.match``, capped
  (:data:`MAX_ENTRIES`) and within a deadline (:data:`TIMEOUT`), after a probe
  that the bucket exists and answers (S3 and GCS say "no files" for a bucket
  that does not exist);
* :func:`filesystem_options`: the filesystem's own options (endpoint,
  credentials, region, project...) as Beam pipeline options,
  ``FileSystems.set_options(PipelineOptions(args))`` while a block runs.

Every failure is one :class:`~beaminst.errors.CacheDirError` naming the cache
dir and what to install or set.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

from beaminst.errors import CacheDirError
from beaminst.limits import env_limit

# Beam's FileSystems.URI_SCHEMA_PATTERN: what Beam itself takes for a URL.
_URL = re.compile(r"(?P<scheme>[a-zA-Z][-a-zA-Z0-9+.]*)://")
_GLOB = re.compile(r"[*?\[\]{}]")

MAX_ENTRIES = int(env_limit("BEAMINST_MAX_CACHE_ENTRIES"))
TIMEOUT = float(env_limit("BEAMINST_CACHE_TIMEOUT"))


@dataclass(frozen=True)
class Scheme:
    extra: str  # the apache-beam extra that brings its client
    module: str  # importable once the extra is installed
    settings: str  # what to set when it cannot be reached


SCHEMES = {
    "gs": Scheme(
        "gcp", "google.cloud.storage",
        "credentials (gcloud auth application-default login, or GOOGLE_APPLICATION_CREDENTIALS) and "
        "--pipeline-arg=--project=PROJECT",
    ),
    "s3": Scheme(
        "aws", "boto3",
        "--pipeline-arg=--s3_region_name=REGION (and --s3_endpoint_url=URL for a server other than AWS), "
        "credentials with --pipeline-arg=--s3_access_key_id=... --pipeline-arg=--s3_secret_access_key=... "
        "or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
    ),
    "azfs": Scheme(
        "azure", "azure.storage.blob",
        "--pipeline-arg=--azure_connection_string=... (or --blob_service_endpoint=URL with "
        "--azure_managed_identity_client_id=ID)",
    ),
    "hdfs": Scheme(
        "hadoop", "hdfs", "--pipeline-arg=--hdfs_host=HOST --pipeline-arg=--hdfs_port=PORT --pipeline-arg=--hdfs_user=USER",
    ),
}


def scheme(path: str) -> str | None:
    """The URL scheme of ``path`` (``gs``, ``s3``...), None for a local path."""
    m = _URL.match(path.strip())
    return m["scheme"] if m else None


def is_url(path: str | None) -> bool:
    return path is not None and scheme(path) is not None


def resolve(cache_dir: str) -> str:
    """What the grafted cache transforms name: a URL as given (no trailing
    ``/``), a local path made absolute."""
    if is_url(cache_dir):
        head, sep, rest = cache_dir.partition("://")
        return head + sep + rest.rstrip("/") if rest.strip("/") else cache_dir
    return os.path.abspath(cache_dir)


def join(cache_dir: str, *parts: str) -> str:
    """``cache_dir/part/...``, '/'-separated for a URL (as Beam's filesystems join)."""
    if is_url(cache_dir):
        return "/".join([cache_dir.rstrip("/"), *parts])
    return os.path.join(cache_dir, *parts)


# ---------------------------------------------------------------------------
# Options


@contextlib.contextmanager
def filesystem_options(args: Sequence[str]) -> Iterator[None]:
    """Beam's filesystems configured from pipeline options ``args``
    (``--s3_endpoint_url=...``) while the block runs, as a pipeline run
    configures them; the previous options afterwards. No ``args``: nothing is
    touched (and the SDK is not imported)."""
    if not args:
        yield
        return
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    bad = [a for a in args if not a.startswith("--")]
    if bad:
        raise CacheDirError(f"{bad[0]!r} is not a Beam option (--flag=value)", "--pipeline-arg")
    saved = FileSystems._pipeline_options
    FileSystems.set_options(PipelineOptions(list(args)))
    try:
        yield
    finally:
        FileSystems.set_options(saved)


def _current_options() -> Any:
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.options.value_provider import RuntimeValueProvider

    return FileSystems._pipeline_options or RuntimeValueProvider.runtime_options or PipelineOptions([])


# ---------------------------------------------------------------------------
# Checks


def check_url(url: str) -> None:
    """Fail, naming what to do, unless Beam can use ``url`` from this process:
    a scheme one of its filesystems serves, with that filesystem's extra
    installed, and no glob characters."""
    name = scheme(url) or ""
    if _GLOB.search(url):
        raise CacheDirError(
            "a cache URL cannot hold glob characters (* ? [ ] { }): Beam's cache readers glob under it", url
        )
    if not url.split("://", 1)[1].strip("/"):
        raise CacheDirError(f"names no bucket or directory after {name}://", url)
    known = SCHEMES.get(name)
    if known is not None:
        try:
            importlib.import_module(known.module)
        except ImportError:
            raise CacheDirError(
                f"{name}:// needs Beam's {known.extra} filesystem, which is not installed: "
                f"pip install 'apache-beam[{known.extra}]{_beam_pin()}' (in the same environment as beaminst)",
                url,
            ) from None
    if name not in _registered_schemes():
        offered = ", ".join(f"{s}://" for s in sorted(set(SCHEMES) | _registered_schemes()))
        hint = " (a local path needs no scheme)" if name == "file" else ""
        raise CacheDirError(
            f"Beam has no filesystem for {name}://{hint}: a cache dir is a local path or a URL on one of {offered}",
            url,
        )


# Top-level modules an apache-beam extra installs, for a ModuleNotFoundError
# the pipeline's own IO raises (a Pub/Sub source needs google.cloud).
_EXTRA_OF_MODULE = {
    "google": "gcp", "googleapiclient": "gcp", "boto3": "aws", "botocore": "aws", "azure": "azure", "hdfs": "hadoop",
}


def extra_install_hint(module: str | None) -> str | None:
    """``pip install 'apache-beam[<extra>]==<version>'`` for a missing module
    an extra of Beam brings, else None."""
    extra = _EXTRA_OF_MODULE.get((module or "").split(".")[0])
    return None if extra is None else f"pip install 'apache-beam[{extra}]{_beam_pin()}'"


def _beam_pin() -> str:
    """``==<the installed Beam>``: the extra must not move Beam to another release."""
    from importlib import metadata

    try:
        return "==" + metadata.version("apache-beam")
    except metadata.PackageNotFoundError:  # pragma: no cover - beaminst depends on it
        return ""


def _registered_schemes() -> set[str]:
    from apache_beam.io.filesystem import FileSystem
    from apache_beam.io.filesystems import FileSystems  # noqa: F401 - registers Beam's filesystems

    return {s for fs in FileSystem.get_all_subclasses() if (s := fs.scheme())}


# ---------------------------------------------------------------------------
# Listing and reading


@dataclass(frozen=True)
class Entry:
    name: str  # relative to <url>/full
    size: int
    mtime: float  # seconds since the epoch, as the filesystem reports it


def list_full(url: str) -> list[Entry]:
    """The objects directly in ``<url>/full`` (none when it does not exist),
    sorted by name: checked, probed, capped and within :data:`TIMEOUT`."""
    check_url(url)
    return _within_deadline(url, lambda: _list_full(url))


def _list_full(url: str) -> list[Entry]:
    from apache_beam.io.filesystems import FileSystems

    _probe(url)
    full = join(url, "full") + "/"
    try:
        matched = FileSystems.match([full + "*"], limits=[MAX_ENTRIES + 1])[0].metadata_list
    except Exception as e:
        raise CacheDirError(f"cannot list full/: {_one_line(e)}; {_settings(url)}", url) from None
    if len(matched) > MAX_ENTRIES:
        raise CacheDirError(
            f"full/ holds more than {MAX_ENTRIES} entries (BEAMINST_MAX_CACHE_ENTRIES raises the cap)", url
        )
    out = []
    for m in matched:
        name = m.path[len(full):] if m.path.startswith(full) else m.path.rsplit("/", 1)[-1]
        if name and "/" not in name:
            out.append(Entry(name, int(m.size_in_bytes), float(m.last_updated_in_seconds or 0)))
    return sorted(out, key=lambda e: e.name)


def _probe(url: str) -> None:
    """That the bucket exists and answers with these options. Beam's S3 and
    GCS listings say "no files" for a bucket that does not exist, which would
    pass for an empty cache."""
    name = scheme(url)
    bucket = url.split("://", 1)[1].split("/", 1)[0]
    if name == "s3":
        _probe_s3(url, bucket)
    elif name == "gs":
        _probe_gcs(url, bucket)


def _probe_s3(url: str, bucket: str) -> None:
    from apache_beam.io.aws.clients.s3 import boto3_client

    try:
        client = boto3_client.Client(_current_options()).client  # Beam's own client: the same options
        client.head_bucket(Bucket=bucket)
    except Exception as e:
        code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            raise CacheDirError(f"bucket {bucket!r} does not exist (create it, or check --s3_endpoint_url)", url) from None
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise CacheDirError(f"access to bucket {bucket!r} denied ({code}): {_settings(url)}", url) from None
        raise CacheDirError(f"cannot reach bucket {bucket!r}: {_one_line(e)}; {_settings(url)}", url) from None


def _probe_gcs(url: str, bucket: str) -> None:
    from apache_beam.io.gcp import gcsio

    try:
        found = gcsio.GcsIO(pipeline_options=_current_options()).get_bucket(bucket)
    except Exception as e:
        raise CacheDirError(f"cannot reach bucket {bucket!r}: {_one_line(e)}; {_settings(url)}", url) from None
    if found is None:
        raise CacheDirError(f"bucket {bucket!r} does not exist (or these credentials cannot see it)", url)


def open_file(url: str, rel: str) -> BinaryIO:
    """``<url>/<rel>`` opened for reading as it is (no decompression), through
    Beam's filesystem; the caller bounds what it reads."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    try:
        return FileSystems.open(join(url, rel), compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as e:
        raise CacheDirError(f"cannot read {rel}: {_one_line(e)}", url) from None


T = TypeVar("T")


def _within_deadline(url: str, fn: Callable[[], T]) -> T:
    """``fn()``, or a CacheDirError after :data:`TIMEOUT` seconds: Beam's
    filesystems retry an unreachable server with backoff for minutes."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    worker = threading.Thread(target=target, name="beaminst-cache-listing", daemon=True)
    worker.start()
    worker.join(TIMEOUT)
    if worker.is_alive():
        raise CacheDirError(
            f"no answer within {TIMEOUT:g} s (BEAMINST_CACHE_TIMEOUT raises the limit); {_settings(url)}", url
        )
    if "error" in box:
        raise box["error"]
    return box["value"]


def _settings(url: str) -> str:
    known = SCHEMES.get(scheme(url) or "")
    return f"check {known.settings}" if known else "check the filesystem's options (--pipeline-arg=--flag=value)"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."
