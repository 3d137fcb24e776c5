package casedesk

import (
	"bytes"
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// WebhookDelivery is one accepted webhook message (one webhook-id).
type WebhookDelivery struct {
	ID             string          `json:"webhook_id"`
	Seq            uint64          `json:"seq"`               // arrival order
	Timestamp      time.Time       `json:"webhook_timestamp"` // of the accepted attempt
	ReceivedAt     time.Time       `json:"received_at"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	ContentType    string          `json:"content_type,omitempty"`
	UserAgent      string          `json:"user_agent,omitempty"`
	Payload        json.RawMessage `json:"payload"`
	Duplicates     int             `json:"duplicates"` // later attempts with the same webhook-id, acknowledged and not stored
	Case           WebhookCase     `json:"case"`       // what the payload says about the case, as far as the desk understands it
}

// WebhookCase is what the desk reads out of a webhook payload for its pages:
// Standard Webhooks' {"type", "timestamp", "data": {...}} envelope, or a bare
// object. Missing fields stay empty.
type WebhookCase struct {
	Type        string   `json:"type,omitempty"`
	Key         string   `json:"key,omitempty"`
	Title       string   `json:"title,omitempty"`
	Description string   `json:"description,omitempty"`
	Status      string   `json:"status,omitempty"`
	Service     string   `json:"service,omitempty"`
	AssetID     string   `json:"asset_id,omitempty"`
	Lat         *float64 `json:"lat,omitempty"`
	Lon         *float64 `json:"lon,omitempty"`
}

// Webhooks returns every accepted webhook message, oldest first.
func (d *Desk) Webhooks() []WebhookDelivery {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]WebhookDelivery, 0, len(d.webhooks))
	for _, w := range d.webhooks {
		c := *w
		c.Payload = slices.Clone(w.Payload)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b WebhookDelivery) int {
		return cmp.Compare(a.Seq, b.Seq)
	})
	return out
}

// ParseSignatures parses a webhook-signature header: a space-separated list
// of "version,base64-signature". It returns the decoded v1 signatures;
// entries of other versions are skipped, malformed v1 entries are an error.
func ParseSignatures(header string) ([][]byte, error) {
	var sigs [][]byte
	for _, part := range strings.Fields(header) {
		ver, sig, ok := strings.Cut(part, ",")
		if !ok {
			return nil, fmt.Errorf("signature %q is not version,signature", part)
		}
		if ver != "v1" {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(sig)
		if err != nil {
			return nil, fmt.Errorf("v1 signature is not base64: %w", err)
		}
		sigs = append(sigs, b)
	}
	if len(sigs) == 0 {
		return nil, errors.New("no v1 signature")
	}
	return sigs, nil
}

// Sign returns the v1 signature of a message for key: base64 of
// HMAC-SHA256 over "{id}.{timestamp}.{body}".
func Sign(key []byte, id string, timestamp int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%d.", id, timestamp)
	m.Write(body)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// verify checks a webhook's signature against every secret in constant
// time per comparison.
func (d *Desk) verify(id, ts string, body []byte, sigs [][]byte) bool {
	ok := false
	for _, key := range d.secrets {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(id))
		m.Write([]byte{'.'})
		m.Write([]byte(ts))
		m.Write([]byte{'.'})
		m.Write(body)
		want := m.Sum(nil)
		for _, s := range sigs {
			if hmac.Equal(want, s) {
				ok = true
			}
		}
	}
	return ok
}

// ParseIdempotencyKey reads an Idempotency-Key header: a structured-field
// string ("…") or, leniently, a bare token. Empty means none.
func ParseIdempotencyKey(h string) (string, error) {
	h = strings.TrimSpace(h)
	if h == "" {
		return "", nil
	}
	if strings.HasPrefix(h, `"`) {
		// sf-string: printable ASCII, with \" and \\ the only escapes.
		var b strings.Builder
		closed := false
		for i := 1; i < len(h); i++ {
			c := h[i]
			switch {
			case c == '\\' && i+1 < len(h) && (h[i+1] == '"' || h[i+1] == '\\'):
				b.WriteByte(h[i+1])
				i++
			case c == '"' && i == len(h)-1:
				closed = true
			case c == '"' || c == '\\':
				return "", fmt.Errorf("Idempotency-Key %q is not a structured-field string", h)
			default:
				b.WriteByte(c)
			}
		}
		if !closed {
			return "", fmt.Errorf("Idempotency-Key %q lacks its closing quote", h)
		}
		h = b.String()
	}
	if h == "" || len(h) > 255 {
		return "", fmt.Errorf("Idempotency-Key must be 1 to 255 characters")
	}
	for _, c := range h {
		if c < 0x20 || c > 0x7e {
			return "", fmt.Errorf("Idempotency-Key contains a character outside printable ASCII")
		}
	}
	return h, nil
}

