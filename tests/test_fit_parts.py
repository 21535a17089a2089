"""The parts of `verify --fit` that need no target: the synthetic datasets (formats the trainers parse, labels
that describe the pixels) and the phase tracker that names where a trainer failed."""

import struct
import zlib

import pytest
import torch

from yolopatch.verify.runner import datasets
from yolopatch.verify.runner.phases import EMA, EPOCH, FINAL_EVAL, SAVE, SETUP, VALIDATION, Phases


def read_png(path) -> torch.Tensor:
    """Decode the 8-bit RGB, filter-0 PNGs datasets.png_bytes writes (a check of the writer, not a decoder)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = {}, 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        tag, body = data[offset + 4:offset + 8], data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF
        chunks[tag] = chunks.get(tag, b"") + body
        offset += 12 + length
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour) == (8, 2)
    raw = zlib.decompress(chunks[b"IDAT"])
    rows = [raw[r * (3 * width + 1):(r + 1) * (3 * width + 1)] for r in range(height)]
    assert all(row[0] == 0 for row in rows)
    return torch.tensor([list(row[1:]) for row in rows], dtype=torch.uint8).view(height, width, 3)


def labels_of(root, split="train"):
    files = sorted((root / "labels" / split).glob("*.txt"))
    return {f.stem: [[float(v) for v in line.split()] for line in f.read_text().splitlines()] for f in files}


@pytest.mark.parametrize("task", ["detect", "segment", "pose", "obb"])
def test_detection_style_layout(tmp_path, task):
    ds = datasets.write_dataset(tmp_path / task, task, kpt_shape=(5, 3))
    root = tmp_path / task
    for split, count in (("train", datasets.TRAIN_IMAGES), ("val", datasets.VAL_IMAGES)):
        images = sorted((root / "images" / split).glob("*.png"))
        assert len(images) == count
        assert sorted(p.stem for p in images) == sorted(labels_of(root, split))
    yaml_text = (root / "data.yaml").read_text()
    assert f"path: {root.as_posix()}\n" in yaml_text and "train: images/train\n" in yaml_text
    assert "nc: 2\n" in yaml_text and "names: [c0, c1]\n" in yaml_text
    assert ("kpt_shape: [5, 3]" in yaml_text) == (task == "pose")
    widths = {"detect": 5, "segment": 1 + 2 * 12, "pose": 5 + 5 * 3, "obb": 9}
    for rows in labels_of(root).values():
        assert len(rows) == datasets.OBJECTS_PER_IMAGE
        for row in rows:
            assert len(row) == widths[task] and row[0] in (0.0, 1.0)
            assert all(0.0 <= v <= 1.0 for v in row[1:] if v != 2.0)
    assert ds.data == str(root / "data.yaml") and ds.nc == 2


def test_pose_keypoints_with_two_dimensions(tmp_path):
    datasets.write_dataset(tmp_path, "pose", kpt_shape=(4, 2))
    assert all(len(row) == 5 + 4 * 2 for rows in labels_of(tmp_path).values() for row in rows)


def test_labels_describe_the_pixels(tmp_path):
    """The centre of every labelled box is painted in its class colour; pixels outside every shape are noise."""
    datasets.write_dataset(tmp_path, "detect")
    height, width = datasets.IMAGE_SIZE
    for stem, rows in labels_of(tmp_path).items():
        pixels = read_png(tmp_path / "images" / "train" / f"{stem}.png")
        assert pixels.shape == (height, width, 3)
        for cls, cx, cy, w, h in rows:
            y, x = int(cy * height), int(cx * width)
            assert pixels[y, x].tolist() == list(datasets._COLOURS[int(cls)])
        assert int(pixels[0, 0].max()) < 150   # a corner: background noise in 90..149


def test_obb_corners_are_a_rectangle_inside_the_image(tmp_path):
    datasets.write_dataset(tmp_path, "obb")
    height, width = datasets.IMAGE_SIZE
    for rows in labels_of(tmp_path).values():
        for row in rows:
            pts = torch.tensor(row[1:]).view(4, 2) * torch.tensor([width, height])
            sides = (pts - pts.roll(1, 0)).norm(dim=1)
            assert torch.allclose(sides, sides.roll(2), atol=1e-3)             # opposite sides equal
            diagonals = (pts[0] - pts[2]).norm(), (pts[1] - pts[3]).norm()
            assert abs(float(diagonals[0] - diagonals[1])) < 1e-3              # and a right angle


def test_classification_layout(tmp_path):
    ds = datasets.write_dataset(tmp_path, "classify")
    for split, count in (("train", datasets.TRAIN_IMAGES), ("val", datasets.VAL_IMAGES)):
        folders = sorted(p.name for p in (tmp_path / split).iterdir())
        assert folders == ["c0", "c1"]
        assert sum(len(list((tmp_path / split / f).glob("*.png"))) for f in folders) == count
    assert ds.data == str(tmp_path) and ds.nc == 2


def test_same_seed_same_bytes(tmp_path):
    a = datasets.write_dataset(tmp_path / "a", "segment")
    b = datasets.write_dataset(tmp_path / "b", "segment")
    for split in ("train", "val"):
        for f in (tmp_path / "a" / "images" / split).iterdir():
            assert f.read_bytes() == (tmp_path / "b" / "images" / split / f.name).read_bytes()
    assert a.nc == b.nc


# phases ----------------------------------------------------------------------------------------------------------
class Trainer:
    def setup(self):
        self.ema = Ema()

    def validate(self, fail=False):
        if fail:
            raise ValueError("bad metric")
        return 1.0

    def step(self):
        self.ema.update()


class TaskTrainer(Trainer):
    def validate(self, fail=False):   # an override: wrapped too
        return super().validate(fail)


class Ema:
    broken = False

    def update(self):
        if Ema.broken:
            raise RuntimeError("deepcopy")


def test_the_innermost_phase_is_named_and_restored(monkeypatch):
    phases = Phases(SETUP)
    assert phases.patch_class_tree(Trainer, "setup", SETUP, then=EPOCH) == 1
    assert phases.patch_class_tree(Trainer, "validate", VALIDATION) == 2      # the base and the override
    assert phases.patch(Ema, "update", EMA)
    assert not phases.patch(Ema, "no_such_method", EMA)
    trainer = TaskTrainer()
    trainer.setup()
    assert phases.current == EPOCH
    assert trainer.validate() == 1.0 and phases.current == EPOCH
    with pytest.raises(ValueError):
        trainer.validate(fail=True)
    assert phases.where_failed() == VALIDATION
    Ema.broken = True
    try:
        with pytest.raises(RuntimeError):
            trainer.step()
        assert phases.where_failed() == EMA
    finally:
        Ema.broken = False
    trainer.step()                       # a wrapped call that returns clears the record
    assert phases.failed_in is None and phases.where_failed() == EPOCH
    phases.restore()
    assert "validate" in vars(TaskTrainer) and not hasattr(vars(Trainer)["validate"], "__yolopatch_phase__")
    assert not hasattr(vars(TaskTrainer)["validate"], "__yolopatch_phase__")
    assert not hasattr(vars(Ema)["update"], "__yolopatch_phase__")


def test_a_phase_chosen_at_call_time_and_observed_hooks():
    class Callbacks:
        def run(self, hook):
            return hook

    class Val:
        @staticmethod
        def run():
            raise OSError("disk")

    phases = Phases(SETUP)
    seen = []
    phases.observe(Callbacks, "run", lambda _self, hook: (seen.append(hook), phases.move_to(SAVE)))
    phases.patch(Val, "run", lambda: FINAL_EVAL if phases.base == FINAL_EVAL else VALIDATION)
    assert Callbacks().run("on_fit_epoch_end") == "on_fit_epoch_end" and seen == ["on_fit_epoch_end"]
    assert phases.current == SAVE
    phases.move_to(FINAL_EVAL)
    with pytest.raises(OSError):
        Val.run()
    assert phases.where_failed() == FINAL_EVAL
    phases.restore()
    assert Callbacks().run("x") == "x" and seen == ["on_fit_epoch_end"]


def test_network_attempts_are_recorded_and_still_refused():
    import socket

    from yolopatch.verify.runner import env
    from yolopatch.verify.runner.fit import _refused, network_attempts

    saved = socket.socket.connect, socket.socket.connect_ex, socket.create_connection, socket.getaddrinfo
    env.block_network()
    try:
        with network_attempts() as attempts:
            with pytest.raises(OSError):
                socket.getaddrinfo("github.com", 443)
            with pytest.raises(OSError):
                socket.create_connection(("ultralytics.com", 443))
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with pytest.raises(OSError):
                sock.connect(("192.0.2.1", 80))
            sock.close()
            local = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with pytest.raises(OSError):
                local.connect("/nonexistent/yolopatch.sock")    # not the network: passed through, not recorded
            local.close()
        assert attempts == ["github.com", "ultralytics.com:443", "192.0.2.1:80"]
        assert _refused(attempts).startswith("; it tried to reach the network (github.com, ultralytics.com:443, ")
        assert _refused([]) == ""
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.create_connection, socket.getaddrinfo = saved
