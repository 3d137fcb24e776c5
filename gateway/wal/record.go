package wal

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// A record on disk, little-endian:
//
//	0  magic   4 bytes  0xC1 0x7E 0x57 0xA1 (never valid UTF-8: not found in line protocol)
//	4  length  uint32   payload bytes
//	8  crc     uint32   CRC-32C (Castagnoli) of bytes 4..8, 12..20 and the payload
//	12 time    int64    append time, Unix nanoseconds
//	20 payload
//
// The checksum covers the length and time too, so a damaged header is caught
// like a damaged payload.
const (
	headerSize = 20
	maxPayload = 64 << 20
)

var magic = [4]byte{0xC1, 0x7E, 0x57, 0xA1}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	// errShort: the buffer ends inside a record (a torn tail, or read more).
	errShort = errors.New("wal: record truncated")
	// errCorrupt: what is here is not a valid record.
	errCorrupt = errors.New("wal: corrupt record")
)

// appendRecord appends one record holding payload, stamped t, to dst.
func appendRecord(dst []byte, t int64, payload []byte) []byte {
	start := len(dst)
	dst = append(dst, magic[:]...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(t))
	dst = append(dst, payload...)
	h := dst[start:]
	crc := crc32.Update(0, castagnoli, h[4:8])
	crc = crc32.Update(crc, castagnoli, h[12:])
	binary.LittleEndian.PutUint32(h[8:12], crc)
	return dst
}

func recordSize(payload int) int64 { return int64(headerSize + payload) }

// decodeRecord reads the record at the start of buf: its payload (a slice of
// buf), append time and total size. errShort means buf ends inside a record
// whose header looks valid; errCorrupt that buf does not start with a valid
// record.
func decodeRecord(buf []byte, maxLen int) (payload []byte, t int64, n int, err error) {
	if len(buf) < headerSize {
		if len(buf) > 0 && !hasMagicPrefix(buf) {
			return nil, 0, 0, errCorrupt
		}
		return nil, 0, 0, errShort
	}
	if [4]byte(buf[:4]) != magic {
		return nil, 0, 0, errCorrupt
	}
	size := binary.LittleEndian.Uint32(buf[4:8])
	if int64(size) > int64(maxLen) {
		return nil, 0, 0, errCorrupt
	}
	n = headerSize + int(size)
	if len(buf) < n {
		return nil, 0, 0, errShort
	}
	crc := crc32.Update(0, castagnoli, buf[4:8])
	crc = crc32.Update(crc, castagnoli, buf[12:n])
	if crc != binary.LittleEndian.Uint32(buf[8:12]) {
		return nil, 0, 0, errCorrupt
	}
	return buf[headerSize:n], int64(binary.LittleEndian.Uint64(buf[12:20])), n, nil
}

func hasMagicPrefix(buf []byte) bool {
	for i := 0; i < len(buf) && i < 4; i++ {
		if buf[i] != magic[i] {
			return false
		}
	}
	return true
}

// resync returns the offset in buf, after its first byte, of the next place
// a valid record starts, or -1 when there is none (a record cut off by the
// end of buf counts as none only when atEnd).
func resync(buf []byte, maxLen int, atEnd bool) int {
	for i := 1; i < len(buf); i++ {
		if buf[i] != magic[0] {
			continue
		}
		_, _, _, err := decodeRecord(buf[i:], maxLen)
		if err == nil || err == errShort && !atEnd {
			return i
		}
	}
	return -1
}
