package mqttsub

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"unsafe"

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
		for _, id := range []string{"", "bin-", fmt.Sprintf("bin-%04d", n), "bin-0000/x", "BIN-0000", "bin-0000-0000-0000-0000"} {
			if got, want := x.lookup(id), inv.Lookup(id); got != want {
				t.Fatalf("%d assets: lookup(%q) = %v, inventory says %v", n, id, got, want)
			}
		}
	}
}

// Ids longer than a slot's key are compared through the asset.
func TestAssetIndexLongIDs(t *testing.T) {
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	var assets []*devices.Asset
	for i := range 50 {
		assets = append(assets, &devices.Asset{ID: fmt.Sprintf("district-07-bin-%012d", i), Model: "binsense-ws3", Lat: 31.2, Lon: 121.4})
	}
	inv, err := devices.NewInventory(cat, assets)
	if err != nil {
		t.Fatal(err)
	}
	x := newAssetIndex(inv)
	for _, a := range inv.Assets {
		if x.lookup(a.ID) != a || x.lookup(a.ID+"x") != nil || x.lookup(a.ID[:16]) != nil {
			t.Fatalf("lookup of %q (or a longer or shorter id) wrong", a.ID)
		}
	}
}

// BenchmarkAssetLookup looks up 100,000 assets in a random order, as a
// city's messages arrive; the id is built in a buffer first, hot in the
// cache as a received topic is. The cost is mostly cache misses.
func BenchmarkAssetLookup(b *testing.B) {
	const n = 100000
	inv := testInventory(b, n)
	x := newAssetIndex(inv)
	perm := rand.New(rand.NewPCG(1, 2)).Perm(n)
	buf := make([]byte, 0, 32)
	id := func(i int) string {
		buf = append(buf[:0], "bin-"...)
		for p := 1000; p > 1 && i < p; p /= 10 {
			buf = append(buf, '0') // testInventory's %04d
		}
		buf = strconv.AppendInt(buf, int64(i), 10)
		return unsafe.String(&buf[0], len(buf))
	}
	if a := x.lookup(id(perm[0])); a == nil || a.ID != fmt.Sprintf("bin-%04d", perm[0]) {
		b.Fatalf("id(%d) = %q not found", perm[0], id(perm[0]))
	}
	var sink *devices.Asset
	b.Run("index", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			sink = x.lookup(id(perm[i%n]))
		}
	})
	b.Run("inventory", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			sink = inv.Lookup(id(perm[i%n]))
		}
	})
	_ = sink
}
