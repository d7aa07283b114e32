"""CelebA-HQ with CelebA's partitions (ACE's CelebAHQDataset): the mapping file decides each image's split,
the attribute file its label, images resized to 256² / 128² (bilinear, centre crop), missing files named."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from cflight.data import CelebAHQ, CelebAHQDataModule
from cflight.data.celebahq import ATTRIBUTES_FILE, IMAGE_FOLDER, MAPPING_FILE
from cflight.validation import BadInputError, MissingInputError

NAMES = ["Male", "Smiling", "Young"]  # a 3-attribute stand-in for the 40 columns
ROWS = [(0, "000005.jpg", 2, "1 -1 1"), (1, "000001.jpg", 0, "-1 1 1"), (2, "000010.jpg", 2, "-1 1 -1"),
        (3, "000003.jpg", 1, "1 1 -1"), (4, "000007.jpg", 2, "1 -1 -1")]  # idx, CelebA original, partition, attrs


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "celebahq"
    (root / IMAGE_FOLDER).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for idx, *_ in ROWS:
        Image.fromarray(rng.integers(0, 256, (80, 64, 3), dtype=np.uint8)).save(root / IMAGE_FOLDER / f"{idx}.jpg")
    # CelebAMask-HQ's formats: count line, names line, "0.jpg  1 -1 1" rows; "idx orig_idx orig_file"
    (root / ATTRIBUTES_FILE).write_text(f"{len(ROWS)}\n{' '.join(NAMES)}\n"
                                        + "".join(f"{i}.jpg  {a}\n" for i, _, _, a in ROWS))
    (root / MAPPING_FILE).write_text("idx         orig_idx        orig_file\n"
                                     + "".join(f"{i}  {int(o[:6]) - 1}  {o}\n" for i, o, _, _ in ROWS))
    by_name = sorted(ROWS, key=lambda r: r[1])
    (root / "list_eval_partition.txt").write_text("".join(f"{o} {p}\n" for _, o, p, _ in by_name))
    return root


def test_test_partition_through_the_mapping(root):
    ds = CelebAHQ(str(root), "test", "Smiling", image_size=32)
    assert ds.indices == [0, 2, 4] and ds.labels == [0, 1, 0]
    assert ds.class_names == ["not Smiling", "Smiling"] and ds.num_classes == 2
    young = CelebAHQ(str(root), "test", "Young", image_size=32)
    assert young.labels == [1, 0, 0]
    assert CelebAHQ(str(root), "train", image_size=32).indices == [1]
    assert CelebAHQ(str(root), "val", image_size=32).indices == [3]
    assert CelebAHQ(str(root), "test", image_size=32, limit=2).indices == [0, 2]


@pytest.mark.parametrize("size", [256, 128])
def test_images_resized_and_centre_cropped(root, size):
    sample = CelebAHQ(str(root), "test", image_size=size)[1]
    x = sample["image"]
    assert x.shape == (3, size, size) and x.dtype == torch.float32 and sample["index"] == 2 and sample["label"] == 1
    with Image.open(root / IMAGE_FOLDER / "2.jpg") as im:  # torchvision Resize(size) + CenterCrop(size), as ACE
        ref = TF.center_crop(TF.resize(im.convert("RGB"), size, interpolation=TF.InterpolationMode.BILINEAR,
                                       antialias=True), [size, size])
    assert torch.allclose(x, TF.pil_to_tensor(ref).float() / 255)


def test_partition_csv_and_errors(root):
    (root / "list_eval_partition.txt").rename(root / "list_eval_partition.csv")
    csv = root / "list_eval_partition.csv"
    csv.write_text("image_id,partition\n" + csv.read_text().replace(" ", ","))
    assert CelebAHQ(str(root), "test", image_size=16).indices == [0, 2, 4]
    with pytest.raises(BadInputError, match="label_column 'Smile' is not an attribute"):
        CelebAHQ(str(root), label_column="Smile")
    (root / MAPPING_FILE).unlink()
    with pytest.raises(MissingInputError, match="CelebA-HQ-to-CelebA-mapping.txt' not found; it is CelebA-HQ"):
        CelebAHQDataModule(str(root))


def test_datamodule_batches(root, tmp_path):
    dm = CelebAHQDataModule(str(root), "Young", image_size=16, batch_size=2)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["image"].shape == (2, 3, 16, 16) and batch["label"].tolist() == [1, 0]
    assert batch["index"].tolist() == [0, 2] and dm.class_names == ["not Young", "Young"]
    with pytest.raises(MissingInputError, match="'.*celebahq' not found; it is CelebA-HQ .*CelebAMask-HQ"):
        CelebAHQDataModule(str(tmp_path / "data" / "celebahq"))
