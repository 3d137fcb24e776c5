package caseclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// clockSkew widens reconciliation lookups' date ranges: the case system
// dates records by its own clock.
const clockSkew = time.Hour

// open311Sink speaks Open311 GeoReport v2 with the mySociety
// servicerequestupdates extension.
type open311Sink struct {
	cfg   SinkConfig
	codes *CodeTable
	hc    *http.Client
	now   func() time.Time
}

// request is an Open311 service request record (GET /requests.json).
type request struct {
	ID          idString `json:"service_request_id"`
	Status      string   `json:"status"`
	StatusNotes string   `json:"status_notes"`
	ServiceCode string   `json:"service_code"`
	Description string   `json:"description"`
	Requested   string   `json:"requested_datetime"`
	Updated     string   `json:"updated_datetime"`
	Lat         float64  `json:"lat"`
	Long        float64  `json:"long"`
	// Attributes, when the case system echoes them (not in the spec):
	// "code": "v" or "code": ["v", ...].
	Attributes map[string]json.RawMessage `json:"attributes"`
}

// hasCaseKey reports whether the record carries the case key, in its
// case_key attribute or as the tag in its description.
func (r *request) hasCaseKey(key string) bool {
	if strings.Contains(r.Description, keyTag(key)) {
		return true
	}
	raw, ok := r.Attributes["case_key"]
	if !ok {
		return false
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return one == key
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil {
		for _, v := range many {
			if v == key {
				return true
			}
		}
	}
	return false
}

// attr returns the first value of an attribute the case system echoed.
func (r *request) attr(code string) string {
	raw, ok := r.Attributes[code]
	if !ok {
		return ""
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return one
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil && len(many) > 0 {
		return many[0]
	}
	return ""
}

// hasAnomaly reports whether the record is about the anomaly: its
// anomaly_key attribute or the tag in its description.
func (r *request) hasAnomaly(key string) bool {
	return r.attr("anomaly_key") == key || strings.Contains(r.Description, anomalyTag(key))
}

// caseKeyOf returns the case key a record carries (attribute, else the
// description's tag), or "".
func (r *request) caseKeyOf() string {
	if k := r.attr("case_key"); k != "" {
		return k
	}
	if rest, ok := strings.CutPrefix(r.Description, "[case "); ok {
		if k, _, ok := strings.Cut(rest, "]"); ok {
			return k
		}
	}
	return ""
}

// idString reads an id the case system may send as a string or a number.
type idString string

func (s *idString) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case string:
		*s = idString(v)
	case float64:
		*s = idString(strconv.FormatFloat(v, 'f', -1, 64))
	case nil:
		*s = ""
	default:
		return fmt.Errorf("id: unexpected JSON %s", b)
	}
	return nil
}

func (o *open311Sink) url(path string, q url.Values) string {
	u := strings.TrimRight(o.cfg.URL, "/") + path
	if o.cfg.Jurisdiction != "" {
		if q == nil {
			q = url.Values{}
		}
		q.Set("jurisdiction_id", o.cfg.Jurisdiction)
	}
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

func (o *open311Sink) serviceCode(service string) string {
	if s := o.codes.Service(service); s != nil {
		return s.ServiceCode(o.cfg.Name)
	}
	return ""
}

// form builds the POST /requests.json body of an open operation.
func (o *open311Sink) form(c *Case) url.Values {
	f := url.Values{}
	f.Set("api_key", string(o.cfg.APIKey))
	if o.cfg.Jurisdiction != "" {
		f.Set("jurisdiction_id", o.cfg.Jurisdiction)
	}
	f.Set("service_code", o.serviceCode(c.Service))
	f.Set("lat", strconv.FormatFloat(c.Lat, 'f', 7, 64))
	f.Set("long", strconv.FormatFloat(c.Lon, 'f', 7, 64))
	f.Set("description", c.Text())
	if len(c.Assets) > 0 {
		f.Set("device_id", c.Assets[0])
	}
	attr := func(k, v string) {
		if v != "" {
			f.Set("attribute["+k+"]", v)
		}
	}
	attr("case_key", c.Key)
	attr("anomaly_key", c.AnomalyKey)
	attr("episode_id", c.EpisodeID)
	attr("case_type", c.Type)
	attr("major_class", c.Major)
	attr("sub_class", c.Sub)
	attr("component_code", c.ComponentCode)
	attr("grid", c.Grid)
	attr("district", c.District)
	attr("severity", c.Severity)
	attr("rule", c.Rule)
	attr("first_seen", c.FirstSeen.Format(time.RFC3339))
	attr("deadline", c.Deadline)
	attr("department", c.Department)
	attr("reopens", c.Reopens)
	attr("telemetry_url", c.Telemetry)
	return f
}

func (o *open311Sink) post(ctx context.Context, path string, form url.Values) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.url(path, nil), strings.NewReader(form.Encode()))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Accept", "application/json")
	return do(o.hc, req)
}

