// Package control is the simulator's loopback HTTP control API (JSON): inject
// and clear faults, read the ground truth (what each device currently serves
// and what it served lately) and the counters.
//
//	GET    /healthz                    ok
//	GET    /faults                     active faults
//	POST   /faults                     {"fault":"lamp_out","asset":"SL-001-03","for":"10m","params":{}} → the fault with its id
//	DELETE /faults/{id}                clear a fault
//	GET    /truth[?asset=ID][&kind=K]  each asset's current values
//	GET    /truth/history?asset=ID[&window=5m]
//	GET    /stats                      Modbus requests served, MQTT messages attempted/acked
//	GET    /city                       the generated inventory (YAML)
package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/citygw/citygw/firmware-sim/faults"
)

// Backend is the running simulator.
type Backend interface {
	AddFault(sp faults.Spec) (faults.Fault, error)
	RemoveFault(id string) bool
	ListFaults() []faults.Fault
	TruthJSON(asset, kind string) (any, error)
	HistoryJSON(asset string, window time.Duration) (any, error)
	StatsJSON() any
	InventoryYAML() ([]byte, error)
}

// FaultRequest is the body of POST /faults.
type FaultRequest struct {
	Fault  string         `json:"fault"`
	Asset  string         `json:"asset"`
	For    string         `json:"for,omitempty"` // Go duration; empty: until deleted
	Params map[string]any `json:"params,omitempty"`
}

// Handler returns the API's HTTP handler.
func Handler(b Backend, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /faults", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"faults": b.ListFaults(), "kinds": kindDocs()})
	})
	mux.HandleFunc("POST /faults", func(w http.ResponseWriter, r *http.Request) {
		var req FaultRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("decoding fault request: %w", err))
			return
		}
		k, err := faults.ParseKind(req.Fault)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		var d time.Duration
		if req.For != "" {
			if d, err = time.ParseDuration(req.For); err != nil || d < 0 {
				writeError(w, http.StatusBadRequest, fmt.Errorf("for: want a duration such as 10m, got %q", req.For))
				return
			}
		}
		f, err := b.AddFault(faults.Spec{Kind: k, Asset: req.Asset, For: d, Params: req.Params, Source: "api"})
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		log.Info("fault injected", "id", f.ID, "fault", f.Kind.String(), "asset", f.Asset, "for", d, "params", f.Params)
		writeJSON(w, http.StatusCreated, f)
	})
	mux.HandleFunc("DELETE /faults/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if !b.RemoveFault(id) {
			writeError(w, http.StatusNotFound, fmt.Errorf("no fault %q", id))
			return
		}
		log.Info("fault cleared", "id", id)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /truth", func(w http.ResponseWriter, r *http.Request) {
		t, err := b.TruthJSON(r.URL.Query().Get("asset"), r.URL.Query().Get("kind"))
		if err != nil {
			writeError(w, http.StatusNotFound, err)
			return
		}
		writeJSON(w, http.StatusOK, t)
	})
	mux.HandleFunc("GET /truth/history", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var window time.Duration
		if s := q.Get("window"); s != "" {
			var err error
			if window, err = time.ParseDuration(s); err != nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("window: %v", err))
				return
			}
		} else if s := q.Get("minutes"); s != "" {
			var m float64
			if _, err := fmt.Sscan(s, &m); err != nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("minutes: not a number: %q", s))
				return
			}
			window = time.Duration(m * float64(time.Minute))
		}
		if q.Get("asset") == "" {
			writeError(w, http.StatusBadRequest, errors.New("asset is required"))
			return
		}
		h, err := b.HistoryJSON(q.Get("asset"), window)
		if err != nil {
			writeError(w, http.StatusNotFound, err)
			return
		}
		writeJSON(w, http.StatusOK, h)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, b.StatsJSON())
	})
	mux.HandleFunc("GET /city", func(w http.ResponseWriter, r *http.Request) {
		data, err := b.InventoryYAML()
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(data)
	})
	return loopbackOnly(mux)
}

func kindDocs() map[string]any {
	out := map[string]any{}
	for _, k := range faults.Kinds() {
		out[k.String()] = map[string]any{"applies_to": k.Targets(), "effect": k.Doc()}
	}
	return out
}

// loopbackOnly refuses requests from anywhere but the loopback interface,
// even if the listener was bound more widely by mistake.
func loopbackOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			writeError(w, http.StatusForbidden, errors.New("the control API answers loopback clients only"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// CheckLoopback returns an error unless addr (host:port) is a loopback address.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("control address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("control address %q: the control API listens on loopback only (127.0.0.1:PORT)", addr)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": strings.TrimSpace(err.Error())})
}
