package casedesk

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config configures a Desk.
type Config struct {
	Dir              string        // persistence directory (holds casedesk.db, a bbolt file)
	APIKeys          []string      // accepted Open311 api_key values; at least one
	WebhookSecrets   []string      // "whsec_<base64>" secrets accepted for webhook signatures (several during rotation)
	WebhookTolerance time.Duration // webhook-timestamp tolerance either side of now; default 5m
	Services         []Service     // the services list; empty: DefaultServices()
	Jurisdiction     string        // optional jurisdiction_id; when set, another jurisdiction_id is 404
	Now              func() time.Time
	TokenDelay       time.Duration // batch services: how long a token takes to resolve to an id; default 2s
}

// Request is a service request received over Open311, with everything the
// client sent and the updates it received.
type Request struct {
	ID                string              `json:"service_request_id"`
	Token             string              `json:"token,omitempty"`
	Jurisdiction      string              `json:"jurisdiction_id,omitempty"`
	ServiceCode       string              `json:"service_code"`
	ServiceName       string              `json:"service_name"`
	ServiceType       string              `json:"service_type"`
	Status            string              `json:"status"` // open | closed
	StatusNotes       string              `json:"status_notes,omitempty"`
	Description       string              `json:"description,omitempty"`
	AgencyResponsible string              `json:"agency_responsible,omitempty"`
	ServiceNotice     string              `json:"service_notice,omitempty"`
	Lat               *float64            `json:"lat,omitempty"`
	Long              *float64            `json:"long,omitempty"`
	Address           string              `json:"address_string,omitempty"`
	AddressID         string              `json:"address_id,omitempty"`
	DeviceID          string              `json:"device_id,omitempty"`
	AccountID         string              `json:"account_id,omitempty"`
	MediaURL          string              `json:"media_url,omitempty"`
	Email             string              `json:"email,omitempty"`
	FirstName         string              `json:"first_name,omitempty"`
	LastName          string              `json:"last_name,omitempty"`
	Phone             string              `json:"phone,omitempty"`
	Attributes        map[string][]string `json:"attributes,omitempty"`
	RequestedAt       time.Time           `json:"requested_datetime"`
	UpdatedAt         time.Time           `json:"updated_datetime"`
	ResolvesAt        time.Time           `json:"resolves_at,omitzero"` // batch: when the token resolves to the id
	Updates           []Update            `json:"updates,omitempty"`
	// Merged lists the case keys of later opens for the same anomaly that
	// the desk answered with this request instead of opening another
	// (at most one open request per anomaly_key).
	Merged []string `json:"merged_case_keys,omitempty"`
}

