package caseclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// result is the outcome of one delivery attempt.
type result struct {
	ok         bool
	id, token  string // open: the case system's id, or a batch token
	attached   string // open: the key of another replica's case the episode was attached to
	duplicate  bool   // open: posted, and another open case of the anomaly exists (counted)
	permanent  bool   // 4xx other than 408/409/429: do not retry
	gone       bool   // 410 from a webhook: disable the sink
	ambiguous  bool   // the request may have been acted on
	retryAfter time.Duration
	reason     string // metric label
	msg        string // the case system's message, for logs
}

func (r result) String() string {
	if r.msg != "" {
		return r.reason + ": " + r.msg
	}
	return r.reason
}

const userAgent = "citygw-caseclient/1"

// newHTTPClient returns a client that never follows redirects (a 3xx is a
// failure) and gives up after timeout.
func newHTTPClient(timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 4
	return &http.Client{Timeout: timeout, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// transportFailure classifies an error from http.Client.Do.
func transportFailure(err error) result {
	r := result{reason: "connection", msg: err.Error(), ambiguous: true}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		r.reason = "timeout"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		r.reason, r.ambiguous = "connect", false // never reached the server
	}
	return r
}

// statusFailure classifies a non-2xx response.
func statusFailure(resp *http.Response, body []byte, now time.Time) result {
	r := result{reason: "http_" + strconv.Itoa(resp.StatusCode), msg: caseSystemMessage(body)}
	switch c := resp.StatusCode; {
	case c == http.StatusTooManyRequests || c == http.StatusServiceUnavailable:
		r.retryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), now)
		r.ambiguous = c == http.StatusServiceUnavailable
	case c == http.StatusRequestTimeout || c == http.StatusConflict:
	case c >= 300 && c < 400:
		r.reason = "redirect"
	case c >= 400 && c < 500:
		r.permanent = true
	default: // 5xx: the server may have stored the request before failing
		r.ambiguous = true
	}
	return r
}

// caseSystemMessage extracts the message of an error body: Open311's
// [{"code":400,"description":"..."}], a {"error": "..."} object, or the text.
func caseSystemMessage(body []byte) string {
	var o311 []struct {
		Code        any    `json:"code"`
		Description string `json:"description"`
	}
	if json.Unmarshal(body, &o311) == nil && len(o311) > 0 && o311[0].Description != "" {
		var parts []string
		for _, e := range o311 {
			parts = append(parts, e.Description)
		}
		return strings.Join(parts, "; ")
	}
	var obj map[string]any
	if json.Unmarshal(body, &obj) == nil {
		for _, k := range []string{"error", "description", "message", "detail", "title"} {
			if s, ok := obj[k].(string); ok && s != "" {
				return s
			}
		}
	}
	return truncate(strings.TrimSpace(string(body)), 300)
}

// do sends req and reads up to 1 MiB of the response body.
func do(hc *http.Client, req *http.Request) (*http.Response, []byte, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("reading the response: %w", err)
	}
	return resp, body, nil
}
