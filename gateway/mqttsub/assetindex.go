package mqttsub

import "github.com/citygw/citygw/devices"

// assetIndex finds an inventory's assets by id, as Inventory.Lookup does,
// for the worker's per-message lookup: an open-addressing table probed by
// the id's FNV-1a hash. Each slot keeps the hash and, for ids of up to 16
// bytes, the id itself, so that a lookup in a city's worth of assets reads
// one slot (one cache miss) rather than the slot, the Asset and the id's
// bytes. The table is built once and only read.
type assetIndex struct {
	slots []indexSlot // len is a power of two, at least twice the assets
	mask  uint32
}

type indexSlot struct {
	hash  uint32
	n     uint32         // the id's length
	key   [16]byte       // the id when it fits
	asset *devices.Asset // nil: empty
}

func newAssetIndex(inv *devices.Inventory) *assetIndex {
	n := 8
	for n < 2*len(inv.Assets) {
		n *= 2
	}
	x := &assetIndex{slots: make([]indexSlot, n), mask: uint32(n - 1)}
	for _, a := range inv.Assets {
		h := fnv1a(a.ID)
		i := h & x.mask
		for x.slots[i].asset != nil {
			i = (i + 1) & x.mask
		}
		x.slots[i] = indexSlot{hash: h, n: uint32(len(a.ID)), asset: a}
		copy(x.slots[i].key[:], a.ID)
	}
	return x
}

// lookup returns the asset with the id, or nil.
func (x *assetIndex) lookup(id string) *devices.Asset {
	h := fnv1a(id)
	for i := h & x.mask; ; i = (i + 1) & x.mask {
		s := &x.slots[i]
		if s.asset == nil {
			return nil
		}
		if s.hash != h || int(s.n) != len(id) {
			continue
		}
		if len(id) <= len(s.key) {
			if string(s.key[:len(id)]) == id {
				return s.asset
			}
		} else if s.asset.ID == id {
			return s.asset
		}
	}
}

// fnv1a is the 32-bit FNV-1a hash of s.
func fnv1a(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}