// AnomalyKey returns the request's anomaly_key attribute, or "".
func (r *Request) AnomalyKey() string {
	if v := r.Attributes[AttrAnomalyKey]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// CaseKey returns the request's case_key attribute, or "".
func (r *Request) CaseKey() string {
	if v := r.Attributes[AttrCaseKey]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Update is one servicerequestupdates entry on a request: posted by the
// client (Source "client") or made by the desk itself when it closes a
// request (Source "desk").
type Update struct {
	ID                 string    `json:"update_id"` // the client's update_id (the dedup key), or "desk-N" for the desk's own
	RequestID          string    `json:"service_request_id"`
	Status             string    `json:"status"` // upper case, as posted
	UpdatedAt          time.Time `json:"updated_datetime"`
	ReceivedAt         time.Time `json:"received_datetime"`
	Description        string    `json:"description"`
	MediaURL           string    `json:"media_url,omitempty"`
	ExternalStatusCode string    `json:"external_status_code,omitempty"`
	Source             string    `json:"source"` // client | desk
}

// Update statuses of the mySociety extension (upper case on POST).
var updateStatuses = []string{"OPEN", "CLOSED", "FIXED", "IN_PROGRESS", "PLANNED", "ACTION_SCHEDULED",
	"INVESTIGATING", "DUPLICATE", "NOT_COUNCILS_RESPONSIBILITY", "NO_FURTHER_ACTION",
	"INTERNAL_REFERRAL", "CANCELLED", "REOPEN", "FOR_TRIAGE"}

// closingStatuses close an open request; REOPEN reopens a closed one; the
// others leave the request's status alone.
var closingStatuses = []string{"CLOSED", "FIXED", "DUPLICATE", "NOT_COUNCILS_RESPONSIBILITY",
	"NO_FURTHER_ACTION", "INTERNAL_REFERRAL", "CANCELLED"}

// Desk is the case desk server. Its methods are safe for concurrent use.
type Desk struct {
	cfg      Config
	log      *slog.Logger
	st       *store
	services []Service
	byCode   map[string]*Service
	secrets  [][]byte
	mux      *http.ServeMux

	mu            sync.Mutex
	requests      map[string]*Request
	tokens        map[string]string // token → request id
	clientUpdates map[string]string // client update_id → service_request_id
	webhooks      map[string]*WebhookDelivery
	idem          map[string]*idemRecord
	seq           map[string]uint64 // counters, as persisted
	fault         Fault
	faultUsed     int
}

// nextSeq returns the next value of a counter; the caller persists it with
// its put and then calls setSeq.
func (d *Desk) nextSeq(key []byte) counter { return counter{key, d.seq[string(key)] + 1} }

func (d *Desk) setSeq(c counter) { d.seq[string(c.key)] = c.n }

// New opens (or creates) the desk's store in cfg.Dir and loads what it holds.
func New(cfg Config, log *slog.Logger) (*Desk, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.APIKeys) == 0 || slices.Contains(cfg.APIKeys, "") {
		return nil, errors.New("casedesk: at least one non-empty API key is required")
	}
	if cfg.WebhookTolerance <= 0 {
		cfg.WebhookTolerance = 5 * time.Minute
	}
	if cfg.TokenDelay <= 0 {
		cfg.TokenDelay = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.Services) == 0 {
		cfg.Services = DefaultServices()
	}
	if err := checkServices(cfg.Services); err != nil {
		return nil, fmt.Errorf("casedesk: services: %w", err)
	}
	d := &Desk{cfg: cfg, log: log, services: slices.Clone(cfg.Services), byCode: map[string]*Service{}}
	for i := range d.services {
		d.byCode[d.services[i].Code] = &d.services[i]
	}
	for i, s := range cfg.WebhookSecrets {
		key, err := ParseSecret(s)
		if err != nil {
			return nil, fmt.Errorf("casedesk: webhook secret %d: %w", i+1, err)
		}
		d.secrets = append(d.secrets, key)
	}
	st, err := openStore(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("casedesk: %w", err)
	}
	d.st = st
	if err := d.load(); err != nil {
		st.close()
		return nil, fmt.Errorf("casedesk: %w", err)
	}
	d.mux = d.routes()
	log.Info("case desk opened", "dir", cfg.Dir, "requests", len(d.requests), "webhooks", len(d.webhooks),
		"services", len(d.services), "webhook_secrets", len(d.secrets))
	return d, nil
}

// ParseSecret decodes a Standard Webhooks secret "whsec_<base64 key>".
func ParseSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(strings.TrimSpace(s), "whsec_")
	if !ok {
		return nil, errors.New(`secret does not start with "whsec_"`)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("secret is not whsec_ + base64: %w", err)
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, fmt.Errorf("secret key is %d bytes; Standard Webhooks wants 24 to 64", len(key))
	}
	return key, nil
}

