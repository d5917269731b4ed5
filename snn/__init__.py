import os

# Before torch is imported: torch then backs large tensors with transparent huge pages, which makes the first touch
# of each fresh activation (the conv SNN allocates ~50 MB ones every step) about 3x cheaper on Linux.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
