"""Tiny data sets written in the real on-disk formats, for any test that needs one.

No data set can be downloaded here, so each writer reproduces its format file for file:
the Cityscapes download (PNGs with real label ids, uint16 disparity, camera JSON), the MTAN
.npy trees of Cityscapes and NYUv2, folder-per-class images, the project's cache, and the
multi-task benchmark archives of PASCAL-Context (JPEGs, palette PNGs, PASCAL-Part and
pascal-context .mat files) and NYUD-v2 (ATRC's PNG layout and MTI-Net's .jpg/.npy one).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

from crossvit_mtl.data.cache import CacheWriter
from crossvit_mtl.data.common import CATEGORY_NAMES, CATEGORY_PALETTE, DatasetInfo

#: the camera of a real Cityscapes frame (aachen): baseline in metres, fx in pixels
CAMERA = {"extrinsic": {"baseline": 0.209313, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1, "yaw": -0.0195,
                        "z": 1.22},
          "intrinsic": {"fx": 2262.52, "fy": 2265.3017905988554, "u0": 1096.98, "v0": 513.137}}


def cityscapes_stem(index: int, city: str = "aachen") -> str:
    return f"{city}_{index:06d}_000019"


def write_cityscapes(root: str | Path, counts: dict[str, int] | None = None, size: tuple[int, int] = (16, 32),
                     depth: bool = True, city: str = "aachen", seed: int = 0) -> Path:
    """The official layout. Label maps cycle through every label id 0..33, so each mode's
    table is exercised; disparity PNGs hold p = 0 (invalid), 1 (zero disparity) and real values."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    h, w = size
    for split, count in (counts or {"train": 2, "val": 1}).items():
        for i in range(count):
            stem = cityscapes_stem(i, city)
            paths = {kind: root / folder / split / city / f"{stem}_{suffix}" for kind, folder, suffix in (
                ("image", "leftImg8bit", "leftImg8bit.png"), ("label", "gtFine", "gtFine_labelIds.png"),
                ("disparity", "disparity", "disparity.png"), ("camera", "camera", "camera.json"))}
            for path in list(paths.values())[:4 if depth else 2]:
                path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths["image"])
            ids = ((np.arange(h * w) + i) % 34).reshape(h, w).astype(np.uint8)
            Image.fromarray(ids).save(paths["label"])
            if depth:
                disparity = rng.integers(2, 30000, (h, w)).astype(np.uint16)
                disparity[rng.random((h, w)) < 0.3] = 0
                disparity[0, 4] = 1
                Image.fromarray(disparity).save(paths["disparity"])
                paths["camera"].write_text(json.dumps(CAMERA))
    return root


def write_mtan_cityscapes(root: str | Path, counts: dict[str, int] | None = None, size: tuple[int, int] = (8, 16),
                          label_folder: str = "label_7", num_classes: int = 7, channels_first: bool = False,
                          depth_layout: str = "hw", seed: int = 0) -> Path:
    """MTAN Cityscapes: float images in [0, 1], float labels -1..C-1, disparity in [0, 0.5]."""
    rng = np.random.default_rng(seed)
    h, w = size
    for split, count in (counts or {"train": 3, "val": 2}).items():
        for i in range(count):
            image = rng.random((h, w, 3), dtype=np.float32)
            labels = rng.integers(-1, num_classes, (h, w)).astype(np.float32)
            labels[0, 0], labels[0, 1] = -1, num_classes - 1
            depth = (rng.random((h, w)) * 0.5).astype(np.float32)
            depth[rng.random((h, w)) < 0.5] = 0
            _save(root, split, {"image": image.transpose(2, 0, 1) if channels_first else image,
                                label_folder: labels, "depth": _layout(depth, depth_layout)}, i)
    return Path(root)


def write_mtan_nyuv2(root: str | Path, counts: dict[str, int] | None = None, size: tuple[int, int] = (12, 16),
                     seed: int = 0) -> Path:
    """MTAN NYUv2: float images, labels -1..12, depth in metres, unit normals (zero = invalid)."""
    rng = np.random.default_rng(seed)
    h, w = size
    for split, count in (counts or {"train": 2, "val": 2}).items():
        for i in range(count):
            normal = rng.normal(size=(h, w, 3)).astype(np.float32)
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
            normal[0] = 0
            depth = (rng.random((h, w, 1)) * 10).astype(np.float32)
            depth[0] = 0
            _save(root, split, {"image": rng.random((h, w, 3), dtype=np.float32),
                                "label": rng.integers(-1, 13, (h, w)).astype(np.float32),
                                "depth": depth, "normal": normal}, i)
    return Path(root)


def _layout(depth: np.ndarray, layout: str) -> np.ndarray:
    return {"hw": depth, "hw1": depth[..., None], "1hw": depth[None]}[layout]


def _save(root: str | Path, split: str, arrays: dict[str, np.ndarray], index: int) -> None:
    for folder, array in arrays.items():
        path = Path(root) / split / folder / f"{index}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array)