func (d *Desk) load() error {
	d.requests, d.tokens, d.clientUpdates = map[string]*Request{}, map[string]string{}, map[string]string{}
	d.webhooks, d.idem = map[string]*WebhookDelivery{}, map[string]*idemRecord{}
	d.seq = map[string]uint64{}
	for _, k := range [][]byte{keyRequestSeq, keyUpdateSeq, keyWebhookSeq} {
		d.seq[string(k)] = d.st.counter(k)
	}
	err := d.st.each(bucketRequests, func(k string, data []byte) error {
		var r Request
		if err := json.Unmarshal(data, &r); err != nil {
			return err
		}
		d.requests[r.ID] = &r
		if r.Token != "" {
			d.tokens[r.Token] = r.ID
		}
		for _, u := range r.Updates {
			if u.Source == "client" {
				d.clientUpdates[u.ID] = r.ID
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = d.st.each(bucketWebhooks, func(k string, data []byte) error {
		var w WebhookDelivery
		if err := json.Unmarshal(data, &w); err != nil {
			return err
		}
		d.webhooks[w.ID] = &w
		return nil
	})
	if err != nil {
		return err
	}
	return d.st.each(bucketIdem, func(k string, data []byte) error {
		var rec idemRecord
		if err := json.Unmarshal(data, &rec); err != nil {
			return err
		}
		d.idem[k] = &rec
		return nil
	})
}

// Handler serves everything: the Open311 API, the webhook receiver, the HTML
// pages and the control API.
func (d *Desk) Handler() http.Handler { return d.mux }

// Close closes the store. The handler must no longer be serving.
func (d *Desk) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.st == nil {
		return nil
	}
	err := d.st.close()
	d.st = nil
	return err
}

// Requests returns a copy of every received service request, oldest first.
func (d *Desk) Requests() []Request {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Request, 0, len(d.requests))
	for _, r := range d.requests {
		out = append(out, cloneRequest(r))
	}
	slices.SortFunc(out, func(a, b Request) int { return cmpID(a.ID, b.ID) })
	return out
}

// Request returns one request by its service_request_id.
func (d *Desk) Request(id string) (Request, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.requests[id]
	if !ok {
		return Request{}, false
	}
	return cloneRequest(r), true
}

func cloneRequest(r *Request) Request {
	c := *r
	c.Updates = slices.Clone(r.Updates)
	c.Merged = slices.Clone(r.Merged)
	if r.Attributes != nil {
		c.Attributes = make(map[string][]string, len(r.Attributes))
		for k, v := range r.Attributes {
			c.Attributes[k] = slices.Clone(v)
		}
	}
	return c
}

// cmpID orders numeric ids numerically, then anything else as text.
func cmpID(a, b string) int {
	ai, aerr := strconv.ParseUint(a, 10, 64)
	bi, berr := strconv.ParseUint(b, 10, 64)
	if aerr == nil && berr == nil {
		switch {
		case ai < bi:
			return -1
		case ai > bi:
			return 1
		}
		return 0
	}
	return strings.Compare(a, b)
}

// CloseRequest is the desk's own verification stage: it closes a request
// with status (an update status that closes, CLOSED by default) and notes,
// recording it as a desk update that GET /servicerequestupdates.json shows.
// (The brief named this Close; Go has no overloading and Close() error
// closes the desk.)
func (d *Desk) CloseRequest(id, status, notes string) error {
	status = strings.ToUpper(strings.TrimSpace(status))
	if status == "" {
		status = "CLOSED"
	}
	if !slices.Contains(closingStatuses, status) {
		return fmt.Errorf("status %q does not close a request (one of %s)", status, strings.Join(closingStatuses, ", "))
	}
	return d.deskUpdate(id, status, notes)
}

// ReopenRequest reopens a closed request (a desk update with status REOPEN).
func (d *Desk) ReopenRequest(id, notes string) error { return d.deskUpdate(id, "REOPEN", notes) }

func (d *Desk) deskUpdate(id, status, notes string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.requests[id]
	if !ok {
		return fmt.Errorf("no service request %q", id)
	}
	if status == "REOPEN" && r.Status != "closed" {
		return fmt.Errorf("service request %s is not closed", id)
	}
	if status != "REOPEN" && r.Status == "closed" {
		return fmt.Errorf("service request %s is already closed", id)
	}
	seq := d.nextSeq(keyUpdateSeq)
	now := d.cfg.Now().UTC()
	c := cloneRequest(r)
	c.Updates = append(c.Updates, Update{ID: "desk-" + strconv.FormatUint(seq.n, 10), RequestID: id, Status: status,
		UpdatedAt: now, ReceivedAt: now, Description: notes, Source: "desk"})
	applyStatus(&c, status, notes)
	c.UpdatedAt = now
	if err := d.st.put(bucketRequests, id, &c, seq); err != nil {
		return err
	}
	d.setSeq(seq)
	*r = c
	d.log.Info("request status changed by the desk", "service_request_id", id, "status", status)
	return nil
}

// applyStatus applies an update status to the request's open/closed status.
func applyStatus(r *Request, status, notes string) {
	switch {
	case slices.Contains(closingStatuses, status) && r.Status == "open":
		r.Status = "closed"
		r.StatusNotes = notes
	case status == "REOPEN" && r.Status == "closed":
		r.Status = "open"
		r.StatusNotes = notes
	}
}

// Reset forgets everything received (requests, webhooks, idempotency keys)
// and clears any fault. Counters keep counting, so ids are never reused.
func (d *Desk) Reset() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.st.clear(); err != nil {
		return fmt.Errorf("resetting the store: %w", err)
	}
	d.requests, d.tokens, d.clientUpdates = map[string]*Request{}, map[string]string{}, map[string]string{}
	d.webhooks, d.idem = map[string]*WebhookDelivery{}, map[string]*idemRecord{}
	d.fault, d.faultUsed = Fault{}, 0
	d.log.Info("case desk reset")
	return nil
}

func (d *Desk) validKey(key string) bool {
	ok := 0
	for _, k := range d.cfg.APIKeys {
		ok |= subtle.ConstantTimeCompare([]byte(k), []byte(key))
	}
	return ok == 1 && key != ""
}

func randomToken() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
