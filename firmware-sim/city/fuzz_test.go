package city

import "testing"

// FuzzParseConfig feeds arbitrary files to the city config loader: it must
// return a config or an error, never panic, and a config it accepts must
// generate a city (capped in size to keep the fuzzer fast).
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(smallYAML))
	f.Add([]byte("center: {lat: 31, lon: 121}\ndistrict: \"310101\"\nstart: \"2026-01-15T17:30:00+08:00\"\n"))
	f.Add([]byte("center: {lat: -33.9, lon: 151.2}\ndistrict: \"110101\"\nbins: {collections: [\"23:59\", \"00:00\"], routes: 72}\n"))
	f.Add([]byte("streetlights: {cabinets: -1}\n"))
	f.Add([]byte("- a\n- b\n"))
	cat := catalog(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("fuzz.yaml", data)
		if err != nil {
			return
		}
		if *c.Streetlights.Cabinets**c.Streetlights.LampsPerCabinet+*c.Gas.Stations+*c.Bins.Count > 2000 {
			return
		}
		if _, err := Generate(c, cat); err != nil && c.Modbus.BasePort+c.Ports()-1 <= 65535 {
			t.Fatalf("accepted config does not generate: %v", err)
		}
	})
}
