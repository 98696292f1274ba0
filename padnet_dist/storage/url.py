"""URL parsing and joining for local paths, ``file://`` URLs and ``s3://bucket/key`` URLs.

Local URLs keep the form they were given in (a plain path stays a path, ``file://`` stays ``file://``), so
URLs built with ``join_url`` or returned by ``Storage.list`` can be shown to the user as they typed them.
"""

from __future__ import annotations

from padnet_dist.errors import UserError

SUPPORTED_SCHEMES = ("s3", "file")


def scheme_of(url: str) -> str:
    """``"s3"`` for ``s3://``, ``"file"`` for a path or ``file://``; a UserError for anything else."""
    url = str(url)
    if "://" not in url:
        return "file"
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SUPPORTED_SCHEMES:
        raise UserError(f"unsupported storage URL '{url}': use a local path, file:// or s3://bucket/key")
    return scheme


def is_s3(url: str) -> bool:
    return scheme_of(url) == "s3"


def split_s3(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``; the key may be empty."""
    if scheme_of(url) != "s3":
        raise UserError(f"'{url}' is not an s3:// URL")
    rest = str(url).split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise UserError(f"'{url}' has no bucket: write s3://BUCKET/key")
    return bucket, key


def local_path(url: str) -> str:
    """The filesystem path of a local path or ``file://`` URL."""
    url = str(url)
    if "://" not in url:
        return url
    if scheme_of(url) != "file":
        raise UserError(f"'{url}' is not a local path or file:// URL")
    return url.split("://", 1)[1]


def join_url(base: str, *parts: str) -> str:
    """Join path components onto a path or URL with ``/``; leading/trailing slashes of parts are ignored."""
    out = str(base)
    for part in parts:
        part = str(part).strip("/")
        if not part:
            continue
        out = part if not out else out.rstrip("/") + "/" + part
    return out


def parent_url(url: str) -> str:
    """The directory holding ``url`` (``s3://b/d/x.json`` -> ``s3://b/d``, ``x.json`` -> ``.``)."""
    url = str(url).rstrip("/")
    head, sep, _ = url.rpartition("/")
    if not sep:
        return "."
    if head.endswith(":/"):  # "s3://bucket" has no parent: it is the root
        return url
    return head or "/"


def basename_url(url: str) -> str:
    return str(url).rstrip("/").rpartition("/")[2]
