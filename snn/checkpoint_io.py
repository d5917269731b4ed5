"""Checkpoints written next to their final path and renamed into place, so a kill or a full disk mid-write leaves
the previous checkpoint intact. (Lightning's default writes a temporary file in $TMPDIR through fsspec and then
moves it, which across filesystems is a copy that can be cut short, and its error names the temporary file.)"""

import os
from pathlib import Path

import torch
from pytorch_lightning.plugins import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        partial = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())  # on disk before it replaces the previous one
            os.replace(partial, path)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise OSError(error.errno, error.strerror, str(path)) from None  # the checkpoint, not the partial file