// idemRecord is the state of one Idempotency-Key.
type idemRecord struct {
	Fingerprint string    `json:"fingerprint"` // sha256 of the body
	Done        bool      `json:"done"`
	Status      int       `json:"status,omitempty"`
	Body        []byte    `json:"body,omitempty"`
	At          time.Time `json:"at"`
}

// webhookAnswer is the receiver's JSON answer.
type webhookAnswer struct {
	Status    string `json:"status"` // accepted | duplicate
	WebhookID string `json:"webhook_id"`
}

type webhookError struct {
	Error string `json:"error"`
}

func (d *Desk) webhookFail(w http.ResponseWriter, r *http.Request, code int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	d.log.Info("webhook refused", "status", code, "error", msg, "webhook_id", r.Header.Get("webhook-id"))
	body, _ := json.Marshal(webhookError{msg})
	d.respondRaw(w, r, code, "application/json", append(body, '\n'), nil)
}

// POST /webhook
func (d *Desk) handleWebhook(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		d.webhookFail(w, r, http.StatusRequestEntityTooLarge, "reading the body: %v", err)
		return
	}
	id, tsText, sigHdr := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), r.Header.Get("webhook-signature")
	if id == "" || tsText == "" || sigHdr == "" {
		d.webhookFail(w, r, http.StatusBadRequest, "webhook-id, webhook-timestamp and webhook-signature headers are required")
		return
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		d.webhookFail(w, r, http.StatusBadRequest, "webhook-timestamp %q is not unix seconds", tsText)
		return
	}
	sigs, err := ParseSignatures(sigHdr)
	if err != nil {
		d.webhookFail(w, r, http.StatusUnauthorized, "webhook-signature: %v", err)
		return
	}
	now := d.cfg.Now()
	sent := time.Unix(ts, 0)
	if sent.Before(now.Add(-d.cfg.WebhookTolerance)) || sent.After(now.Add(d.cfg.WebhookTolerance)) {
		// 401: a timestamp out of the window is a possible replay; the
		// message cannot be trusted even if its signature matches.
		d.webhookFail(w, r, http.StatusUnauthorized, "webhook-timestamp %d is outside the tolerance of %v", ts, d.cfg.WebhookTolerance)
		return
	}
	if !d.verify(id, tsText, body, sigs) {
		d.webhookFail(w, r, http.StatusUnauthorized, "no webhook-signature matches")
		return
	}
	key, err := ParseIdempotencyKey(r.Header.Get("Idempotency-Key"))
	if err != nil {
		d.webhookFail(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	if !json.Valid(body) {
		d.webhookFail(w, r, http.StatusBadRequest, "the body is not JSON")
		return
	}
	if key != "" {
		sum := sha256.Sum256(body)
		fp := hex.EncodeToString(sum[:])
		d.mu.Lock()
		rec, seen := d.idem[key]
		switch {
		case seen && rec.Fingerprint != fp:
			d.mu.Unlock()
			d.webhookFail(w, r, http.StatusUnprocessableEntity, "Idempotency-Key %q was used with another payload", key)
			return
		case seen && !rec.Done:
			d.mu.Unlock()
			d.webhookFail(w, r, http.StatusConflict, "a request with Idempotency-Key %q is still being processed", key)
			return
		case seen:
			status, stored := rec.Status, slices.Clone(rec.Body)
			d.mu.Unlock()
			d.log.Info("idempotent replay", "idempotency_key", key, "webhook_id", id)
			d.respondRaw(w, r, status, "application/json", stored, http.Header{"Idempotent-Replayed": {"true"}})
			return
		}
		d.idem[key] = &idemRecord{Fingerprint: fp, At: now.UTC()}
		d.mu.Unlock()
		// The key stays in flight until the answer has been given (a slow
		// fault holds it back), then the result is kept for replays. A 5xx,
		// or a handler that never got to a result, leaves no record: the
		// retry runs again (the webhook-id still deduplicates it).
		status, answer := http.StatusInternalServerError, []byte(nil)
		defer func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			if status >= 500 {
				delete(d.idem, key)
				return
			}
			rec := &idemRecord{Fingerprint: fp, Done: true, Status: status, Body: answer, At: now.UTC()}
			if err := d.st.put(bucketIdem, key, rec); err != nil {
				d.log.Error("storing an idempotency record", "error", err)
				delete(d.idem, key)
				return
			}
			d.idem[key] = rec
		}()
		status, answer = d.acceptWebhook(r, id, sent, key, body)
		d.respondRaw(w, r, status, "application/json", answer, nil)
		return
	}
	status, answer := d.acceptWebhook(r, id, sent, "", body)
	d.respondRaw(w, r, status, "application/json", answer, nil)
}

