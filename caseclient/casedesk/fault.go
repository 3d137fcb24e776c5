package casedesk

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Fault modes.
const (
	FaultNone = "none"
	Fault500  = "500"  // answer 500 Internal Server Error
	Fault429  = "429"  // answer 429 Too Many Requests with Retry-After
	Fault503  = "503"  // answer 503 Service Unavailable with Retry-After
	FaultSlow = "slow" // handle the request, then hold the answer back for Delay
	FaultDrop = "drop" // close the connection without answering
	// Any other HTTP status from 300 to 599 ("408", "410", "502", "302", …)
	// is answered the same way as 500; 3xx carry a Location the client must
	// not follow.
)

// Endpoint groups a fault can be limited to.
const (
	PathServices = "services" // GET /services.json, /services/{code}.json
	PathRequests = "requests" // /requests.json, /requests/{id}.json, /tokens/{token}.json
	PathUpdates  = "updates"  // /servicerequestupdates.json
	PathWebhook  = "webhook"  // POST /webhook
)

// Fault makes the desk fail API calls, for fault tests. The HTML pages and
// the control API never fail.
//
// 500, 429, 503 and drop refuse the call before it is handled (nothing is
// stored) unless AfterHandling is set: then the call is handled and stored
// and only the answer is replaced, the case a client must reconcile. slow
// always handles the call and holds the answer back for Delay (or until the
// client gives up), so a client that times out does not know its case was
// stored.
type Fault struct {
	Mode           string        `json:"mode"`
	RetryAfter     time.Duration `json:"-"`                          // status faults: Retry-After, sent in whole seconds (rounded up); 0 sends none
	RetryAfterDate bool          `json:"retry_after_date,omitempty"` // send Retry-After as an HTTP-date instead of seconds
	Delay          time.Duration `json:"-"`                          // slow: how long the answer is held back
	Count          int           `json:"count,omitempty"`            // how many calls fail; 0 = until cleared
	Paths          []string      `json:"paths,omitempty"`            // endpoint groups (services, requests, updates, webhook); empty = all
	Methods        []string      `json:"methods,omitempty"`          // HTTP methods (GET, POST); empty = all
	AfterHandling  bool          `json:"after_handling,omitempty"`
}

// faultJSON is Fault on the wire: durations as Go duration strings ("1.5s")
// or numbers of seconds.
type faultJSON struct {
	fault
	RetryAfter any `json:"retry_after,omitempty"`
	Delay      any `json:"delay,omitempty"`
}

type fault Fault

