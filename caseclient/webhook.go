package caseclient

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// AnomalyHeader carries a webhook delivery's anomaly key (replicas mode).
const AnomalyHeader = "Citygw-Anomaly-Key"

// webhookSink posts signed JSON events (Standard Webhooks v1).
type webhookSink struct {
	cfg SinkConfig
	key []byte
	hc  *http.Client
	now func() time.Time
}

// WebhookEvent is the body of a webhook delivery.
type WebhookEvent struct {
	Type      string    `json:"type"` // case.opened, case.updated, case.cleared
	Timestamp time.Time `json:"timestamp"`
	Data      struct {
		OperationID string `json:"operation_id"`
		CaseKey     string `json:"case_key"`
		EpisodeID   string `json:"episode_id"`
		AnomalyKey  string `json:"anomaly_key,omitempty"` // replicas mode: the same for every replica's episode of the anomaly
		Rule        string `json:"rule"`
		Case        *Case  `json:"case,omitempty"`
		Text        string `json:"text,omitempty"`
		Severity    string `json:"severity,omitempty"`
		Status      string `json:"status,omitempty"`
	} `json:"data"`
}

// webhookBody renders the event of op; it depends only on the op, so every
// retry sends the same bytes (Idempotency-Key requires that).
func webhookBody(o *op) ([]byte, error) {
	var ev WebhookEvent
	ev.Type = "case." + map[string]string{opOpen: "opened", opUpdate: "updated", opCleared: "cleared"}[o.Kind]
	ev.Timestamp = o.At.UTC()
	ev.Data.OperationID, ev.Data.CaseKey, ev.Data.EpisodeID, ev.Data.Rule = o.ID, o.CaseKey, o.Episode, o.Rule
	ev.Data.AnomalyKey = o.Anomaly
	ev.Data.Case, ev.Data.Text, ev.Data.Severity = o.Case, o.Text, o.Severity
	ev.Data.Status = "open"
	if o.Kind == opCleared {
		ev.Data.Status = "cleared_awaiting_verification"
	}
	return json.Marshal(&ev)
}

func (w *webhookSink) deliver(ctx context.Context, o *op, _ *sinkCase) result {
	body, err := webhookBody(o)
	if err != nil {
		return result{permanent: true, reason: "encode", msg: err.Error()}
	}
	ts := w.now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return result{permanent: true, reason: "request", msg: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", o.ID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", Sign(w.key, o.ID, ts, body))
	// IETF httpapi-idempotency-key-header: the value is a structured-field
	// string. Operation keys are printable ASCII without quotes or
	// backslashes.
	req.Header.Set("Idempotency-Key", `"`+o.ID+`"`)
	if o.Anomaly != "" {
		// Replicas mode: the anomaly-level dedup key. Each replica's
		// episode has its own operation keys; a receiver that keeps one
		// open case per anomaly merges opens carrying the same value (see
		// README.md: a webhook answer cannot tell the sender which case
		// it merged into, so the webhook is not exactly-once per anomaly
		// by itself).
		req.Header.Set(AnomalyHeader, o.Anomaly)
	}
	req.Header.Set("User-Agent", userAgent)
	resp, rb, err := do(w.hc, req)
	if err != nil {
		return transportFailure(err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return result{ok: true, reason: "ok"}
	}
	r := statusFailure(resp, rb, w.now())
	if resp.StatusCode == http.StatusGone {
		r.gone, r.reason = true, "gone"
	}
	if resp.StatusCode == http.StatusUnprocessableEntity {
		r.reason = "idempotency_key_reused"
	}
	return r
}
