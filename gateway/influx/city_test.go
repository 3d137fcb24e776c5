package influx

import (
	"fmt"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
)

// testInventory returns an inventory with one asset of each shipped profile.
func testInventory(t testing.TB) *devices.Inventory {
	t.Helper()
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	mb := func(unit uint8) *devices.ModbusAddr {
		return &devices.ModbusAddr{Host: "127.0.0.1:1502", Unit: unit}
	}
	assets := []*devices.Asset{
		{ID: "lamp-0001", Model: "citylight-slc200", Modbus: mb(1), Lat: 39.91, Lon: 116.40, District: "110101",
			Grid: "11010100101", Code: "1101010118000001", Attrs: map[string]any{"circuit": "CAB-01/C1", "rated_power_w": 150.0}},
		{ID: "cab-01", Model: "citylight-ccu300", Modbus: mb(2), Lat: 39.91, Lon: 116.41, District: "110101",
			Grid: "11010100101", Code: "1101010117000001", Attrs: map[string]any{"circuit": "CAB-01"}},
		{ID: "gas-07", Model: "gasreg-rtu500", Modbus: mb(3), Lat: 39.92, Lon: 116.42, District: "110102",
			Grid: "11010200311", Code: "1101020135000007", Attrs: map[string]any{"nominal_kpa": 3.0}},
		{ID: "bin-0042", Model: "binsense-ws3", MQTT: &devices.MQTTAddr{Topic: "bins/bin-0042/up"}, Lat: 39.93, Lon: 116.43,
			District: "110102", Grid: "11010200312", Code: "1101020305000042", Attrs: map[string]any{"capacity_l": 240.0}},
	}
	inv, err := devices.NewInventory(cat, assets)
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// fillReading sets every field of r's kind to a value of its type that
// depends on n, so that successive readings differ.
func fillReading(r *devices.Reading, n int) {
	for i, f := range r.Asset.Schema.Fields {
		switch f.Type {
		case devices.Bool:
			r.Values[i] = devices.BoolValue((n+i)%2 == 0)
		case devices.Int:
			r.Values[i] = devices.IntValue(int64(1000*n + i))
		case devices.Float:
			r.Values[i] = devices.FloatValue(float64(n)*1.25 + float64(i)/8 + 0.1)
		case devices.String:
			r.Values[i] = devices.StringValue(fmt.Sprintf("v%d \"%s\"", n, f.Name))
		}
	}
}

// testCity returns the test inventory and one full reading per asset.
func testCity(t testing.TB) (*devices.Inventory, []*devices.Reading) {
	inv := testInventory(t)
	var rs []*devices.Reading
	for i, a := range inv.Assets {
		r := &devices.Reading{}
		r.Reset(a)
		r.Time = time.Date(2026, 11, 26, 4, 0, i, 0, time.UTC)
		r.Received = r.Time.Add(50 * time.Millisecond)
		fillReading(r, i+1)
		rs = append(rs, r)
	}
	return inv, rs
}