// MarshalJSON writes durations as Go duration strings.
func (f Fault) MarshalJSON() ([]byte, error) {
	j := faultJSON{fault: fault(f)}
	if f.RetryAfter > 0 {
		j.RetryAfter = f.RetryAfter.String()
	}
	if f.Delay > 0 {
		j.Delay = f.Delay.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads durations as strings ("500ms", "2s") or seconds.
func (f *Fault) UnmarshalJSON(data []byte) error {
	var j faultJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return err
	}
	var err error
	*f = Fault(j.fault)
	if f.RetryAfter, err = jsonDuration("retry_after", j.RetryAfter); err != nil {
		return err
	}
	if f.Delay, err = jsonDuration("delay", j.Delay); err != nil {
		return err
	}
	return nil
}

func jsonDuration(name string, v any) (time.Duration, error) {
	switch v := v.(type) {
	case nil:
		return 0, nil
	case float64:
		if v < 0 {
			return 0, fmt.Errorf("%s: negative", name)
		}
		return time.Duration(v * float64(time.Second)), nil
	case string:
		d, err := time.ParseDuration(v)
		if err != nil {
			if s, err2 := strconv.ParseFloat(v, 64); err2 == nil && s >= 0 {
				return time.Duration(s * float64(time.Second)), nil
			}
			return 0, fmt.Errorf("%s: %q is not a duration such as 2s or 500ms", name, v)
		}
		if d < 0 {
			return 0, fmt.Errorf("%s: negative", name)
		}
		return d, nil
	}
	return 0, fmt.Errorf("%s: want a duration string or seconds", name)
}

// Check reports what is wrong with a fault.
func (f Fault) Check() error {
	switch f.Mode {
	case "", FaultNone, FaultDrop:
	case FaultSlow:
		if f.Delay <= 0 {
			return fmt.Errorf("fault slow needs a delay")
		}
	default:
		if c, err := strconv.Atoi(f.Mode); err != nil || c < 300 || c > 599 || len(f.Mode) != 3 {
			return fmt.Errorf("unknown fault mode %q (none, slow, drop, or an HTTP status 300-599 such as 500, 429, 503)", f.Mode)
		}
	}
	if f.Count < 0 {
		return fmt.Errorf("negative fault count")
	}
	for _, p := range f.Paths {
		if !slices.Contains([]string{PathServices, PathRequests, PathUpdates, PathWebhook}, p) {
			return fmt.Errorf("unknown fault path %q (services, requests, updates, webhook)", p)
		}
	}
	return nil
}

// SetFault sets (or, with mode "none" or "", clears) the fault. An invalid
// fault is logged and ignored; the control API reports it to the caller.
func (d *Desk) SetFault(f Fault) {
	if err := f.Check(); err != nil {
		d.log.Warn("fault ignored", "error", err)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if f.Mode == "" {
		f.Mode = FaultNone
	}
	d.fault, d.faultUsed = f, 0
	d.log.Info("fault set", "mode", f.Mode, "count", f.Count, "paths", f.Paths, "delay", f.Delay, "retry_after", f.RetryAfter)
}

// CurrentFault returns the fault in force and how many calls it has failed.
func (d *Desk) CurrentFault() (Fault, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fault, d.faultUsed
}

type faultKey struct{}

// withFault wraps an API endpoint group: it draws the fault for this call
// (counting it) and either fails the call now or leaves it in the context
// for respond to apply after the call has been handled.
func (d *Desk) withFault(group string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f, ok := d.drawFault(group, r.Method)
		if !ok {
			h(w, r)
			return
		}
		d.log.Info("fault injected", "mode", f.Mode, "method", r.Method, "path", r.URL.Path, "after_handling", f.Mode == FaultSlow || f.AfterHandling)
		if f.Mode == FaultSlow || f.AfterHandling {
			h(w, r.WithContext(context.WithValue(r.Context(), faultKey{}, f)))
			return
		}
		d.failNow(w, r, f)
	}
}

func (d *Desk) drawFault(group, method string) (Fault, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := d.fault
	if f.Mode == "" || f.Mode == FaultNone {
		return Fault{}, false
	}
	if len(f.Paths) > 0 && !slices.Contains(f.Paths, group) {
		return Fault{}, false
	}
	if len(f.Methods) > 0 && !slices.ContainsFunc(f.Methods, func(m string) bool { return strings.EqualFold(m, method) }) {
		return Fault{}, false
	}
	d.faultUsed++
	if f.Count > 0 && d.faultUsed >= f.Count {
		d.fault = Fault{Mode: FaultNone} // the last failing call
	}
	return f, true
}

// afterHandling applies a fault drawn for a call that has been handled:
// slow holds the answer back; the others replace it. It reports whether the
// real answer should still be written.
func (d *Desk) afterHandling(w http.ResponseWriter, r *http.Request) bool {
	f, ok := r.Context().Value(faultKey{}).(Fault)
	if !ok {
		return true
	}
	if f.Mode == FaultSlow {
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
		}
		return true
	}
	d.failNow(w, r, f)
	return false
}

func (d *Desk) failNow(w http.ResponseWriter, r *http.Request, f Fault) {
	if f.Mode == FaultDrop {
		dropConnection(w)
		return
	}
	if f.RetryAfter > 0 {
		if f.RetryAfterDate {
			w.Header().Set("Retry-After", d.cfg.Now().Add(f.RetryAfter).UTC().Format(http.TimeFormat))
		} else {
			secs := int((f.RetryAfter + time.Second - 1) / time.Second)
			w.Header().Set("Retry-After", strconv.Itoa(secs))
		}
	}
	code, _ := strconv.Atoi(f.Mode)
	if code < 400 {
		w.Header().Set("Location", "/moved-by-fault-injection")
	}
	body, _ := json.Marshal([]apiError{{Code: code, Description: "fault injected by the case desk: " + http.StatusText(code)}})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	w.Write(append(body, '\n'))
}

// dropConnection closes the client's connection without an answer.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // HTTP/2 or a test recorder: abort the stream instead
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0) // a reset, as a crashed server or a middlebox would give
	}
	conn.Close()
}
