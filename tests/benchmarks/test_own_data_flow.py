"""``benchmarks/own_data_flow.py``: the idx → PNG folder export, and one ``--quick`` run of the README's
own-images flow that writes nothing into the repository's outputs/."""
import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("own_data_flow", REPO / "benchmarks" / "own_data_flow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_idx(path: Path, array: np.ndarray) -> None:
    """``array`` (uint8) as an idx file: 0 0 0x08 ndim, big-endian int32 dims, the bytes; gzipped for .gz."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_idx(tmp_path):
    """12 random 5×4 images (non-square, so a transposed export fails) with labels 0..9, 5, 7."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 5, 4), dtype=np.uint8)
    labels = np.array([0, 5, 1, 7, 9, 5, 2, 9, 7, 3, 5, 7], dtype=np.uint8)
    _write_idx(tmp_path / "images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "labels-idx1-ubyte", labels)  # plain (not gzipped) is read too
    return tmp_path / "images-idx3-ubyte.gz", tmp_path / "labels-idx1-ubyte", images, labels


def test_read_idx_round_trip(tiny_idx):
    bench = _load_benchmark()
    images_path, labels_path, images, labels = tiny_idx
    np.testing.assert_array_equal(bench.read_idx(images_path), images)
    np.testing.assert_array_equal(bench.read_idx(labels_path), labels)


def test_export_folder_names_counts_and_pixels(tiny_idx, tmp_path):
    bench = _load_benchmark()
    images_path, labels_path, images, labels = tiny_idx
    out = tmp_path / "folder"
    counts = bench.export_folder(images_path, labels_path, out, per_class=2)
    assert counts == {"sandal": 2, "sneaker": 2, "ankle_boot": 2}
    assert sorted(p.name for p in out.iterdir()) == ["ankle_boot", "sandal", "sneaker"]
    for label, name in {5: "sandal", 7: "sneaker", 9: "ankle_boot"}.items():
        files = sorted((out / name).iterdir())
        assert [f.name for f in files] == [f"{name}_0000.png", f"{name}_0001.png"]
        # the first two images of that label, in order
        for f, i in zip(files, np.flatnonzero(labels == label)[:2]):
            png = Image.open(f)
            assert png.mode == "L"
            np.testing.assert_array_equal(np.asarray(png), images[i])


def test_export_refuses_too_few_and_non_idx(tiny_idx, tmp_path):
    bench = _load_benchmark()
    images_path, labels_path, _, _ = tiny_idx
    with pytest.raises(ValueError, match="ankle_boot.*--per-class 3"):  # only two 9s
        bench.export_folder(images_path, labels_path, tmp_path / "few", per_class=3)
    (tmp_path / "bad").write_bytes(b"\x89PNG not idx")
    with pytest.raises(ValueError, match="not an unsigned-byte idx file"):
        bench.read_idx(tmp_path / "bad")


def _outputs_snapshot() -> dict:
    """Every file under the repository's outputs/ (and W&B's / Lightning's default folders at its root)."""
    files = {}
    for top in ("outputs", "wandb", "lightning_logs"):
        for dirpath, _, names in os.walk(REPO / top):
            for name in names:
                st = os.stat(os.path.join(dirpath, name))
                files[os.path.relpath(os.path.join(dirpath, name), REPO)] = (st.st_mtime_ns, st.st_size)
    return files


@pytest.mark.skipif(not os.path.isfile("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"),
                    reason="Debian's fashion-mnist package absent")
def test_quick_flow_end_to_end(tmp_path):
    bench = _load_benchmark()
    before = _outputs_snapshot()
    result_file = REPO / "benchmarks" / "results" / "own_data_flow.json"
    result_stat = result_file.stat().st_mtime_ns if result_file.exists() else None
    work = tmp_path / "work"
    result = bench.main(["--quick", "--workdir", str(work)])

    assert list(result["steps"]) == ["classifier", "oracle", "vae", "explain"]
    assert result["folder"]["images"] == 90 and result["quick"] is True
    for step, res in result["steps"].items():
        assert res["wall_s"] > 0 and len(res["load_before"]) == len(res["load_after"]) == 3
        assert res["command"].startswith("cflight ") and "configs/folder/data.yaml" in res["command"]
    for model, monitor in (("classifier", "val/acc"), ("oracle", "val/acc"), ("vae", "val/recon_mse")):
        val = result["steps"][model]["validation"]
        assert val["best"]["monitor"] == monitor and monitor in val["final"] and val["best"]["epoch"] == 0
        assert (work / "outputs" / "folder" / model / "checkpoints" / "best.ckpt").is_file()
    metrics = result["steps"]["explain"]["metrics"]
    assert 0 <= metrics["validity"] <= 1 and 0 <= metrics["oracle_validity"] <= 1
    assert metrics["n"] == 9  # 10 % of 90 images held out for testing
    assert (work / "outputs" / "explain" / "folder" / "results.csv").is_file()
    assert abs(result["total_s"] - sum(r["wall_s"] for r in result["steps"].values())) < 0.1

    changed = {p for p, s in _outputs_snapshot().items() if before.get(p) != s}
    # other jobs may write elsewhere under outputs/ meanwhile; the folders the flow's configs name (and the
    # default W&B and Lightning ones) must be untouched
    watched = ("outputs/folder/", "outputs/explain/folder/", "outputs/wandb/", "wandb/", "lightning_logs/")
    ours = [p for p in changed if p.startswith(watched)]
    assert not ours and result["repository_outputs_changed"] == []
    now = result_file.stat().st_mtime_ns if result_file.exists() else None
    assert now == result_stat  # --quick without --out writes no result file