// acceptWebhook stores a verified message unless its webhook-id is known,
// and returns the answer.
func (d *Desk) acceptWebhook(r *http.Request, id string, sent time.Time, key string, body []byte) (int, []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if prev, dup := d.webhooks[id]; dup {
		c := *prev
		c.Duplicates++
		if err := d.st.put(bucketWebhooks, id, &c); err != nil {
			d.log.Error("storing a webhook duplicate count", "error", err)
		}
		*prev = c
		d.log.Info("duplicate webhook acknowledged", "webhook_id", id, "duplicates", c.Duplicates)
		return http.StatusOK, answerJSON(webhookAnswer{"duplicate", id})
	}
	var compact bytes.Buffer
	payload := json.RawMessage(body)
	if json.Compact(&compact, body) == nil {
		payload = compact.Bytes()
	}
	seq := d.nextSeq(keyWebhookSeq)
	wd := &WebhookDelivery{ID: id, Seq: seq.n, Timestamp: sent.UTC(), ReceivedAt: d.cfg.Now().UTC(), IdempotencyKey: key,
		ContentType: r.Header.Get("Content-Type"), UserAgent: r.Header.Get("User-Agent"),
		Payload: payload, Case: extractCase(body)}
	if err := d.st.put(bucketWebhooks, id, wd, seq); err != nil {
		d.log.Error("storing a webhook", "error", err)
		return http.StatusInternalServerError, answerJSON(webhookError{"storing the message failed"})
	}
	d.setSeq(seq)
	d.webhooks[id] = wd
	d.log.Info("webhook received", "webhook_id", id, "type", wd.Case.Type, "case_key", wd.Case.Key)
	return http.StatusOK, answerJSON(webhookAnswer{"accepted", id})
}

func answerJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return append(b, '\n')
}

// extractCase reads the fields the pages show from a payload.
func extractCase(body []byte) WebhookCase {
	var top map[string]any
	if json.Unmarshal(body, &top) != nil {
		return WebhookCase{}
	}
	c := WebhookCase{Type: str(top, "type", "event")}
	m := top
	if data, ok := top["data"].(map[string]any); ok {
		m = data
	}
	if inner, ok := m["case"].(map[string]any); ok {
		for k, v := range inner {
			if _, has := m[k]; !has {
				m[k] = v
			}
		}
	}
	c.Key = str(m, "case_key", "key", "case_id", "id")
	c.Title = str(m, "title", "summary")
	c.Description = str(m, "description", "text", "message")
	c.Status = str(m, "status", "state")
	c.Service = str(m, "service_code", "service")
	c.AssetID = str(m, "asset_id", "asset")
	loc := m
	if l, ok := m["location"].(map[string]any); ok {
		loc = l
	}
	c.Lat = num(loc, "lat", "latitude")
	c.Lon = num(loc, "lon", "long", "lng", "longitude")
	if c.Type == "" {
		c.Type = str(m, "type", "event")
	}
	return c
}

func str(m map[string]any, keys ...string) string {
	for _, k := range keys {
		switch v := m[k].(type) {
		case string:
			return v
		case float64:
			return strconv.FormatFloat(v, 'f', -1, 64)
		}
	}
	return ""
}

func num(m map[string]any, keys ...string) *float64 {
	for _, k := range keys {
		switch v := m[k].(type) {
		case float64:
			return &v
		case string:
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				return &f
			}
		}
	}
	return nil
}
