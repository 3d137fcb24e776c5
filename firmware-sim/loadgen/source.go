package loadgen

import (
	"fmt"
	"time"

	"github.com/citygw/citygw/devices"

	"github.com/citygw/citygw/firmware-sim/city"
	"github.com/citygw/citygw/firmware-sim/faults"
)

// CitySource publishes the bins of a generated city: the asset ids and
// topics `firmware-sim inventory` writes for the same city config and
// counts, and payloads from the simulator's own bin model (city.Bin.Payload),
// so the values are as plausible as the simulator's and rules see realistic
// data.
type CitySource struct {
	c        *city.City
	topics   []string
	simStart time.Time
}

// NewCitySource returns a source over c's bins. Payload values are computed
// for simulated time = device time.
func NewCitySource(c *city.City) *CitySource {
	s := &CitySource{c: c, topics: make([]string, len(c.Bins)), simStart: time.Now().Add(-24 * time.Hour)}
	for i, b := range c.Bins {
		s.topics[i] = b.Asset.MQTT.Topic
	}
	return s
}

// Len implements Source.
func (s *CitySource) Len() int { return len(s.c.Bins) }

// Topic implements Source.
func (s *CitySource) Topic(i int) string { return s.topics[i] }

// Asset returns asset i's id.
func (s *CitySource) Asset(i int) string { return s.c.Bins[i].Asset.ID }

// Payload implements Source: bin i's binsense-ws3 JSON message for device
// and simulated time ts, no fault in effect.
func (s *CitySource) Payload(i int, ts time.Time, buf []byte) []byte {
	env := s.c.Env(ts, ts, 0, ts.Sub(s.simStart).Seconds(), 0)
	var eff faults.Effects
	return s.c.Bins[i].Payload(&env, &eff, buf)
}

// BinsCity generates the city of cityFile with only its bins: bins of them
// (the config's count when negative), no cabinets, lamps or gas stations,
// publishing to topic (the config's when empty). It is the city
// `firmware-sim inventory -city FILE -bins N -cabinets 0 -gas 0` writes the
// inventory of.
func BinsCity(cityFile string, bins int, topic string) (*city.City, error) {
	conf, err := city.LoadConfig(cityFile)
	if err != nil {
		return nil, err
	}
	zero := 0
	conf.Streetlights.Cabinets = &zero
	conf.Gas.Stations = &zero
	if bins >= 0 {
		conf.Bins.Count = &bins
	}
	if topic != "" {
		conf.MQTT.Topic = topic
	}
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		return nil, fmt.Errorf("loading device profiles: %w", err)
	}
	c, err := city.Generate(conf, cat)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cityFile, err)
	}
	return c, nil
}
