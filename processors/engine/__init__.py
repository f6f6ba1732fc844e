"""wapipe's stream engine: batches of records, one Kafka transaction per batch, RocksDB
state checkpointed after each commit. It knows no job: a job (`job.Job`) is source
topics, tables, timers and a pure-ish function from one partition's records and tables
to outputs and writes.

- `job`: what a job gives the engine, and the `PartitionBatch` it works on;
- `loop`: the worker: consume, process, commit, store; rebalances and restore;
- `transaction`: the transactional producer, and how it outlasts the broker;
- `state/`: the stores (RocksDB, committed writes only) and the views a batch sees;
- `kafka`: the librdkafka clients and why each setting;
- `metrics`: the engine's Prometheus series and the worker's web server;
- `worker`: a worker process from the settings (signals, exit statuses).
"""