func (o *open311Sink) get(ctx context.Context, path string, q url.Values, v any) result {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.url(path, q), nil)
	if err != nil {
		return result{permanent: true, reason: "request", msg: err.Error()}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	resp, body, err := do(o.hc, req)
	if err != nil {
		r := transportFailure(err)
		r.ambiguous = false
		return r
	}
	if resp.StatusCode != http.StatusOK {
		r := statusFailure(resp, body, o.now())
		r.ambiguous = false
		return r
	}
	if err := json.Unmarshal(body, v); err != nil {
		return result{reason: "bad_response", msg: fmt.Sprintf("decoding %s: %v", path, err)}
	}
	return result{ok: true}
}

func (o *open311Sink) deliver(ctx context.Context, op *op, sc *sinkCase) result {
	switch op.Kind {
	case opOpen:
		return o.open(ctx, op)
	default:
		return o.update(ctx, op, sc)
	}
}

// open posts a new request; after an ambiguous attempt it first looks the
// request up by its case key so that a timeout never makes a duplicate.
func (o *open311Sink) open(ctx context.Context, op *op) result {
	c := op.Case
	if op.Ambiguous {
		id, r := o.find(ctx, c, op.Enqueued)
		if !r.ok {
			r.reason = "reconcile_" + r.reason
			return r
		}
		if id != "" {
			return result{ok: true, id: id, reason: "reconciled"}
		}
	}
	if c.AnomalyKey != "" {
		// Replicas: another replica may have opened a case for this
		// anomaly (from an episode of its own); attach to it.
		id, key, r := o.findOpenAnomaly(ctx, c)
		if !r.ok {
			r.reason = "lookup_" + r.reason
			return r
		}
		if id != "" {
			return result{ok: true, id: id, attached: key, reason: "attached_lookup"}
		}
	}
	resp, body, err := o.post(ctx, "/requests.json", o.form(c))
	if err != nil {
		return transportFailure(err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return statusFailure(resp, body, o.now())
	}
	var out []struct {
		ID    idString `json:"service_request_id"`
		Token idString `json:"token"`
		// A case system that keeps one open case per anomaly answers a
		// second open with the existing case: duplicate true and its
		// case_key (see README.md, "Exactly once across replicas").
		Duplicate bool   `json:"duplicate"`
		CaseKey   string `json:"case_key"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		// Accepted, but we cannot read the answer: look it up next time.
		return result{reason: "bad_response", msg: fmt.Sprintf("decoding the POST answer: %v", err), ambiguous: true}
	}
	r := result{ok: true, reason: "ok"}
	if len(out) > 0 {
		r.id, r.token = string(out[0].ID), string(out[0].Token)
		switch {
		case out[0].Duplicate && out[0].CaseKey != "" && out[0].CaseKey != c.Key:
			r.attached, r.reason = out[0].CaseKey, "attached_desk"
		case out[0].Duplicate:
			r.reason = "reconciled" // our own case, posted before
		case c.AnomalyKey != "" && r.id != "":
			// Replicas against a case system that may not keep one open
			// case per anomaly: look whether another replica's case
			// raced ours, to count the duplicate (it cannot be undone).
			r.duplicate, r.msg = o.raced(ctx, c, r.id)
		}
	}
	return r
}

// raced reports whether an open request about c's anomaly other than id
// exists that came first (a lower id, compared as numbers when both are),
// and names it; a failed lookup reports nothing.
func (o *open311Sink) raced(ctx context.Context, c *Case, id string) (bool, string) {
	q := url.Values{}
	q.Set("service_code", o.serviceCode(c.Service))
	q.Set("status", "open")
	var reqs []request
	if r := o.get(ctx, "/requests.json", q, &reqs); !r.ok {
		return false, ""
	}
	for _, rq := range reqs {
		if other := string(rq.ID); other != id && rq.Status == "open" && rq.hasAnomaly(c.AnomalyKey) && idLess(other, id) {
			return true, other
		}
	}
	return false, ""
}

// idLess orders request ids: as numbers when both are, else as text.
func idLess(a, b string) bool {
	x, errA := strconv.ParseUint(a, 10, 64)
	y, errB := strconv.ParseUint(b, 10, 64)
	if errA == nil && errB == nil {
		return x < y
	}
	return a < b
}

// findOpenAnomaly looks for an open request about the anomaly of case c
// (any episode, any replica) and returns its id and case key. Open cases
// may be old, so the search spans the case system's default window (the
// spec's 90 days).
func (o *open311Sink) findOpenAnomaly(ctx context.Context, c *Case) (id, key string, r result) {
	q := url.Values{}
	q.Set("service_code", o.serviceCode(c.Service))
	q.Set("status", "open")
	var reqs []request
	if r := o.get(ctx, "/requests.json", q, &reqs); !r.ok {
		return "", "", r
	}
	for _, rq := range reqs {
		if rq.Status == "open" && rq.ID != "" && rq.hasAnomaly(c.AnomalyKey) {
			return string(rq.ID), rq.caseKeyOf(), result{ok: true}
		}
	}
	return "", "", result{ok: true}
}

// find looks for the request of case c at the case system: requests of its
// service code since shortly before the op was queued, whose description
// carries the case key.
func (o *open311Sink) find(ctx context.Context, c *Case, since time.Time) (string, result) {
	q := url.Values{}
	q.Set("service_code", o.serviceCode(c.Service))
	q.Set("start_date", since.Add(-clockSkew).UTC().Format(time.RFC3339))
	q.Set("end_date", o.now().Add(clockSkew).UTC().Format(time.RFC3339))
	var reqs []request
	if r := o.get(ctx, "/requests.json", q, &reqs); !r.ok {
		return "", r
	}
	for _, rq := range reqs {
		if rq.hasCaseKey(c.Key) {
			return string(rq.ID), result{ok: true}
		}
	}
	return "", result{ok: true}
}

// update posts a mySociety servicerequestupdate. The case must have a
// service_request_id; after an ambiguous attempt the updates are read back
// first (update_id is the op's stable key).
func (o *open311Sink) update(ctx context.Context, op *op, sc *sinkCase) result {
	if sc == nil || sc.ID == "" {
		return result{reason: "no_request_id", msg: "the case system has not given the case an id yet"}
	}
	if op.Ambiguous {
		// The case system files an update under its updated_datetime (the
		// op's time), which may differ from when it was queued.
		from, to := op.Enqueued, o.now()
		if op.At.Before(from) {
			from = op.At
		}
		if op.At.After(to) {
			to = op.At
		}
		q := url.Values{}
		q.Set("start_date", from.Add(-clockSkew).UTC().Format(time.RFC3339))
		q.Set("end_date", to.Add(clockSkew).UTC().Format(time.RFC3339))
		var ups []struct {
			UpdateID idString `json:"update_id"`
		}
		if r := o.get(ctx, "/servicerequestupdates.json", q, &ups); !r.ok {
			r.reason = "reconcile_" + r.reason
			return r
		}
		for _, u := range ups {
			if string(u.UpdateID) == sc.opID(op) {
				return result{ok: true, reason: "reconciled"}
			}
		}
	}
	f := url.Values{}
	f.Set("api_key", string(o.cfg.APIKey))
	if o.cfg.Jurisdiction != "" {
		f.Set("jurisdiction_id", o.cfg.Jurisdiction)
	}
	f.Set("service_request_id", sc.ID)
	f.Set("update_id", sc.opID(op))
	f.Set("status", "OPEN") // the gateway never closes a case: verification is the case system's
	f.Set("updated_datetime", op.At.UTC().Format(time.RFC3339))
	f.Set("description", truncate(keyTag(sc.target())+" "+op.Text, maxDescription))
	resp, body, err := o.post(ctx, "/servicerequestupdates.json", f)
	if err != nil {
		return transportFailure(err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return statusFailure(resp, body, o.now())
	}
	return result{ok: true, reason: "ok"}
}

// resolveToken reads a batch token's service_request_id ("" while pending).
func (o *open311Sink) resolveToken(ctx context.Context, token string) (string, result) {
	var out []struct {
		ID    idString `json:"service_request_id"`
		Token idString `json:"token"`
	}
	if r := o.get(ctx, "/tokens/"+url.PathEscape(token)+".json", nil, &out); !r.ok {
		return "", r
	}
	if len(out) == 0 {
		return "", result{ok: true}
	}
	return string(out[0].ID), result{ok: true}
}

// status reads a request's status record.
func (o *open311Sink) status(ctx context.Context, id string) (*request, result) {
	var raw json.RawMessage
	if r := o.get(ctx, "/requests/"+url.PathEscape(id)+".json", nil, &raw); !r.ok {
		return nil, r
	}
	var list []request
	if err := json.Unmarshal(raw, &list); err != nil || len(list) == 0 {
		var one request
		if err2 := json.Unmarshal(raw, &one); err2 != nil {
			return nil, result{reason: "bad_response", msg: "decoding the request status"}
		}
		return &one, result{ok: true}
	}
	return &list[0], result{ok: true}
}
