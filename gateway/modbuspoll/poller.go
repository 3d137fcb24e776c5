package modbuspoll

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/prometheus/client_golang/prometheus"
)

// Handler receives the poller's readings. The poller reuses the Reading (and
// its Values) after Handle returns: a handler that keeps it must copy it.
// Handle is called from the endpoint's goroutine, so a slow handler slows that
// endpoint's polling (backpressure) but no other endpoint's.
type Handler interface {
	Handle(ctx context.Context, r *devices.Reading) error
}

// DeviceStatus is a device's polling state, for the status page.
type DeviceStatus struct {
	Asset           string    `json:"asset"`
	Endpoint        string    `json:"endpoint"`
	Unit            uint8     `json:"unit"`
	Up              bool      `json:"up"`
	LastOK          time.Time `json:"last_ok"`           // last poll with at least one answered request
	LastError       string    `json:"last_error"`        // the last failure, kept after recovery
	Failures        int       `json:"failures"`          // consecutive failed polls
	RequestsPerPoll int       `json:"requests_per_poll"` // requests one full poll issues (the plan)
	NextPoll        time.Time `json:"next_poll"`
}

// Poller polls a set of Modbus devices.
type Poller struct {
	cfg       Config
	h         Handler
	log       *slog.Logger
	m         *metrics
	endpoints []*endpoint
	devices   []*device

	runMu   sync.Mutex
	running bool
}

// New prepares polling of the assets that have a Modbus address (others are
// skipped): it plans every device's requests and checks the configuration.
// Nothing is connected before Run.
func New(cfg Config, assets []*devices.Asset, h Handler, reg prometheus.Registerer, log *slog.Logger) (*Poller, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("modbus poller: no reading handler")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	p := &Poller{cfg: cfg, h: h, log: log, m: m}
	byEndpoint := map[string]*endpoint{}
	for _, a := range assets {
		if a == nil || a.Modbus == nil {
			continue
		}
		d, err := newDevice(&p.cfg, a, m)
		if err != nil {
			return nil, err
		}
		name := a.Modbus.Endpoint()
		e := byEndpoint[name]
		if e == nil {
			e = &endpoint{name: name, cfg: &p.cfg, m: m, h: h, log: log.With("endpoint", name)}
			if err := e.init(a.Modbus); err != nil {
				return nil, err
			}
			byEndpoint[name] = e
			p.endpoints = append(p.endpoints, e)
		} else if a.Modbus.Serial != "" && e.lineOf(a.Modbus) != e.line {
			return nil, fmt.Errorf("asset %s: serial line %s is %s for asset %s, this asset asks for %s",
				a.ID, a.Modbus.Serial, e.line, e.devs[0].asset.ID, e.lineOf(a.Modbus))
		}
		d.endpoint = name
		e.devs = append(e.devs, d)
		p.devices = append(p.devices, d)
	}
	sort.Slice(p.endpoints, func(i, j int) bool { return p.endpoints[i].name < p.endpoints[j].name })
	return p, nil
}

// Run polls until ctx is cancelled, one goroutine per endpoint, and returns
// nil then. It may be called once.
func (p *Poller) Run(ctx context.Context) error {
	p.runMu.Lock()
	if p.running {
		p.runMu.Unlock()
		return errors.New("modbus poller: already running")
	}
	p.running = true
	p.runMu.Unlock()

	p.m.devices.Add(float64(len(p.devices)))
	for _, d := range p.devices {
		d.upGauge.Set(0)
	}
	p.log.Info("modbus polling started", "endpoints", len(p.endpoints), "devices", len(p.devices))
	var wg sync.WaitGroup
	for _, e := range p.endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.run(ctx)
		}()
	}
	wg.Wait()
	// Leave the shared collectors as a successor poller expects them.
	p.m.devices.Sub(float64(len(p.devices)))
	for _, d := range p.devices {
		d.mu.Lock()
		if d.up {
			p.m.devicesUp.Dec()
		}
		d.mu.Unlock()
		p.m.deviceUp.DeleteLabelValues(d.asset.ID)
		p.m.perPoll.DeleteLabelValues(d.asset.ID)
	}
	p.log.Info("modbus polling stopped")
	return nil
}

// Status returns every device's state, sorted by endpoint and unit.
func (p *Poller) Status() []DeviceStatus {
	out := make([]DeviceStatus, 0, len(p.devices))
	for _, d := range p.devices {
		d.mu.Lock()
		out = append(out, DeviceStatus{
			Asset:           d.asset.ID,
			Endpoint:        d.endpoint,
			Unit:            d.unit,
			Up:              d.up,
			LastOK:          d.lastOK,
			LastError:       d.lastErr,
			Failures:        d.failures,
			RequestsPerPoll: len(d.reqs),
			NextPoll:        d.nextPub,
		})
		d.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Endpoint != out[j].Endpoint {
			return out[i].Endpoint < out[j].Endpoint
		}
		return out[i].Unit < out[j].Unit
	})
	return out
}

// jitter returns d spread by ±20%.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d - d/5 + rand.N(2*d/5+1)
}

// nextBackoff doubles b within [lo, hi].
func nextBackoff(b, lo, hi time.Duration) time.Duration {
	if b <= 0 {
		return lo
	}
	return min(2*b, hi)
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
