package casedesk

import (
	"encoding/json"
	"net"
	"net/http"
)

// routes builds the desk's handler.
func (d *Desk) routes() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("GET /services.json", d.withFault(PathServices, d.handleServices))
	m.HandleFunc("GET /services/{file}", d.withFault(PathServices, d.handleServiceDefinition))
	m.HandleFunc("POST /requests.json", d.withFault(PathRequests, d.handlePostRequest))
	m.HandleFunc("GET /requests.json", d.withFault(PathRequests, d.handleGetRequests))
	m.HandleFunc("GET /requests/{file}", d.withFault(PathRequests, d.handleGetRequest))
	m.HandleFunc("GET /tokens/{file}", d.withFault(PathRequests, d.handleToken))
	m.HandleFunc("POST /servicerequestupdates.json", d.withFault(PathUpdates, d.handlePostUpdate))
	m.HandleFunc("GET /servicerequestupdates.json", d.withFault(PathUpdates, d.handleGetUpdates))
	m.HandleFunc("POST /webhook", d.withFault(PathWebhook, d.handleWebhook))

	m.HandleFunc("GET /{$}", d.handleIndex)
	m.HandleFunc("GET /cases/{id...}", d.handleCase)

	m.HandleFunc("GET /_control/requests", d.control(d.ctlRequests))
	m.HandleFunc("GET /_control/webhooks", d.control(d.ctlWebhooks))
	m.HandleFunc("GET /_control/fault", d.control(d.ctlGetFault))
	m.HandleFunc("POST /_control/fault", d.control(d.ctlSetFault))
	m.HandleFunc("DELETE /_control/fault", d.control(d.ctlClearFault))
	m.HandleFunc("POST /_control/close", d.control(d.ctlClose))
	m.HandleFunc("POST /_control/reopen", d.control(d.ctlReopen))
	m.HandleFunc("POST /_control/reset", d.control(d.ctlReset))
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	return m
}

// control admits only loopback clients.
func (d *Desk) control(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		ip := net.ParseIP(host)
		if err != nil || ip == nil || !ip.IsLoopback() {
			d.log.Warn("control API refused to a non-loopback client", "remote", r.RemoteAddr, "path", r.URL.Path)
			ctlJSON(w, http.StatusForbidden, map[string]string{"error": "the control API answers loopback clients only"})
			return
		}
		h(w, r)
	}
}

func ctlJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func ctlError(w http.ResponseWriter, code int, err error) {
	ctlJSON(w, code, map[string]string{"error": err.Error()})
}

func (d *Desk) ctlRequests(w http.ResponseWriter, r *http.Request) {
	ctlJSON(w, http.StatusOK, d.Requests())
}

func (d *Desk) ctlWebhooks(w http.ResponseWriter, r *http.Request) {
	ctlJSON(w, http.StatusOK, d.Webhooks())
}

// faultState is the answer of GET /_control/fault.
type faultState struct {
	Fault  Fault `json:"fault"`
	Failed int   `json:"failed"` // calls failed by it so far
}

func (d *Desk) ctlGetFault(w http.ResponseWriter, r *http.Request) {
	f, n := d.CurrentFault()
	ctlJSON(w, http.StatusOK, faultState{f, n})
}

func (d *Desk) ctlSetFault(w http.ResponseWriter, r *http.Request) {
	var f Fault
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		ctlJSON(w, http.StatusBadRequest, map[string]string{"error": "fault: " + err.Error()})
		return
	}
	if err := f.Check(); err != nil {
		ctlError(w, http.StatusBadRequest, err)
		return
	}
	d.SetFault(f)
	d.ctlGetFault(w, r)
}

func (d *Desk) ctlClearFault(w http.ResponseWriter, r *http.Request) {
	d.SetFault(Fault{Mode: FaultNone})
	d.ctlGetFault(w, r)
}

type closeCmd struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Notes  string `json:"notes"`
}

func (d *Desk) ctlClose(w http.ResponseWriter, r *http.Request) {
	var c closeCmd
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&c); err != nil {
		ctlJSON(w, http.StatusBadRequest, map[string]string{"error": "close: " + err.Error()})
		return
	}
	if err := d.CloseRequest(c.ID, c.Status, c.Notes); err != nil {
		ctlError(w, http.StatusBadRequest, err)
		return
	}
	req, _ := d.Request(c.ID)
	ctlJSON(w, http.StatusOK, req)
}

func (d *Desk) ctlReopen(w http.ResponseWriter, r *http.Request) {
	var c closeCmd
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&c); err != nil {
		ctlJSON(w, http.StatusBadRequest, map[string]string{"error": "reopen: " + err.Error()})
		return
	}
	if err := d.ReopenRequest(c.ID, c.Notes); err != nil {
		ctlError(w, http.StatusBadRequest, err)
		return
	}
	req, _ := d.Request(c.ID)
	ctlJSON(w, http.StatusOK, req)
}

func (d *Desk) ctlReset(w http.ResponseWriter, r *http.Request) {
	if err := d.Reset(); err != nil {
		ctlError(w, http.StatusInternalServerError, err)
		return
	}
	ctlJSON(w, http.StatusOK, map[string]string{"status": "reset"})
}
