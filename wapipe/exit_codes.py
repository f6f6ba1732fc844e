"""Exit statuses a worker shares with whatever supervises it (`wapipe run`, Kubernetes).

Both are deliberate exits before anything unprocessed is committed; the restart
replays from the last committed offset (README, "Exact under crashes").
"""

EXIT_BATCH_FAILED = 70  # EX_SOFTWARE: a batch failed (a bug or an outage): read the log
# EX_TEMPFAIL: a partition stopped moving (processors/progress.py): restart to replay it
EXIT_PARTITION_STALLED = 75
