package modbuspoll

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/devices/yamlconf"
)

// TestReadmeConfig decodes the README's sample configuration strictly, so
// the documented keys are the real ones.
func TestReadmeConfig(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	i := strings.Index(s, "```yaml\nmodbus:")
	if i < 0 {
		t.Fatal("README has no ```yaml modbus: block")
	}
	block := s[i+len("```yaml\n"):]
	block = block[:strings.Index(block, "```")]
	var doc struct {
		Modbus Config `yaml:"modbus"`
	}
	if _, err := yamlconf.Decode("README.md", []byte(block), &doc); err != nil {
		t.Fatal(err)
	}
	c := doc.Modbus
	if c.DefaultInterval != time.Second || c.BackoffMax != time.Minute || c.MaxClockAge != 24*time.Hour || c.RTU.Parity != "N" || c.OfflineAfter != 2 {
		t.Errorf("decoded %+v", c)
	}
	if ov := c.Plans["gasreg-rtu500"]; ov.MaxRegisters == nil || *ov.MaxRegisters != 64 || ov.OnePerField == nil || *ov.OnePerField {
		t.Errorf("profile override decoded as %+v", ov)
	}
	// The documented values are the defaults.
	def, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	c.Plans, def.Plans = nil, nil
	if !reflect.DeepEqual(c, def) {
		t.Errorf("README values %+v differ from the defaults %+v", c, def)
	}
}

func TestRateLimiter(t *testing.T) {
	l := rateLimiter{every: time.Minute}
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at         time.Duration
		wantOK     bool
		suppressed int
	}{
		{0, true, 0},
		{time.Second, false, 0},
		{30 * time.Second, false, 0},
		{59 * time.Second, false, 0},
		{60 * time.Second, true, 3},
		{61 * time.Second, false, 0},
		{10 * time.Minute, true, 1},
	}
	for _, s := range steps {
		n, ok := l.allow(t0.Add(s.at))
		if ok != s.wantOK || n != s.suppressed {
			t.Errorf("at %v: allow = %d, %v; want %d, %v", s.at, n, ok, s.suppressed, s.wantOK)
		}
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := time.Second, 10*time.Second
	var b time.Duration
	var got []time.Duration
	for range 6 {
		b = nextBackoff(b, lo, hi)
		got = append(got, b)
	}
	want := []time.Duration{1, 2, 4, 8, 10, 10}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("backoff sequence %v, want %v seconds", got, want)
		}
	}
	for range 1000 {
		if j := jitter(10 * time.Second); j < 8*time.Second || j > 12*time.Second {
			t.Fatalf("jitter(10s) = %v, want within ±20%%", j)
		}
	}
	if jitter(0) != 0 {
		t.Error("jitter(0) != 0")
	}
}
