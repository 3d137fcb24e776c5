package mqttsub

import (
	"fmt"
	"testing"

	"github.com/citygw/citygw/devices"
)

// The index finds exactly the inventory's assets, as Inventory.Lookup does,
// at sizes around the table's growth points and for ids that are not there.
func TestAssetIndex(t *testing.T) {
	for _, n := range []int{0, 1, 3, 4, 5, 1000, 1025} {
		inv := testInventory(t, n)
		x := newAssetIndex(inv)
		for _, a := range inv.Assets {
			if got := x.lookup(a.ID); got != a {
				t.Fatalf("%d assets: lookup(%q) = %v", n, a.ID, got)
			}
		}
		for _, id := range []string{"", "bin-", fmt.Sprintf("bin-%04d", n), "bin-0000/x", "BIN-0000"} {
			if got, want := x.lookup(id), inv.Lookup(id); got != want {
				t.Fatalf("%d assets: lookup(%q) = %v, inventory says %v", n, id, got, want)
			}
		}
	}
}

func BenchmarkAssetLookup(b *testing.B) {
	inv := testInventory(b, 10000)
	x := newAssetIndex(inv)
	ids := make([]string, len(inv.Assets))
	for i, a := range inv.Assets {
		ids[i] = a.ID
	}
	var sink *devices.Asset
	b.Run("index", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			sink = x.lookup(ids[i%len(ids)])
		}
	})
	b.Run("inventory", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			sink = inv.Lookup(ids[i%len(ids)])
		}
	})
	_ = sink
}
