// Package wal is a disk write-ahead log of encoded telemetry lines between
// ingest and the InfluxDB writer.
//
// Sources Append each encoded line; Append returns once the line is written
// to the log file (and, with sync "always", fsynced), so a crashed process
// loses nothing it acknowledged upstream. The log implements
// influx.BatchSource: the InfluxDB writer drains it in order (Next), and a
// batch is acknowledged (Done) only once InfluxDB has accepted it; segment
// files wholly acknowledged are deleted, so disk use shrinks as the backlog
// drains. After a restart everything appended and not acknowledged is
// drained again (InfluxDB deduplicates identical series and timestamps).
//
// On disk the log is a directory of segment files named after the logical
// byte offset of their first record, plus a small "ack" file holding the
// acknowledged position. Every record carries a CRC-32C; a torn or corrupt
// tail (a power cut) is cut off at Open, and a corrupt record inside a
// segment is skipped, counted and logged, never a crash.
package wal
