"""Files are input too. The only files the app reads are the user's local MNIST / Fashion-MNIST files
(``bnviz.data.load_mnist``); there is no upload widget. Those files are size-capped before they are
read or decompressed, parsed as plain numbers (never unpickled), and a bad one gives an error that
names the file. A static scan keeps the rest of the code base from growing an unsafe loader.
"""
from __future__ import annotations

import ast
import gzip
import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import numpy.lib.format as npy_format
import pytest

from bnviz import data

ROOT = Path(__file__).resolve().parents[1]
APP_SOURCES = sorted([ROOT / "app.py", *(ROOT / "bnviz").rglob("*.py"), *(ROOT / "pages").glob("*.py")])
IDX_NAMES = tuple(data.IDX_FILES.values())
SIDE = 28


# ----- static scan ----------------------------------------------------------------------------------
# module alias -> functions that must not be called at all (they run code from the bytes they read)
FORBIDDEN = {
    "pickle": {"load", "loads", "Unpickler"}, "cPickle": {"load", "loads", "Unpickler"},
    "dill": {"load", "loads"}, "joblib": {"load"}, "marshal": {"load", "loads"}, "shelve": {"open"},
    "pd": {"read_pickle"}, "pandas": {"read_pickle"}, "yaml": {"load", "unsafe_load", "full_load"},
    "torch.hub": {"load", "load_state_dict_from_url", "download_url_to_file"},
}
# module alias -> (function, keyword, required constant)
REQUIRED_KEYWORDS = {
    ("torch", "load"): ("weights_only", True),
    ("np", "load"): ("allow_pickle", False), ("numpy", "load"): ("allow_pickle", False),
}
NETWORK_MODULES = ("urllib.request", "requests", "httpx", "http.client", "aiohttp")


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def unsafe_calls(source: str, filename: str = "<source>") -> list[str]:
    """Every call in ``source`` that could unpickle, load torch weights with pickle, or fetch from
    the network, as 'file:line: what'."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name.split(".")[0] in ("pickle", "cPickle", "dill", "shelve") or name in NETWORK_MODULES:
                    found.append(f"{filename}:{node.lineno}: import {name}")
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "numpy", "pickle") and any(
                    a.name in ("load", "loads") for a in node.names):
                found.append(f"{filename}:{node.lineno}: from {node.module} import load")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if not name or "." not in name:
            continue
        module, func = name.rsplit(".", 1)
        if func in FORBIDDEN.get(module, ()):
            found.append(f"{filename}:{node.lineno}: {name}(...)")
        if func.startswith("fetch_") and module in ("sklearn.datasets", "datasets"):
            found.append(f"{filename}:{node.lineno}: {name}(...) downloads")
        if (module, func) in REQUIRED_KEYWORDS:
            keyword, wanted = REQUIRED_KEYWORDS[(module, func)]
            given = {k.arg: k.value for k in node.keywords}
            value = given.get(keyword)
            if not (isinstance(value, ast.Constant) and value.value is wanted):
                found.append(f"{filename}:{node.lineno}: {name}(...) without {keyword}={wanted}")
        if any(k.arg == "download" and isinstance(k.value, ast.Constant) and k.value.value for k in node.keywords):
            found.append(f"{filename}:{node.lineno}: {name}(download=True)")
    return found


def test_the_scanner_finds_what_it_looks_for():
    bad = """
