"""The engine's state: each table partition a RocksDB store that holds only committed
writes (`store`), and the view a batch reads and writes through (`view`)."""
