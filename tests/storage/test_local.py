"""Local storage: roundtrips, listing, atomic writes and the missing-file error."""

from __future__ import annotations

import os
import pickle

import pytest

from padnet_dist.errors import UserError
from padnet_dist.storage import StorageNotFound, join_url, parent_url, storage_for
from padnet_dist.storage.local import LocalStorage


@pytest.mark.parametrize("as_file_url", [False, True])
def test_roundtrip_list_exists_delete(tmp_path, as_file_url):
    base = f"file://{tmp_path}" if as_file_url else str(tmp_path)
    st = storage_for(base)
    assert isinstance(st, LocalStorage)
    st.write_bytes(join_url(base, "a/b/x.bin"), b"hello")
    st.write_bytes(join_url(base, "a/y.bin"), b"")
    st.write_bytes(join_url(base, "z.bin"), b"z" * 10)
    assert st.read_bytes(join_url(base, "a/b/x.bin")) == b"hello"
    with st.open_read(join_url(base, "z.bin")) as f:
        assert f.read(3) == b"zzz"
    assert st.list(base) == [join_url(base, p) for p in ("a/b/x.bin", "a/y.bin", "z.bin")]
    assert st.list(join_url(base, "a")) == [join_url(base, "a/b/x.bin"), join_url(base, "a/y.bin")]
    assert st.list(join_url(base, "nothing-here")) == []
    assert st.exists(join_url(base, "a/y.bin")) and not st.exists(join_url(base, "a/q.bin"))
    st.delete(join_url(base, "a/y.bin"))
    st.delete(join_url(base, "a/y.bin"))  # missing is fine
    assert not st.exists(join_url(base, "a/y.bin"))


def test_put_and_get_file(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(100_000))
    st = storage_for(str(tmp_path))
    st.put_file(str(src), str(tmp_path / "remote/copy.bin"))
    st.get_file(str(tmp_path / "remote/copy.bin"), str(tmp_path / "local/back.bin"))
    assert (tmp_path / "local/back.bin").read_bytes() == src.read_bytes()


def test_missing_file_is_a_user_error_naming_the_path(tmp_path):
    st = storage_for(str(tmp_path))
    missing = str(tmp_path / "nope.bin")
    for call in (lambda: st.read_bytes(missing), lambda: st.get_file(missing, str(tmp_path / "out"))):
        with pytest.raises(StorageNotFound) as info:
            call()
        assert isinstance(info.value, UserError) and isinstance(info.value, FileNotFoundError)
        assert missing in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_failed_write_keeps_old_content_and_leaves_no_temp(tmp_path, monkeypatch):
    st = storage_for(str(tmp_path))
    target = str(tmp_path / "ckpt/COMMITTED")
    st.write_bytes(target, b"old")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)  # the write dies after the data went to the temp file
    with pytest.raises(OSError):
        st.write_bytes(target, b"new content")
    with pytest.raises(OSError):
        st.put_file(target, str(tmp_path / "ckpt/other"))
    monkeypatch.undo()
    assert st.read_bytes(target) == b"old"
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["COMMITTED"]
    assert st.list(str(tmp_path)) == [target]


def test_pickles_and_joins():
    st = pickle.loads(pickle.dumps(storage_for("/tmp")))
    assert isinstance(st, LocalStorage)
    assert join_url("s3://b/dir/", "/x/", "y.tar") == "s3://b/dir/x/y.tar"
    assert join_url("/data", "a") == "/data/a"
    assert parent_url("s3://b/d/m.json") == "s3://b/d" and parent_url("m.json") == "."
    with pytest.raises(UserError, match="gs://x"):
        storage_for("gs://x/y")