def write_image_folder(root: str | Path, classes: dict[str, dict[str, int]] | None = None,
                       size: tuple[int, int] = (10, 14), seed: int = 0) -> Path:
    """``root/{split}/{class}/*.png|jpg``: alternates PNG and JPEG, with odd sizes to resize."""
    rng = np.random.default_rng(seed)
    classes = classes or {"train": {"cat": 2, "dog": 2}, "val": {"cat": 1, "dog": 1}}
    for split, per_class in classes.items():
        for name, count in per_class.items():
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
                image.save(folder / f"{i}.{'png' if i % 2 == 0 else 'jpg'}")
    return Path(root)


def random_sample(rng: np.random.Generator, size: tuple[int, int], num_classes: int = 8,
                  scene_classes: int = 3) -> dict:
    """A raw sample with every task, as ``DenseDataset.load`` returns it."""
    h, w = size
    normal = rng.normal(size=(h, w, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    labels = rng.integers(0, num_classes, (h, w)).astype(np.uint8)
    labels[0, 0] = 255
    parts = rng.integers(0, 7, (h, w)).astype(np.uint8)
    parts[-1] = 255
    saliency = (rng.random((h, w)) < 0.3).astype(np.uint8)
    return {"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "segmentation": labels,
            "human_parts": parts, "saliency": saliency,
            "depth": (rng.random((h, w)) * 50).astype(np.float32), "normal": normal,
            "edge": (rng.random((h, w)) < 0.1).astype(np.uint8),
            "classification": int(rng.integers(0, scene_classes))}


#: every task the project knows, as a cache stores them
CACHE_INFO = DatasetInfo(name="tiny", tasks=("segmentation", "human_parts", "saliency", "depth", "normal", "edge",
                                             "classification"),
                         class_names=CATEGORY_NAMES, palette=CATEGORY_PALETTE,
                         scene_classes=("a", "b", "c"))


def write_cache(root: str | Path, counts: dict[str, int] | None = None, size: tuple[int, int] = (8, 16),
                info: DatasetInfo = CACHE_INFO, seed: int = 0) -> dict[str, list[dict]]:
    """A cache with every task; returns the raw samples written, per split."""
    rng = np.random.default_rng(seed)
    written = {}
    with CacheWriter(root, info, size) as writer:
        for split, count in (counts or {"train": 3, "val": 2}).items():
            written[split] = [random_sample(rng, size) for _ in range(count)]
            writer.write_split(split, count, written[split])
    return written


# ------------------------------------------------------------------------------ PASCAL-Context
#: real ids; in val, 2008_000002 is one of COB's validation ids, 2008_000003 and 2008_000007 are
#: in the boundary test set (val_edge)
PASCAL_IDS = {"train": ["2008_000008", "2008_000015"], "val": ["2008_000002", "2008_000003", "2008_000007"]}
#: LabelMap values of pascal-context/trainval: Context classes by name (context_classes.json)
CONTEXT = {"unlabeled": 0, "person": 284, "sky": 360, "tvmonitor": 427, "wall": 440, "tree": 420}


def voc_palette(count: int = 256) -> list[int]:
    """The PASCAL VOC colour map, from its definition: the bits of the index spread, from the
    high bit down, over R, G and B. As a flat list for ``Image.putpalette``."""
    flat = []
    for index in range(count):
        rgb, value = [0, 0, 0], index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        flat += rgb
    return flat


def save_label_png(path: Path, labels: np.ndarray, palette: bool) -> None:
    """A class-id PNG as VOC ships it (mode P with the VOC palette) or as plain grey (mode L)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.frombytes("P" if palette else "L", labels.shape[::-1], labels.astype(np.uint8).tobytes())
    if palette:
        image.putpalette(voc_palette())
    image.save(path)


def save_part_annotation(path: Path, image_id: str, objects: list[tuple[str, int, np.ndarray, dict]]) -> None:
    """A PASCAL-Part annotation file: struct ``anno`` with ``imname`` and a 1xN struct array
    ``objects`` of (class, class_ind, mask, parts), ``parts`` a 1xM struct array of (part_name,
    mask), or [] for an object without parts. ``objects``: (class, class_ind, mask, {part: mask})."""
    objs = np.zeros((1, len(objects)), dtype=[("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")])
    for i, (name, class_ind, mask, parts) in enumerate(objects):
        part_array = np.zeros((0, 0))
        if parts:
            part_array = np.zeros((1, len(parts)), dtype=[("part_name", "O"), ("mask", "O")])
            for j, (part_name, part_mask) in enumerate(parts.items()):
                part_array[0, j] = (part_name, part_mask.astype(np.uint8))
        objs[0, i] = (name, np.array([[class_ind]], dtype=np.float64), mask.astype(np.uint8), part_array)
    anno = np.zeros((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0] = (image_id, objs)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"anno": anno})


def save_label_map(path: Path, labels: np.ndarray) -> None:
    """pascal-context/trainval/{id}.mat: ``LabelMap``, uint16 Context class per pixel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"LabelMap": labels.astype(np.uint16)})