import pickle
from torch import load
import urllib.request
import numpy as np, torch
pickle.loads(b"")
torch.load("m.pt")
torch.load("m.pt", weights_only=False)
np.load("a.npz")
np.load("a.npz", allow_pickle=True)
pd.read_pickle("x")
torch.hub.load("a", "b")
sklearn.datasets.fetch_openml("mnist_784")
torchvision.datasets.MNIST(".", download=True)
"""
    flagged = {int(hit.split(":")[1]) for hit in unsafe_calls(bad)}
    assert flagged == set(range(2, 15)) - {5}
    good = 'import numpy as np, torch\ntorch.load("m.pt", weights_only=True)\nnp.load("a.npz", allow_pickle=False)\n'
    assert unsafe_calls(good) == []


# Messages between the app's own processes, never a file or anything a visitor sends: a
# torch.distributed worker hands its result to the process that spawned it (multiprocessing
# pickles whatever a queue carries anyway; plain pickle keeps tensors out of shared memory).
OWN_PROCESS_MESSAGES = {"bnviz/distributed.py": {"import pickle", "pickle.loads(...)"}}


def test_no_code_in_the_app_can_unpickle_or_download():
    assert len(APP_SOURCES) > 10
    found = [hit for path in APP_SOURCES for hit in unsafe_calls(path.read_text(), str(path.relative_to(ROOT)))]
    foreign = [hit for hit in found
               if hit.split(": ", 1)[1] not in OWN_PROCESS_MESSAGES.get(hit.split(":", 1)[0], set())]
    assert foreign == []


def test_the_app_offers_no_upload():
    """Nothing a visitor sends becomes a file the server reads; if an upload is ever added it needs
    the same caps and parsing rules as the MNIST loader, and tests here."""
    for path in APP_SOURCES:
        tree = ast.parse(path.read_text())
        calls = {_dotted(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert not {c for c in calls if c and c.endswith(("file_uploader", "camera_input", "audio_input"))}, path


def test_every_file_read_goes_through_the_capped_readers():
    """In the package, raw file reads live only in data.py's capped readers (and the CLI's --config
    file, the MP4 that animate.py has ffmpeg write into its own temporary folder, and the run
    store's look at a run file's 100-byte SQLite header, to name a truncated or foreign file)."""
    readers = {}
    for path in APP_SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = _dotted(node.func) or ""
                if name.endswith((".read_bytes", ".read_text", "gzip.open", ".load")) or name == "open":
                    readers.setdefault(str(path.relative_to(ROOT)), set()).add(name)
    assert set(readers) <= {"bnviz/data.py", "bnviz/cli.py", "bnviz/animate.py", "bnviz/store.py"}, readers
    assert readers.get("bnviz/animate.py", {"open"}) == {"open"}
    assert readers["bnviz/data.py"] == {"path.read_bytes", "gzip.open", "np.load"}
    assert readers.get("bnviz/store.py", {"open"}) == {"open"}
    # ... and the store reads a header only: every read of an opened file has a bound of 100 bytes
    # at most (a number, or the length of a constant of the module)
    store = ast.parse((ROOT / "bnviz" / "store.py").read_text())
    constants = {t.id: n.value.value for n in ast.walk(store) if isinstance(n, ast.Assign)
                 and isinstance(n.value, ast.Constant) for t in n.targets if isinstance(t, ast.Name)}
    reads = [n for n in ast.walk(store) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == "read" and _dotted(n.func.value) == "f"]
    assert reads
    for call in reads:
        (arg,) = call.args
        if isinstance(arg, ast.Constant):
            bound = arg.value
        else:
            assert _dotted(arg.func) == "len" and isinstance(arg.args[0], ast.Name), ast.dump(arg)
            bound = len(constants[arg.args[0].id])
        assert isinstance(bound, int) and 0 < bound <= 100


# ----- the MNIST loader on hostile files -------------------------------------------------------------
def _idx_images(n: int, rows: int = SIDE, cols: int = SIDE) -> bytes:
    return struct.pack(">IIII", 2051, n, rows, cols) + bytes(n * rows * cols)


def _idx_labels(n: int) -> bytes:
    return struct.pack(">II", 2049, n) + bytes(n)


def _write_idx(folder: Path, n: int = 20, gz: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in zip(IDX_NAMES, (_idx_images(n), _idx_labels(n), _idx_images(n), _idx_labels(n))):
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(blob) if gz else blob)


def _arrays(n: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x_train": rng.integers(0, 256, (n, SIDE, SIDE), dtype=np.uint8), "y_train": rng.integers(0, 10, n),
            "x_test": rng.integers(0, 256, (n, SIDE, SIDE), dtype=np.uint8), "y_test": rng.integers(0, 10, n)}


class Exploit:
    """Unpickling this writes a file: proof that a loader ran code from a data file."""

    marker: Path

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_a_pickled_object_array_in_an_npz_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned.txt"
    Exploit.marker = marker
    payload = np.empty(20, dtype=object)
    payload[:] = [Exploit() for _ in range(20)]
    arrays = {**_arrays(), "y_test": payload}
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(data.DataFormatError) as info:
        data.load_mnist(tmp_path, "mnist")
    assert "mnist.npz" in str(info.value)
    assert not marker.exists()


def test_a_plain_npz_and_plain_idx_files_load(tmp_path):
    np.savez_compressed(tmp_path / "mnist.npz", **_arrays())
    loaded = data.load_mnist(tmp_path, "mnist")
    assert loaded.x_train.shape == (20, SIDE, SIDE) and loaded.y_test.dtype == np.int64
    _write_idx(tmp_path / "idx", gz=True)
    assert data.load_mnist(tmp_path / "idx", "mnist").x_test.shape == (20, SIDE, SIDE)


def test_a_file_over_the_cap_is_refused_before_it_is_read(tmp_path, monkeypatch):
    _write_idx(tmp_path)
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 1000)
    read = []
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self) or b"")
    with pytest.raises(data.DataFormatError, match="limit") as info:
        data.load_mnist(tmp_path, "mnist")
    assert IDX_NAMES[0] in str(info.value) and read == []


def test_a_gzip_bomb_stops_at_the_cap(tmp_path, monkeypatch):
    """10 MB of zeros compress to ~10 kB: the compressed file is under the cap, its content is not."""
    _write_idx(tmp_path)
    bomb = gzip.compress(_idx_images(12_000), compresslevel=9)
    (tmp_path / IDX_NAMES[0]).unlink()
    (tmp_path / (IDX_NAMES[0] + ".gz")).write_bytes(bomb)
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 1_000_000)
    assert len(bomb) < data.MAX_FILE_BYTES
    with pytest.raises(data.DataFormatError, match="decompressed size exceeds") as info:
        data.load_mnist(tmp_path, "mnist")
    assert IDX_NAMES[0] in str(info.value)


def test_a_zip_bomb_npz_is_refused_from_its_declared_sizes(tmp_path, monkeypatch):
    arrays = {**_arrays(), "x_train": np.zeros((12_000, SIDE, SIDE), dtype=np.uint8)}
    np.savez_compressed(tmp_path / "mnist.npz", **arrays)
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 1_000_000)
    assert (tmp_path / "mnist.npz").stat().st_size < data.MAX_FILE_BYTES
    with pytest.raises(data.DataFormatError, match="decompressed size exceeds"):
        data.load_mnist(tmp_path, "mnist")


def _npy(shape: tuple[int, ...], payload: bytes = b"", descr: str = "|u1") -> bytes:
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


def test_an_npz_whose_header_lies_about_its_shape_gives_a_format_error(tmp_path):
    with zipfile.ZipFile(tmp_path / "mnist.npz", "w") as z:
        z.writestr("x_train.npy", _npy((10**12, SIDE, SIDE), bytes(100)))
        for key in ("y_train", "x_test", "y_test"):
            z.writestr(f"{key}.npy", _npy((10,), bytes(10)))
    with pytest.raises(data.DataFormatError, match="mnist.npz"):
        data.load_mnist(tmp_path, "mnist")


def test_an_npz_whose_header_overstates_a_plausible_shape_gives_a_format_error(tmp_path):
    """A shape that fits in memory but not in the file: numpy stops at the end of the data."""
    with zipfile.ZipFile(tmp_path / "mnist.npz", "w") as z:
        z.writestr("x_train.npy", _npy((60_000, SIDE, SIDE), bytes(1000)))
        for key in ("y_train", "x_test", "y_test"):
            z.writestr(f"{key}.npy", _npy((10,), bytes(10)))
    with pytest.raises(data.DataFormatError, match="mnist.npz"):
        data.load_mnist(tmp_path, "mnist")


@pytest.mark.parametrize("blob, says", [
    (b"", "too short"),
    (b"\x00\x00\x08\x03", "too short"),
    (struct.pack(">IIII", 2051, 10**9, SIDE, SIDE), "truncated"),
    (struct.pack(">IIII", 2051, 20, 4096, 4096) + bytes(100), "truncated"),
    (struct.pack(">IIII", 2051, 20, 8, 8) + bytes(20 * 64), "expected 28x28"),
    (b"PK\x03\x04 this is a zip, not IDX" + bytes(100), "magic number"),
    (np.arange(100).tobytes(), "magic number"),
])
def test_a_malformed_idx_file_gives_an_error_naming_it(tmp_path, blob, says):
    _write_idx(tmp_path)
    (tmp_path / IDX_NAMES[0]).write_bytes(blob)
    with pytest.raises(data.DataFormatError) as info:
        data.load_mnist(tmp_path, "mnist")
    assert IDX_NAMES[0] in str(info.value) and says in str(info.value)


@pytest.mark.parametrize("content, says", [
    (b"not a zip at all", "not a readable .npz"),
    (b"PK\x03\x04" + bytes(200), "not a readable .npz"),
    ("npy", "single .npy array"),
    ("float pixels", "expected integer pixels"),
    ("pixels out of range", "outside 0..255"),
    ("2-D labels", "1-D integer array"),
])
def test_a_malformed_npz_gives_an_error_naming_it(tmp_path, content, says):
    path = tmp_path / "mnist.npz"
    arrays = _arrays()
    if content == "npy":
        buf = io.BytesIO()
        np.save(buf, arrays["x_train"])
        path.write_bytes(buf.getvalue())
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        if content == "float pixels":
            arrays["x_train"] = arrays["x_train"].astype(np.float32)
        elif content == "pixels out of range":
            arrays["x_test"] = arrays["x_test"].astype(np.int32) + 1000
        else:
            arrays["y_train"] = arrays["y_train"].reshape(4, 5)
        np.savez(path, **arrays)
    with pytest.raises(data.DataFormatError) as info:
        data.load_mnist(tmp_path, "mnist")
    assert "mnist.npz" in str(info.value) and says in str(info.value)
