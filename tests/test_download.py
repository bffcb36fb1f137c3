"""PTB download: against real HTTP servers on 127.0.0.1, local mirrors, and failures."""

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from lstm_lm import LMError
from lstm_lm.cli import main
from lstm_lm.download import PTB_SHA256, fetch_ptb, is_verified

NAMES = list(PTB_SHA256)


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """Serve a directory over HTTP on an ephemeral port; yields a function dir -> URL."""
    servers = []

    def start(directory: Path) -> str:
        handler = functools.partial(Quiet, directory=str(directory))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def corrupt_copy(ptb_dir, tmp_path):
    d = tmp_path / "corrupt"
    shutil.copytree(ptb_dir, d)
    p = d / "ptb.valid.txt"
    p.chmod(0o644)
    data = bytearray(p.read_bytes())
    data[1000] ^= 1
    p.write_bytes(bytes(data))
    return d


def test_http_download_verifies_and_skips(ptb_dir, serve, tmp_path):
    url = serve(ptb_dir)
    dest = tmp_path / "ptb"
    logs = []
    fetch_ptb(dest, url, log=logs.append)
    assert is_verified(dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(NAMES)  # no temporary files left
    assert [m.split(" from ")[0] for m in logs] == [f"fetching {n}" for n in NAMES]
    logs.clear()
    fetch_ptb(dest, url, log=logs.append)
    assert logs == []  # present and verified: nothing to say


def test_corrupt_server_leaves_no_file(corrupt_copy, serve, tmp_path):
    dest = tmp_path / "ptb"
    with pytest.raises(
        LMError, match=r"ptb.valid.txt .*checksum mismatch \(expected c9fe6985.*, got "
    ):
        fetch_ptb(dest, serve(corrupt_copy))
    assert not (dest / "ptb.valid.txt").exists()
    assert [p.name for p in dest.iterdir() if p.name.startswith(".")] == []


def test_bad_local_file_is_refetched(ptb_dir, corrupt_copy, tmp_path):
    dest = tmp_path / "ptb"
    shutil.copytree(corrupt_copy, dest)
    logs = []
    fetch_ptb(dest, f"file://{ptb_dir.resolve()}", log=logs.append)
    assert is_verified(dest)
    assert any("ptb.valid.txt: checksum mismatch, fetching it again" in m for m in logs)


def test_mirror_from_environment(ptb_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LSTM_LM_PTB_MIRROR", str(ptb_dir))
    r = CliRunner().invoke(main, ["download", "--dest", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert is_verified(tmp_path / "d")


def test_unreachable_host(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens on this port now
    r = CliRunner().invoke(
        main, ["download", "--dest", str(tmp_path / "d"), "--mirror", f"http://127.0.0.1:{port}"]
    )
    assert r.exit_code == 1
    assert f"cannot reach 127.0.0.1:{port}" in r.output and "--mirror" in r.output
    assert "Traceback" not in r.output


def test_http_404(serve, tmp_path):
    r = CliRunner().invoke(
        main, ["download", "--dest", str(tmp_path / "d"), "--mirror", serve(tmp_path)]
    )
    assert r.exit_code == 1 and "HTTP 404" in r.output


def test_missing_mirror_directory(tmp_path):
    r = CliRunner().invoke(
        main, ["download", "--dest", str(tmp_path / "d"), "--mirror", str(tmp_path / "none")]
    )
    assert r.exit_code == 1 and "no such directory" in r.output


def test_unwritable_destination(ptb_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = CliRunner().invoke(
        main, ["download", "--dest", str(blocker / "ptb"), "--mirror", str(ptb_dir)]
    )
    assert r.exit_code == 1 and "cannot write to" in r.output


def test_train_fetches_ptb_on_first_use(ptb_dir, corrupt_copy, serve, tmp_path, monkeypatch):
    """The README's first command: no data given, so PTB is fetched into dataset/ptb (from
    the mirror in LSTM_LM_PTB_MIRROR, here an HTTP server), checked, and trained on; a
    server whose file does not match its checksum is refused and leaves nothing behind."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LSTM_LM_PTB_MIRROR", serve(corrupt_copy))
    args = ["train", "--layers", "1", "--hidden", "8", "--max-steps", "2", "--valid-tokens",
            "500", "--quiet", "--out", "run"]  # fmt: skip
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "ptb.valid.txt" in r.output and "checksum mismatch" in r.output
    assert not (tmp_path / "dataset" / "ptb" / "ptb.valid.txt").exists()
    assert not (tmp_path / "run" / "last.npz").exists()
    monkeypatch.setenv("LSTM_LM_PTB_MIRROR", serve(ptb_dir))
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert is_verified(tmp_path / "dataset" / "ptb")
    for name in NAMES:  # byte for byte the canonical files
        assert (tmp_path / "dataset" / "ptb" / name).read_bytes() == (ptb_dir / name).read_bytes()
    r = CliRunner().invoke(main, ["info", "run", "--json"])
    assert r.exit_code == 0 and '"vocab_size": 10000' in r.stdout
