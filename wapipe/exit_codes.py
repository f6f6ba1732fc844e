"""Exit statuses a worker shares with whatever supervises it (`wapipe run`, Kubernetes).

A worker exits this way only when it cannot go on (fenced by a successor with its
WAPIPE_PROCESSOR_INSTANCE, or the broker refusing batch after batch); nothing it did
not commit is seen by a read_committed reader, and a restart resumes from the
committed offsets (docs/design.md, "Exact under crashes").
"""

EXIT_BATCH_FAILED = 70  # EX_SOFTWARE: the worker cannot go on: read the log
