"""Stage 6, database: records and signing keys, behind ``RecordRepository``."""
