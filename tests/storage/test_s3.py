"""S3 storage against a real moto_server endpoint: roundtrips, multipart, errors, atomicity, pickling."""

from __future__ import annotations

import os
import pickle

import pytest

from padnet_dist.config.run import StorageConfig
from padnet_dist.errors import UserError
from padnet_dist.storage import StorageNotFound, storage_for
from padnet_dist.storage.s3 import S3Storage

pytestmark = pytest.mark.integration


def test_roundtrip_list_exists_delete(s3):
    st = storage_for(s3.url(), s3.storage_cfg)
    assert isinstance(st, S3Storage)
    st.write_bytes(s3.url("run/a/x.bin"), b"hello")
    st.write_bytes(s3.url("run/b.bin"), b"")
    st.write_bytes(s3.url("runner/c.bin"), b"c")  # shares the string prefix "run" but not the directory
    assert st.read_bytes(s3.url("run/a/x.bin")) == b"hello"
    assert st.read_bytes(s3.url("run/b.bin")) == b""
    with st.open_read(s3.url("run/a/x.bin")) as f:
        assert f.read(2) == b"he" and f.read() == b"llo"
    assert st.list(s3.url("run")) == [s3.url("run/a/x.bin"), s3.url("run/b.bin")]
    assert st.list(s3.url("run/")) == st.list(s3.url("run"))
    assert st.list(s3.url()) == [s3.url("run/a/x.bin"), s3.url("run/b.bin"), s3.url("runner/c.bin")]
    assert st.list(s3.url("empty")) == []
    assert st.exists(s3.url("run/b.bin")) and not st.exists(s3.url("run/nope"))
    st.delete(s3.url("run/b.bin"))
    st.delete(s3.url("run/b.bin"))
    assert not st.exists(s3.url("run/b.bin"))


def test_multipart_put_and_get(s3, tmp_path):
    cfg = StorageConfig(endpoint_url=s3.endpoint_url, multipart_threshold_mb=5)
    st = storage_for(s3.url(), cfg)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(11 * 2**20))
    st.put_file(str(src), s3.url("big.bin"))
    etag = s3.client().head_object(Bucket=s3.bucket, Key="big.bin")["ETag"]
    assert etag.strip('"').endswith("-3")  # three parts: the upload really was multipart
    st.get_file(s3.url("big.bin"), str(tmp_path / "back/big.bin"))
    assert (tmp_path / "back/big.bin").read_bytes() == src.read_bytes()
    assert st.read_bytes(s3.url("big.bin")) == src.read_bytes()


def test_missing_object_error_names_url_not_credentials(s3, tmp_path):
    st = storage_for(s3.url(), s3.storage_cfg)
    url = s3.url("does/not/exist.json")
    calls = [
        lambda: st.read_bytes(url),
        lambda: st.open_read(url),
        lambda: st.get_file(url, str(tmp_path / "x")),
        lambda: storage_for("s3://no-such-bucket-here/x", s3.storage_cfg).read_bytes("s3://no-such-bucket-here/x"),
    ]
    for call in calls:
        with pytest.raises(StorageNotFound) as info:
            call()
        message = str(info.value)
        assert isinstance(info.value, UserError) and isinstance(info.value, FileNotFoundError)
        assert "s3://" in message and "\n" not in message
        for secret in (os.environ["AWS_SECRET_ACCESS_KEY"], os.environ["AWS_ACCESS_KEY_ID"]):
            assert secret not in message and secret not in repr(st)
    assert not (tmp_path / "x").exists()


def test_failed_multipart_upload_keeps_old_object(s3, tmp_path):
    cfg = StorageConfig(endpoint_url=s3.endpoint_url, multipart_threshold_mb=5, max_attempts=1)
    st = storage_for(s3.url(), cfg)
    st.write_bytes(s3.url("shard.tar"), b"old content")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(11 * 2**20))
    num_parts = []

    def fail_second_part(**kwargs):
        num_parts.append(1)
        if len(num_parts) == 2:
            raise RuntimeError("connection lost in the middle of the upload")

    # Fault injection on the real client: the second part of the multipart upload never reaches the server.
    st.client().meta.events.register("before-send.s3.UploadPart", fail_second_part)
    try:
        with pytest.raises(Exception, match="connection lost"):
            st.put_file(str(src), s3.url("shard.tar"))
    finally:
        st.client().meta.events.unregister("before-send.s3.UploadPart", fail_second_part)
    assert st.read_bytes(s3.url("shard.tar")) == b"old content"
    assert s3.client().list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []


def test_storage_survives_pickling_into_another_process(s3):
    import multiprocessing

    st = storage_for(s3.url(), s3.storage_cfg)
    st.write_bytes(s3.url("in.txt"), b"42")
    st.client()  # a live client must not stop pickling
    clone = pickle.loads(pickle.dumps(st))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_copy_in_child, (clone, s3.url("in.txt"), s3.url("out.txt"))) == 2
    assert st.read_bytes(s3.url("out.txt")) == b"42"


def _copy_in_child(st: S3Storage, src: str, dst: str) -> int:
    data = st.read_bytes(src)
    st.write_bytes(dst, data)
    return len(data)


def test_streaming_read_resumes_after_a_dropped_connection(s3):
    st = storage_for(s3.url(), s3.storage_cfg)
    data = os.urandom(3 * 2**20 + 123)
    st.write_bytes(s3.url("obj.bin"), data)
    ranges = []
    record = lambda request, **kwargs: ranges.append(request.headers.get("Range"))  # noqa: E731
    st.client().meta.events.register("before-send.s3.GetObject", record)
    with st.open_read(s3.url("obj.bin")) as f:
        head = f.read(1000)
        f.raw._body._raw_stream._fp.close()  # the connection drops mid-object (private: fault injection)
        rest = f.read()
    st.client().meta.events.unregister("before-send.s3.GetObject", record)
    assert head + rest == data
    assert ranges[0] is None and ranges[1].startswith(b"bytes=") and len(ranges) == 2  # resumed, not restarted


def test_unfinished_multipart_uploads_below_a_prefix_are_aborted_and_sizes_read(s3):
    st = storage_for(s3.url(), s3.storage_cfg)
    client = s3.client()
    for key in ("run/ckpt/step-1/a.pt", "run/ckpt/step-2/b.pt", "other/c.pt"):
        client.create_multipart_upload(Bucket=s3.bucket, Key=key)  # a killed writer's, never completed
    assert st.abort_multipart_uploads(s3.url("run/ckpt")) == 2
    left = client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["other/c.pt"]
    st.write_bytes(s3.url("run/x.json"), b"12345")
    assert st.size(s3.url("run/x.json")) == 5
    with pytest.raises(StorageNotFound):
        st.size(s3.url("run/missing.json"))
