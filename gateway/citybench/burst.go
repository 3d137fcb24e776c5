package citybench

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// burst is the scenario "a burst of 1,000,000 messages over 10,000 assets":
// the publisher sends every message as fast as the broker takes them,
// round-robin over the assets, each asset's messages one second apart in
// device time and all in the past.
type burst struct{}

// Burst defaults.
const (
	burstMessages = 1000000
	burstAssets   = 10000
)

func (burst) params(o *Options) (messages, assets int) {
	messages, assets = o.Messages, o.Assets
	if messages <= 0 {
		messages = burstMessages
	}
	if assets <= 0 {
		assets = burstAssets
	}
	return messages, assets
}

func (s burst) Describe(o *Options) string {
	m, a := s.params(o)
	return fmt.Sprintf("burst: %d messages over %d assets, QoS 1, %d publisher connections with %d in flight each", m, a, o.Conns, o.InFlight)
}

func (s burst) Run(ctx context.Context, b *Bench) (*Report, error) {
	o := &b.Opts
	messages, assets := s.params(o)
	rep := &Report{Scenario: "burst", Date: time.Now().UTC(), Machine: machine(),
		Params: map[string]any{"messages": messages, "assets": assets, "publisher_conns": o.Conns, "publisher_inflight": o.InFlight,
			"batch_size": o.BatchSize, "flush_interval": o.FlushInterval.String()},
		Notes: []string{
			"Each system ran alone on a fresh Mosquitto (configs/bench/mosquitto.conf) and, but for the ceiling, a fresh InfluxDB 1.8.10.",
			"points/s: points from the first publish to the first count query that saw them all (polled every 250 ms once InfluxDB's write counter reached the total; ceiling: the counter's last message).",
			"CPU and peak RSS: /proc between the publisher's start and full visibility for long-running processes; the publisher's and the counter's whole life (rusage). Peak RSS includes start-up (inventory loading).",
			"citygw: shipped rules loaded, WAL on, no case sink (no desk in this scenario), per-asset rate cap off (configs/bench/gateway.yaml).",
		}}
	if len(o.GatewayEnv) > 0 {
		rep.Params["gateway_env"] = strings.Join(o.GatewayEnv, " ")
	}
	inv, err := b.Inventory(ctx, assets)
	if err != nil {
		return nil, err
	}
	rep, err = b.eachSystem(ctx, rep, "", func(sys string) (*SystemResult, error) {
		return b.runBurst(ctx, sys, inv, messages, assets)
	})
	if rep != nil {
		for _, s := range rep.Systems {
			for _, p := range burstProfiles(s.System) {
				if top, ok := s.Extra[p.key].(string); ok {
					rep.Notes = append(rep.Notes, fmt.Sprintf("%s, %v from %v after the publisher started (go tool pprof -top, flat):\n\n```\n%s```", p.title, burstProfileFor, burstProfileAfter, top))
					delete(s.Extra, p.key)
				}
			}
		}
	}
	return rep, err
}

// The CPU profiles in the burst: long enough to see the steady ingest,
// after the connections' start.
const (
	burstProfileAfter = 5 * time.Second
	burstProfileFor   = 30 * time.Second
)

// burstProfile is one CPU profile the burst takes while a system ingests:
// citygw's (from its admin listener) or influxd's (from its HTTP API),
// where it goes in the report and its title.
type burstProfile struct {
	key, title, file string
	gateway          bool // citygw's; else influxd's
}

// base is the URL the profiled process serves /debug/pprof under.
func (p burstProfile) base(st *Stack) string {
	if p.gateway {
		return st.Admin
	}
	return st.DB.URL()
}

// binary is the executable go tool pprof reads symbols from; "" uses the
// names influxd's profile carries.
func (p burstProfile) binary(b *Bench) string {
	if p.gateway {
		return b.Gateway
	}
	return ""
}

// burstProfiles lists the profiles taken under sys: citygw's own, and
// InfluxDB's under every system that writes to it, since InfluxDB's CPU
// per point bounds every system's points/s on a shared machine.
func burstProfiles(sys string) []burstProfile {
	var ps []burstProfile
	if sys == SysCitygw {
		ps = append(ps, burstProfile{key: "cpu_top", title: sys + " CPU profile", file: "cpu", gateway: true})
	}
	if sys != SysCeiling {
		ps = append(ps, burstProfile{key: "influxd_cpu_top", title: "influxd CPU profile under " + sys, file: "influxd-cpu"})
	}
	return ps
}

// profileCPU takes p's CPU profile over the burst's ingest (its
// /debug/pprof/profile) into dir and returns its top entries.
func (b *Bench) profileCPU(ctx context.Context, st *Stack, p burstProfile) (string, error) {
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case <-time.After(burstProfileAfter):
	}
	prof := filepath.Join(st.Dir, p.file+".pb.gz")
	if err := fetch(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", p.base(st), int(burstProfileFor.Seconds())), prof); err != nil {
		return "", fmt.Errorf("%s: %w", p.title, err)
	}
	return b.pprofTop(ctx, p.binary(b), prof, "", filepath.Join(st.Dir, p.file+"-top.txt"))
}

// runBurst measures one system under the burst on a fresh stack.
func (b *Bench) runBurst(ctx context.Context, sys string, inv *Inventory, messages, assets int) (*SystemResult, error) {
	fmt.Fprintf(b.Opts.Progress, "citybench: %s: starting a fresh stack\n", sys)
	st, err := b.StartStack(ctx, sys, filepath.Join(b.Opts.Work, "burst-"+sys), inv, int64(messages))
	if err != nil {
		return &SystemResult{System: sys, Error: err.Error()}, err
	}
	defer st.Stop()
	type profiled struct {
		key, top string
		err      error
	}
	profiles := burstProfiles(sys)
	prof := make(chan profiled, len(profiles))
	for _, p := range profiles {
		go func() {
			top, err := b.profileCPU(ctx, st, p)
			prof <- profiled{p.key, top, err}
		}()
	}
	res, err := b.Measure(ctx, st, b.LoadArgs(assets, "-messages", strconv.Itoa(messages)), int64(messages))
	if err != nil && res.Error == "" {
		res.Error = err.Error()
	}
	// The profiles may outlast a short run; the stack stays up for them.
	for range profiles {
		p := <-prof
		if p.err != nil {
			fmt.Fprintf(b.Opts.Progress, "citybench: %s: no CPU profile: %v\n", sys, p.err)
			continue
		}
		if res.Extra == nil {
			res.Extra = map[string]any{}
		}
		res.Extra[p.key] = p.top
	}
	return res, err
}
