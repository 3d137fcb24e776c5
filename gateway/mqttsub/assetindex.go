package mqttsub

import "github.com/citygw/citygw/devices"

// assetIndex finds an inventory's assets by id, as Inventory.Lookup does,
// for the worker's per-message lookup: an open-addressing table probed by
// the id's FNV-1a hash, whose entries keep the hash so that a probe compares
// strings only when the hashes agree. At half load a lookup is a short hash
// and one or two probes, several times cheaper than the inventory's map for
// the short ids devices have. The table is built once and only read.
type assetIndex struct {
	slots []indexSlot // len is a power of two, at least twice the assets
	mask  uint32
}

type indexSlot struct {
	hash  uint32
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
		x.slots[i] = indexSlot{hash: h, asset: a}
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
		if s.hash == h && s.asset.ID == id {
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
