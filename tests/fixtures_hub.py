"""A Hugging Face hub cache written in the layout huggingface_hub gives it, and an offline hub
pointed at it: what a machine that once downloaded a release holds, with the network cut."""
import hashlib
import io
import os
from pathlib import Path

import torch


def offline_hub(tmp_path: Path, monkeypatch) -> Path:
    """An empty cache under ``tmp_path`` (``HF_HOME``, ``HF_HUB_CACHE``) with ``HF_HUB_OFFLINE=1``:
    set in the environment, for processes started by the test, and in huggingface_hub's
    constants, which it reads from the environment once, when first imported."""
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    for key, value in (("HF_HOME", home), ("HF_HUB_CACHE", cache), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(key, str(value))
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def cache_repo(cache: Path, repo: str, files: dict[str, bytes]) -> Path:
    """A repository's files in the cache as ``hf_hub_download`` leaves them: each file's bytes in
    ``blobs/<sha256>`` (the etag of an LFS file), ``snapshots/<commit>/<name>`` a relative symlink
    to its blob, ``refs/main`` the commit. Returns the snapshot folder."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (folder / "blobs").mkdir()
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return snapshot


def safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


def torch_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """As timm's ``pytorch_model.bin``: ``torch.save`` of the state dict."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()
