package e2e

import (
	"testing"
	"time"
)

// TestReplicasSticky runs two replicas that each receive only their share
// of the bins, as under a sticky shared-subscription policy (EMQX
// hash_topic; Mosquitto has none, so each replica subscribes to its bins'
// topics itself), with the same inventory and rules and rules.absence:
// shared. Each replica's absence rule (waste_bin.silent, absent 20 s here)
// would call the other replica's bins silent on its own; asking the
// InfluxDB they share first, neither opens a case for a bin that reports,
// and a bin that really goes silent gets exactly one DEV-OFFLINE case.
//
// Run it alone: go test -race -count=1 -v -run TestReplicasSticky ./gateway/e2e
func TestReplicasSticky(t *testing.T) {
	rc := startReplicaCity(t, 9)
	db, c, dk := rc.st.db, rc.c, rc.dk
	share := map[string][]string{}
	owner := map[string]string{}
	for i, a := range c.inv.Assets {
		name := []string{"a", "b"}[i%2]
		share[name] = append(share[name], a.MQTT.Topic)
		owner[a.ID] = name
	}
	a := rc.replica(t, "a", replicaOpts{topics: share["a"], absence: "shared"})
	b := rc.replica(t, "b", replicaOpts{topics: share["b"], absence: "shared"})
	replicas := map[string]*gateway{"a": a, "b": b}

	rc.waitStored(t, 3)
	// Each bin is written by its own replica only.
	for _, as := range c.inv.Assets {
		for _, row := range points(t, db, as.Kind, as.ID) {
			if gw, _ := row["gateway"].(string); gw != "gw-"+owner[as.ID] {
				t.Fatalf("%s: a point written by %q, want gw-%s only (the replicas' shares overlap)", as.ID, gw, owner[as.ID])
			}
		}
	}

	t.Run("no bin that reports is called silent", func(t *testing.T) {
		// Past the absent time and then some: every replica has looked up
		// the other's bins and found them stored.
		waitFor(t, 90*time.Second, "each replica to find the other's bins stored", func() bool {
			for _, g := range replicas {
				if !(g.metric(t, "citygw_rule_absence_lookups_total", `result="heard"`) >= float64(len(c.inv.Assets)/2)) {
					return false
				}
			}
			return true
		})
		time.Sleep(5 * time.Second)
		if rs := dk.requests(t); len(casesOf(rs, "DEV-OFFLINE")) > 0 {
			t.Fatalf("DEV-OFFLINE cases for bins that report: %v", casesOf(rs, "DEV-OFFLINE"))
		}
		for name, g := range replicas {
			t.Logf("replica %s: looked up heard %v, not heard %v, errors %v", name,
				g.metric(t, "citygw_rule_absence_lookups_total", `result="heard"`),
				g.metric(t, "citygw_rule_absence_lookups_total", `result="not_heard"`),
				g.metric(t, "citygw_rule_absence_lookups_total", `result="error"`))
		}
	})

	t.Run("a bin that goes silent gets one case", func(t *testing.T) {
		const bin = "BIN-0004"
		if c.inv.Lookup(bin) == nil {
			t.Fatalf("the city has no %s", bin)
		}
		c.faultID(t, "silent", bin, nil)
		waitFor(t, 120*time.Second, "a DEV-OFFLINE case for "+bin, func() bool {
			return len(casesFor(dk.requests(t), "DEV-OFFLINE", bin)) > 0
		})
		time.Sleep(5 * time.Second) // a second replica's duplicate would show now
		rs := dk.requests(t)
		if got := casesFor(rs, "DEV-OFFLINE", bin); len(got) != 1 {
			t.Errorf("%s: %d DEV-OFFLINE cases, want 1", bin, len(got))
		}
		for _, r := range casesOf(rs, "DEV-OFFLINE") {
			if r.DeviceID != bin {
				t.Errorf("a DEV-OFFLINE case for %s, which reports", r.DeviceID)
			}
		}
	})
}

// casesOf returns the desk's requests with the service code.
func casesOf(rs []deskRequest, code string) []deskRequest {
	var out []deskRequest
	for _, r := range rs {
		if r.ServiceCode == code {
			out = append(out, r)
		}
	}
	return out
}
