"""`hf://org/name[:config][@split]`: a Hugging Face dataset read as its parquet files, streamed.

The Hub serves every public dataset as parquet under the `refs/convert/parquet` revision
(`{config}/{split}/*.parquet`); those files are opened through `huggingface_hub`'s filesystem and
read by the same parquet reader as local files, row group by row group (nothing is downloaded
whole). `hf://` followed by a local directory with the same layout takes the same path offline.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

PREFIX = "hf::"  # marks one resolved parquet file of an hf:// input
_REVISION = "refs%2Fconvert%2Fparquet"


def parse(uri: str) -> tuple[str, str, str]:
    """`hf://org/name:config@split` → (repo, config, split); config 'default', split 'train'."""
    rest = uri[len("hf://") :]
    rest, _, split = rest.partition("@")
    repo, _, config = rest.partition(":") if not os.path.isabs(rest) else (rest, "", "")
    if not repo:
        raise ValueError(f"{uri}: expected hf://org/name[:config][@split]")
    return repo, config or "default", split or "train"


def resolve(uri: str) -> list[str]:
    """The parquet files of an hf:// input, each marked with PREFIX, in name order."""
    repo, config, split = parse(uri)
    local = Path(repo)
    if local.is_dir():
        files = sorted(glob.glob(str(local / config / split / "*.parquet")))
        files = files or sorted(
            p for p in glob.glob(str(local / "**" / "*.parquet"), recursive=True) if split in p
        )
        return [PREFIX + f for f in files]
    from huggingface_hub import HfFileSystem

    pattern = f"datasets/{repo}@{_REVISION}/{config}/{split}/*.parquet"
    try:
        files = sorted(HfFileSystem().glob(pattern))
    except Exception as e:  # offline, unknown dataset, gated: say which and why
        raise ValueError(f"{uri}: cannot list {pattern} on the Hugging Face Hub ({e})") from e
    return [PREFIX + f for f in files]


def open_file(marked: str):
    """Binary, seekable file object of one resolved parquet file; also returns its size."""
    path = marked[len(PREFIX) :]
    if os.path.exists(path):
        return open(path, "rb"), os.path.getsize(path)
    from huggingface_hub import HfFileSystem

    fs = HfFileSystem()
    return fs.open(path, "rb"), int(fs.size(path))