def pascal_person(size: tuple[int, int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A person mask and four of its parts, in separate rows: head, torso, lhand, rfoot."""
    h, w = size
    person = np.zeros(size, bool)
    person[1:h - 1, 2:w - 2] = True
    parts = {}
    for row, name in zip((1, 2, 3, 4), ("head", "torso", "lhand", "rfoot")):
        parts[name] = np.zeros(size, bool)
        parts[name][row, 2:w - 2] = True
    return person, parts


def write_pascal_context(root: str | Path, ids: dict[str, list[str]] | None = None, size: tuple[int, int] = (12, 16),
                         seed: int = 0, sizes: dict[str, tuple[int, int]] | None = None) -> Path:
    """ATRC's PASCALContext tree. The first id of each split shows a person with parts (and a dog
    without), the others a dog with parts and no person; semseg alternates VOC12 (mode P) and
    the pascal-context fallback (mode L); LabelMap columns: wall | sky | tvmonitor, row 0 0.
    ``sizes`` gives some ids another (H, W) than ``size``, as the real images vary."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, split_ids in (ids or PASCAL_IDS).items():
        (root / "ImageSets" / "Context").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Context" / f"{split}.txt").write_text("".join(f"{i}\n" for i in split_ids))
        parts_index = {}
        for k, image_id in enumerate(split_ids):
            shape = (sizes or {}).get(image_id, size)
            h, w = shape
            (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                root / "JPEGImages" / f"{image_id}.jpg", quality=95)
            semseg = ((np.arange(h * w) + k) % 22).reshape(h, w)
            semseg[semseg == 21] = 255
            folder = "VOC12" if k % 2 == 0 else "pascal-context"
            save_label_png(root / "semseg" / folder / f"{image_id}.png", semseg, palette=folder == "VOC12")
            dog = np.zeros(shape, bool)
            dog[h - 2:, :3] = True
            if k == 0:
                person, parts = pascal_person(shape)
                objects = [("person", 15, person, parts), ("dog", 12, dog, {})]
            else:
                objects = [("dog", 12, dog, {"head": dog})]
            save_part_annotation(root / "human_parts" / f"{image_id}.mat", image_id, objects)
            parts_index[image_id] = [int(o[1]) for o in objects]
            labels = np.full(shape, CONTEXT["wall"])
            labels[:, w // 3:2 * w // 3] = CONTEXT["sky"]
            labels[:, 2 * w // 3:] = CONTEXT["tvmonitor"]
            labels[0] = CONTEXT["unlabeled"]
            save_label_map(root / "pascal-context" / "trainval" / f"{image_id}.mat", labels)
            for folder, array in (("normals_distill", rng.integers(0, 256, (h, w, 3), dtype=np.uint8)),
                                  ("sal_distill", rng.integers(0, 256, (h, w), dtype=np.uint8))):
                (root / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / folder / f"{image_id}.png")
        (root / "ImageSets" / "Parts").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Parts" / f"{split}.txt").write_text(json.dumps(parts_index))
    return root


# ------------------------------------------------------------------------------------ NYUD-v2
NYUD_IDS = {"train": ["0003", "0004"], "val": ["0001", "0002"]}


def write_nyud(root: str | Path, ids: dict[str, list[str]] | None = None, size: tuple[int, int] = (12, 16),
               layout: str = "atrc", seed: int = 0, sizes: dict[str, tuple[int, int]] | None = None) -> Path:
    """ATRC's NYUDv2 tree (PNG images, normals and edges) or MTI-Net's NYUD_MT (JPEG images,
    .npy normals and edges). Segmentation cycles through 0..40; depth and normals have invalid
    (zero) pixels in row 0. ``sizes`` gives some ids another (H, W) than ``size``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for folder in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for split, split_ids in (ids or NYUD_IDS).items():
        (root / "gt_sets" / f"{split}.txt").write_text("".join(f"{i}\n" for i in split_ids))
        for k, image_id in enumerate(split_ids):
            h, w = (sizes or {}).get(image_id, size)
            image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            image.save(root / "images" / f"{image_id}.{'png' if layout == 'atrc' else 'jpg'}")
            raw = ((np.arange(h * w) + k) % 41).reshape(h, w).astype(np.uint8)
            Image.fromarray(raw).save(root / "segmentation" / f"{image_id}.png")
            depth = (rng.random((h, w)) * 9 + 0.5).astype(np.float32)
            depth[0] = 0
            np.save(root / "depth" / f"{image_id}.npy", depth)
            edge = rng.random((h, w)) < 0.2
            if layout == "atrc":
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "normals" / f"{image_id}.png")
                Image.fromarray(edge.astype(np.uint8) * 255).save(root / "edge" / f"{image_id}.png")
            else:
                normals = rng.normal(size=(h, w, 3)).astype(np.float32)
                normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
                normals[0] = 0
                np.save(root / "normals" / f"{image_id}.npy", normals)
                np.save(root / "edge" / f"{image_id}.npy", edge.astype(np.float32))
    return root
