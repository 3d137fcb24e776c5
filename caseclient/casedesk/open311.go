package casedesk

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// maxBody bounds every request body the desk reads.
const maxBody = 1 << 20

// apiError is Open311's error body element.
type apiError struct {
	Code        int    `json:"code"`
	Description string `json:"description"`
}

func (d *Desk) apiError(w http.ResponseWriter, r *http.Request, code int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	d.log.Info("request refused", "method", r.Method, "path", r.URL.Path, "status", code, "error", msg)
	d.respond(w, r, code, []apiError{{Code: code, Description: msg}})
}

// respond writes a JSON answer, after any fault that holds back or replaces
// the answer of a request that has been handled (see Fault).
func (d *Desk) respond(w http.ResponseWriter, r *http.Request, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(v)
	body := buf.Bytes()
	if err != nil {
		d.log.Error("encoding an answer", "path", r.URL.Path, "error", err)
		code, body = http.StatusInternalServerError, []byte(`[{"code":500,"description":"encoding the answer failed"}]`+"\n")
	}
	d.respondRaw(w, r, code, "application/json; charset=utf-8", body, nil)
}

func (d *Desk) respondRaw(w http.ResponseWriter, r *http.Request, code int, ctype string, body []byte, hdr http.Header) {
	if !d.afterHandling(w, r) {
		return
	}
	for k, v := range hdr {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", ctype)
	w.WriteHeader(code)
	w.Write(body)
}

// jsonSuffix strips the required ".json" format suffix of a path element.
func jsonSuffix(s string) (string, bool) {
	v, ok := strings.CutSuffix(s, ".json")
	return v, ok && v != ""
}

func (d *Desk) checkJurisdiction(w http.ResponseWriter, r *http.Request, j string) bool {
	if j != "" && d.cfg.Jurisdiction != "" && j != d.cfg.Jurisdiction {
		d.apiError(w, r, http.StatusNotFound, "unknown jurisdiction_id %q", j)
		return false
	}
	return true
}

// GET /services.json
func (d *Desk) handleServices(w http.ResponseWriter, r *http.Request) {
	if !d.checkJurisdiction(w, r, r.URL.Query().Get("jurisdiction_id")) {
		return
	}
	type item struct {
		Code        string `json:"service_code"`
		Name        string `json:"service_name"`
		Description string `json:"description"`
		Metadata    bool   `json:"metadata"`
		Type        string `json:"type"`
		Keywords    string `json:"keywords"`
		Group       string `json:"group"`
	}
	out := make([]item, 0, len(d.services))
	for _, s := range d.services {
		out = append(out, item{Code: s.Code, Name: s.Name, Description: s.Description, Metadata: len(s.Attributes) > 0,
			Type: s.Type, Keywords: strings.Join(s.Keywords, ","), Group: s.Group})
	}
	d.respond(w, r, http.StatusOK, out)
}

// GET /services/{code}.json
func (d *Desk) handleServiceDefinition(w http.ResponseWriter, r *http.Request) {
	if !d.checkJurisdiction(w, r, r.URL.Query().Get("jurisdiction_id")) {
		return
	}
	code, ok := jsonSuffix(r.PathValue("file"))
	if !ok {
		d.apiError(w, r, http.StatusNotFound, "only the JSON format (.json) is served")
		return
	}
	s, found := d.byCode[code]
	if !found {
		d.apiError(w, r, http.StatusNotFound, "unknown service_code %q", code)
		return
	}
	attrs := slices.Clone(s.Attributes)
	if attrs == nil {
		attrs = []Attribute{}
	}
	d.respond(w, r, http.StatusOK, struct {
		Code       string      `json:"service_code"`
		Attributes []Attribute `json:"attributes"`
	}{s.Code, attrs})
}

// POST /requests.json
func (d *Desk) handlePostRequest(w http.ResponseWriter, r *http.Request) {
	form, ok := d.readForm(w, r)
	if !ok {
		return
	}
	if !d.validKey(form.Get("api_key")) {
		d.apiError(w, r, http.StatusForbidden, "missing or invalid api_key")
		return
	}
	if !d.checkJurisdiction(w, r, form.Get("jurisdiction_id")) {
		return
	}
	code := form.Get("service_code")
	if code == "" {
		d.apiError(w, r, http.StatusBadRequest, "service_code is required")
		return
	}
	svc, found := d.byCode[code]
	if !found {
		d.apiError(w, r, http.StatusNotFound, "unknown service_code %q", code)
		return
	}
	req := Request{ServiceCode: code, ServiceName: svc.Name, ServiceType: svc.Type, Status: "open",
		AgencyResponsible: svc.Agency, Jurisdiction: form.Get("jurisdiction_id"),
		Address: form.Get("address_string"), AddressID: form.Get("address_id"),
		Description: form.Get("description"), DeviceID: form.Get("device_id"), AccountID: form.Get("account_id"),
		MediaURL: form.Get("media_url"), Email: form.Get("email"), FirstName: form.Get("first_name"),
		LastName: form.Get("last_name"), Phone: form.Get("phone")}
	lat, long := form.Get("lat"), form.Get("long")
	switch {
	case lat != "" || long != "":
		if lat == "" || long == "" {
			d.apiError(w, r, http.StatusBadRequest, "lat and long must be sent together")
			return
		}
		la, err := parseCoord("lat", lat, 90)
		if err != nil {
			d.apiError(w, r, http.StatusBadRequest, "%v", err)
			return
		}
		lo, err := parseCoord("long", long, 180)
		if err != nil {
			d.apiError(w, r, http.StatusBadRequest, "%v", err)
			return
		}
		req.Lat, req.Long = &la, &lo
	case req.Address != "" || req.AddressID != "":
	default:
		d.apiError(w, r, http.StatusBadRequest, "a location is required: lat and long, address_string or address_id")
		return
	}
	if n := utf8.RuneCountInString(req.Description); n > MaxDescription {
		d.apiError(w, r, http.StatusBadRequest, "description is %d characters, more than %d", n, MaxDescription)
		return
	}
	for _, f := range []string{"description", "address_string", "address_id", "device_id", "account_id", "media_url"} {
		if !utf8.ValidString(form.Get(f)) {
			d.apiError(w, r, http.StatusBadRequest, "%s is not valid UTF-8", f)
			return
		}
	}
	attrs, multi, err := parseAttributes(form)
	if err != nil {
		d.apiError(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	if err := validateAttributes(svc, attrs, multi); err != nil {
		d.apiError(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	req.Attributes = attrs

	d.mu.Lock()
	if open := d.openForAnomaly(req.AnomalyKey(), req.Jurisdiction); open != nil {
		d.mergeOpen(w, r, open, req.CaseKey()) // unlocks
		return
	}
	seq := d.nextSeq(keyRequestSeq)
	now := d.cfg.Now().UTC().Truncate(time.Second)
	req.ID = strconv.FormatUint(1000+seq.n, 10)
	req.RequestedAt, req.UpdatedAt = now, now
	req.ServiceNotice = fmt.Sprintf("Received by the case desk; handled by %s.", orDefault(svc.Agency, "the responsible department"))
	if svc.Type == TypeBatch {
		req.Token = randomToken()
		req.ResolvesAt = now.Add(d.cfg.TokenDelay)
	}
	if err := d.st.put(bucketRequests, req.ID, &req, seq); err != nil {
		d.mu.Unlock()
		d.log.Error("storing a request", "error", err)
		d.apiError(w, r, http.StatusInternalServerError, "storing the request failed")
		return
	}
	d.setSeq(seq)
	d.requests[req.ID] = &req
	if req.Token != "" {
		d.tokens[req.Token] = req.ID
	}
	d.mu.Unlock()
	d.log.Info("service request received", "service_request_id", req.ID, "service_code", code,
		"case_key", req.CaseKey(), "type", svc.Type)

	switch svc.Type {
	case TypeBatch:
		d.respond(w, r, http.StatusOK, []map[string]string{{"token": req.Token}})
	case TypeBlackbox:
		d.respond(w, r, http.StatusOK, []struct{}{})
	default:
		d.respond(w, r, http.StatusOK, []map[string]any{{"service_request_id": req.ID,
			"service_notice": req.ServiceNotice, "account_id": nil}})
	}
}

// openForAnomaly returns the open request about anomaly key in jurisdiction
// j, or nil: the desk keeps at most one open request per anomaly_key, like
// a unique index. Called with d.mu held.
func (d *Desk) openForAnomaly(key, j string) *Request {
	if key == "" {
		return nil
	}
	var found *Request
	for _, r := range d.requests {
		if r.Status == "open" && r.Jurisdiction == j && r.AnomalyKey() == key && (found == nil || cmpID(r.ID, found.ID) < 0) {
			found = r
		}
	}
	return found
}

// mergeOpen answers a POST for an anomaly that already has an open request
// with that request, as a successful Open311 answer:
//
//	200 [{"service_request_id":"1001","service_notice":"…","account_id":null,
//	      "duplicate":true,"case_key":"<the open request's case_key>"}]
//
// A client that does not know the extra fields takes the existing request
// for its own (which it is: the same anomaly). The new case key is
// recorded in the request's merged_case_keys. Called with d.mu held;
// unlocks it.
func (d *Desk) mergeOpen(w http.ResponseWriter, r *http.Request, open *Request, caseKey string) {
	c := cloneRequest(open)
	if caseKey != "" && caseKey != c.CaseKey() && !slices.Contains(c.Merged, caseKey) {
		c.Merged = append(c.Merged, caseKey)
		if err := d.st.put(bucketRequests, c.ID, &c); err != nil {
			d.mu.Unlock()
			d.log.Error("storing a merged open", "error", err)
			d.apiError(w, r, http.StatusInternalServerError, "storing the request failed")
			return
		}
		stored := c
		d.requests[c.ID] = &stored // a new value: the handler that created the request may still read the old one
	}
	d.mu.Unlock()
	d.log.Info("open for an anomaly that has an open request answered with it", "service_request_id", c.ID,
		"anomaly_key", c.AnomalyKey(), "case_key", caseKey, "open_case_key", c.CaseKey())
	notice := fmt.Sprintf("An open request for this anomaly exists: %s; this report was merged into it.", c.ID)
	switch {
	case c.ServiceType == TypeBlackbox:
		d.respond(w, r, http.StatusOK, []struct{}{})
	case !d.visible(&c, d.cfg.Now()):
		d.respond(w, r, http.StatusOK, []map[string]any{{"token": c.Token, "duplicate": true, "case_key": c.CaseKey()}})
	default:
		type merged struct {
			ID        string  `json:"service_request_id"`
			Notice    string  `json:"service_notice"`
			AccountID *string `json:"account_id"`
			Duplicate bool    `json:"duplicate"`
			CaseKey   string  `json:"case_key"`
		}
		d.respond(w, r, http.StatusOK, []merged{{ID: c.ID, Notice: notice, Duplicate: true, CaseKey: c.CaseKey()}})
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// readForm parses an application/x-www-form-urlencoded body.
func (d *Desk) readForm(w http.ResponseWriter, r *http.Request) (url.Values, bool) {
	ct := r.Header.Get("Content-Type")
	if mt, _, _ := strings.Cut(ct, ";"); !strings.EqualFold(strings.TrimSpace(mt), "application/x-www-form-urlencoded") {
		d.apiError(w, r, http.StatusBadRequest, "body must be application/x-www-form-urlencoded, not %q", ct)
		return nil, false
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		d.apiError(w, r, http.StatusBadRequest, "reading the form: %v", err)
		return nil, false
	}
	return r.PostForm, true
}

// apiRequest is a request as GET /requests.json shows it.
type apiRequest struct {
	ID                string              `json:"service_request_id"`
	Status            string              `json:"status"`
	StatusNotes       *string             `json:"status_notes"`
	ServiceName       string              `json:"service_name"`
	ServiceCode       string              `json:"service_code"`
	Description       string              `json:"description"`
	AgencyResponsible string              `json:"agency_responsible"`
	ServiceNotice     string              `json:"service_notice"`
	RequestedDatetime string              `json:"requested_datetime"`
	UpdatedDatetime   string              `json:"updated_datetime"`
	ExpectedDatetime  *string             `json:"expected_datetime"`
	Address           string              `json:"address"`
	AddressID         string              `json:"address_id"`
	Zipcode           *string             `json:"zipcode"`
	Lat               *float64            `json:"lat"`
	Long              *float64            `json:"long"`
	MediaURL          string              `json:"media_url"`
	Attributes        map[string][]string `json:"attributes,omitempty"`
}

func toAPI(r *Request) apiRequest {
	a := apiRequest{ID: r.ID, Status: r.Status, ServiceName: r.ServiceName, ServiceCode: r.ServiceCode,
		Description: r.Description, AgencyResponsible: r.AgencyResponsible, ServiceNotice: r.ServiceNotice,
		RequestedDatetime: r.RequestedAt.Format(time.RFC3339), UpdatedDatetime: r.UpdatedAt.Format(time.RFC3339),
		Address: r.Address, AddressID: r.AddressID, Lat: r.Lat, Long: r.Long, MediaURL: r.MediaURL, Attributes: r.Attributes}
	if r.StatusNotes != "" {
		n := r.StatusNotes
		a.StatusNotes = &n
	}
	return a
}

// visible reports whether a request can be seen by id (a batch request only
// once its token has resolved).
func (d *Desk) visible(r *Request, now time.Time) bool {
	return r.ResolvesAt.IsZero() || !now.Before(r.ResolvesAt)
}

// Limits of GET /requests.json.
const (
	defaultWindow = 90 * 24 * time.Hour
	maxResults    = 1000
)

// GET /requests.json
func (d *Desk) handleGetRequests(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !d.checkJurisdiction(w, r, q.Get("jurisdiction_id")) {
		return
	}
	now := d.cfg.Now()
	ids := splitList(q.Get("service_request_id"))
	codes := splitList(q.Get("service_code"))
	statuses := splitList(strings.ToLower(q.Get("status")))
	for _, s := range statuses {
		if s != "open" && s != "closed" {
			d.apiError(w, r, http.StatusBadRequest, "status %q is not open or closed", s)
			return
		}
	}
	start, end, err := dateRange(q)
	if err != nil {
		d.apiError(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	// The spec: without dates, the last 90 days; with one date, 90 days from
	// or up to it. (service_request_id overrides every other filter.)
	switch {
	case start.IsZero() && end.IsZero():
		end, start = now, now.Add(-defaultWindow)
	case start.IsZero():
		start = end.Add(-defaultWindow)
	case end.IsZero():
		end = start.Add(defaultWindow)
	}
	if end.Before(start) {
		d.apiError(w, r, http.StatusBadRequest, "end_date is before start_date")
		return
	}
	d.mu.Lock()
	var list []*Request
	for _, req := range d.requests {
		if !d.visible(req, now) {
			continue
		}
		if len(ids) > 0 {
			if slices.Contains(ids, req.ID) {
				list = append(list, req)
			}
			continue
		}
		if len(codes) > 0 && !slices.Contains(codes, req.ServiceCode) {
			continue
		}
		if len(statuses) > 0 && !slices.Contains(statuses, req.Status) {
			continue
		}
		if req.RequestedAt.Before(start.Truncate(time.Second)) || req.RequestedAt.After(end) {
			continue
		}
		list = append(list, req)
	}
	slices.SortFunc(list, func(a, b *Request) int { // newest first
		if c := b.RequestedAt.Compare(a.RequestedAt); c != 0 {
			return c
		}
		return cmpID(b.ID, a.ID)
	})
	if len(list) > maxResults {
		list = list[:maxResults]
	}
	out := make([]apiRequest, len(list))
	for i, req := range list {
		out[i] = toAPI(req)
	}
	d.mu.Unlock()
	d.respond(w, r, http.StatusOK, out)
}

// GET /requests/{id}.json
func (d *Desk) handleGetRequest(w http.ResponseWriter, r *http.Request) {
	if !d.checkJurisdiction(w, r, r.URL.Query().Get("jurisdiction_id")) {
		return
	}
	id, ok := jsonSuffix(r.PathValue("file"))
	if !ok {
		d.apiError(w, r, http.StatusNotFound, "only the JSON format (.json) is served")
		return
	}
	d.mu.Lock()
	req, found := d.requests[id]
	if found && !d.visible(req, d.cfg.Now()) {
		found = false
	}
	var out []apiRequest
	if found {
		out = []apiRequest{toAPI(req)}
	}
	d.mu.Unlock()
	if !found {
		d.apiError(w, r, http.StatusNotFound, "unknown service_request_id %q", id)
		return
	}
	d.respond(w, r, http.StatusOK, out)
}

// GET /tokens/{token}.json
func (d *Desk) handleToken(w http.ResponseWriter, r *http.Request) {
	tok, ok := jsonSuffix(r.PathValue("file"))
	if !ok {
		d.apiError(w, r, http.StatusNotFound, "only the JSON format (.json) is served")
		return
	}
	d.mu.Lock()
	id, found := d.tokens[tok]
	var resolved bool
	if found {
		resolved = d.visible(d.requests[id], d.cfg.Now())
	}
	d.mu.Unlock()
	if !found {
		d.apiError(w, r, http.StatusNotFound, "unknown token %q", tok)
		return
	}
	var idv any // null until the token resolves
	if resolved {
		idv = id
	}
	d.respond(w, r, http.StatusOK, []map[string]any{{"service_request_id": idv, "token": tok}})
}

// POST /servicerequestupdates.json (mySociety extension)
func (d *Desk) handlePostUpdate(w http.ResponseWriter, r *http.Request) {
	form, ok := d.readForm(w, r)
	if !ok {
		return
	}
	get := form.Get
	if !d.validKey(get("api_key")) {
		d.apiError(w, r, http.StatusForbidden, "missing or invalid api_key")
		return
	}
	if !d.checkJurisdiction(w, r, get("jurisdiction_id")) {
		return
	}
	for _, f := range []string{"service_request_id", "update_id", "status", "updated_datetime", "description"} {
		if get(f) == "" {
			d.apiError(w, r, http.StatusBadRequest, "%s is required", f)
			return
		}
	}
	status := get("status")
	if !slices.Contains(updateStatuses, status) {
		d.apiError(w, r, http.StatusBadRequest, "status %q is not one of %s", status, strings.Join(updateStatuses, " "))
		return
	}
	at, err := parseTime(get("updated_datetime"))
	if err != nil {
		d.apiError(w, r, http.StatusBadRequest, "updated_datetime: %v", err)
		return
	}
	desc := get("description")
	if n := utf8.RuneCountInString(desc); n > MaxDescription {
		d.apiError(w, r, http.StatusBadRequest, "description is %d characters, more than %d", n, MaxDescription)
		return
	}
	if !utf8.ValidString(desc) {
		d.apiError(w, r, http.StatusBadRequest, "description is not valid UTF-8")
		return
	}
	rid, cid := get("service_request_id"), get("update_id")

	d.mu.Lock()
	req, found := d.requests[rid]
	if !found || !d.visible(req, d.cfg.Now()) {
		d.mu.Unlock()
		d.apiError(w, r, http.StatusNotFound, "unknown service_request_id %q", rid)
		return
	}
	if owner, dup := d.clientUpdates[cid]; dup {
		d.mu.Unlock()
		if owner != rid {
			d.apiError(w, r, http.StatusBadRequest, "update_id %q was already used for service request %s", cid, owner)
			return
		}
		d.log.Info("duplicate update acknowledged", "service_request_id", rid, "update_id", cid)
		d.respond(w, r, http.StatusOK, []map[string]string{{"update_id": cid}})
		return
	}
	if strings.HasPrefix(cid, "desk-") {
		d.mu.Unlock()
		d.apiError(w, r, http.StatusBadRequest, "update_id %q: the desk- prefix is reserved for the desk's own updates", cid)
		return
	}
	now := d.cfg.Now().UTC()
	u := Update{ID: cid, RequestID: rid, Status: status, UpdatedAt: at,
		ReceivedAt: now, Description: desc, MediaURL: get("media_url"), ExternalStatusCode: get("external_status_code"), Source: "client"}
	c := cloneRequest(req)
	c.Updates = append(c.Updates, u)
	wasClosed := c.Status == "closed"
	applyStatus(&c, status, desc)
	c.UpdatedAt = now.Truncate(time.Second)
	if err := d.st.put(bucketRequests, rid, &c); err != nil {
		d.mu.Unlock()
		d.log.Error("storing an update", "error", err)
		d.apiError(w, r, http.StatusInternalServerError, "storing the update failed")
		return
	}
	*req = c
	d.clientUpdates[cid] = rid
	d.mu.Unlock()
	d.log.Info("update received", "service_request_id", rid, "update_id", cid,
		"status", status, "on_closed_request", wasClosed)
	d.respond(w, r, http.StatusOK, []map[string]string{{"update_id": u.ID}})
}

// apiUpdate is an update as GET /servicerequestupdates.json shows it.
type apiUpdate struct {
	UpdateID           string `json:"update_id"`
	ServiceRequestID   string `json:"service_request_id"`
	Status             string `json:"status"`
	UpdatedDatetime    string `json:"updated_datetime"`
	Description        string `json:"description"`
	MediaURL           string `json:"media_url"`
	ExternalStatusCode string `json:"external_status_code,omitempty"`
	Source             string `json:"source"`
}

// GET /servicerequestupdates.json
func (d *Desk) handleGetUpdates(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !d.checkJurisdiction(w, r, q.Get("jurisdiction_id")) {
		return
	}
	start, end, err := dateRange(q)
	if err != nil {
		d.apiError(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	if start.IsZero() {
		start = d.cfg.Now().Add(-defaultWindow)
	}
	if !end.IsZero() && end.Before(start) {
		d.apiError(w, r, http.StatusBadRequest, "end_date is before start_date")
		return
	}
	ids := splitList(q.Get("service_request_id"))
	var list []Update
	d.mu.Lock()
	for _, req := range d.requests {
		if len(ids) > 0 && !slices.Contains(ids, req.ID) {
			continue
		}
		for _, u := range req.Updates {
			if u.UpdatedAt.Before(start) || !end.IsZero() && u.UpdatedAt.After(end) {
				continue
			}
			list = append(list, u)
		}
	}
	d.mu.Unlock()
	slices.SortFunc(list, func(a, b Update) int {
		if c := a.UpdatedAt.Compare(b.UpdatedAt); c != 0 {
			return c
		}
		return cmpID(a.ID, b.ID)
	})
	out := make([]apiUpdate, len(list))
	for i, u := range list {
		out[i] = apiUpdate{UpdateID: u.ID, ServiceRequestID: u.RequestID, Status: strings.ToLower(u.Status),
			UpdatedDatetime: u.UpdatedAt.Format(time.RFC3339), Description: u.Description, MediaURL: u.MediaURL,
			ExternalStatusCode: u.ExternalStatusCode, Source: u.Source}
	}
	d.respond(w, r, http.StatusOK, out)
}

// dateRange reads the optional start_date and end_date query parameters
// that the requests and updates listings share.
func dateRange(q url.Values) (start, end time.Time, err error) {
	if v := q.Get("start_date"); v != "" {
		if start, err = parseTime(v); err != nil {
			return start, end, fmt.Errorf("start_date: %v", err)
		}
	}
	if v := q.Get("end_date"); v != "" {
		if end, err = parseTime(v); err != nil {
			return start, end, fmt.Errorf("end_date: %v", err)
		}
	}
	return start, end, nil
}
