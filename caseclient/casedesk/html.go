package casedesk

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// caseRow is one case on the HTML pages: an Open311 request, or the webhook
// messages about one case key.
type caseRow struct {
	ID         string // request id, or "wh:" + key for webhook cases
	Link       string
	Channel    string // Open311 | webhook
	At         time.Time
	Status     string
	Service    string
	Key        string
	Title      string
	Excerpt    string
	Location   string
	Updates    []rowUpdate
	Request    *Request
	Messages   []WebhookDelivery
	Attributes [][2]string
}

type rowUpdate struct {
	At          time.Time
	Status      string
	Source      string
	Description string
}

func excerpt(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}

func fmtLatLon(lat, lon *float64) string {
	if lat == nil || lon == nil {
		return ""
	}
	return fmt.Sprintf("%.6f, %.6f", *lat, *lon)
}

// rows builds the case rows, newest first.
func (d *Desk) rows() []caseRow {
	var out []caseRow
	for _, r := range d.Requests() {
		row := caseRow{ID: r.ID, Link: "/cases/" + url.PathEscape(r.ID), Channel: "Open311", At: r.RequestedAt,
			Status: r.Status, Service: r.ServiceCode, Key: r.CaseKey(), Excerpt: excerpt(r.Description, 160),
			Location: fmtLatLon(r.Lat, r.Long)}
		if row.Location == "" {
			row.Location = strings.TrimSpace(r.Address + " " + r.AddressID)
		}
		req := r
		row.Request = &req
		for _, u := range r.Updates {
			row.Updates = append(row.Updates, rowUpdate{u.ReceivedAt, u.Status, u.Source, u.Description})
		}
		keys := make([]string, 0, len(r.Attributes))
		for k := range r.Attributes {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			row.Attributes = append(row.Attributes, [2]string{k, strings.Join(r.Attributes[k], ", ")})
		}
		out = append(out, row)
	}
	byKey := map[string]int{}
	for _, w := range d.Webhooks() { // oldest first: the first message opens the case
		key := w.Case.Key
		if key == "" {
			key = "webhook " + w.ID
		}
		i, ok := byKey[key]
		if !ok {
			i = len(out)
			byKey[key] = i
			out = append(out, caseRow{ID: "wh:" + key, Link: "/cases/" + url.PathEscape("wh:"+key), Channel: "webhook",
				At: w.ReceivedAt, Key: w.Case.Key})
		}
		row := &out[i]
		row.Messages = append(row.Messages, w)
		c := w.Case
		if c.Status != "" {
			row.Status = c.Status
		}
		if c.Service != "" && row.Service == "" {
			row.Service = c.Service
		}
		if c.Title != "" && row.Title == "" {
			row.Title = c.Title
		}
		if c.Description != "" && row.Excerpt == "" {
			row.Excerpt = excerpt(c.Description, 160)
		}
		if loc := fmtLatLon(c.Lat, c.Lon); loc != "" && row.Location == "" {
			row.Location = loc
		}
		if len(row.Messages) > 1 {
			row.Updates = append(row.Updates, rowUpdate{w.ReceivedAt, orDefault(c.Status, c.Type), "client", excerpt(orDefault(c.Description, c.Title), 160)})
		}
	}
	slices.SortStableFunc(out, func(a, b caseRow) int { return b.At.Compare(a.At) })
	return out
}

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Format("2006-01-02 15:04:05 MST")
	},
	"last": func(us []rowUpdate) *rowUpdate {
		if len(us) == 0 {
			return nil
		}
		return &us[len(us)-1]
	},
	"pretty": func(raw json.RawMessage) string {
		var b bytes.Buffer
		if json.Indent(&b, raw, "", "  ") != nil {
			return string(raw)
		}
		return b.String()
	},
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
{{if .Refresh}}<meta http-equiv="refresh" content="5">{{end}}
<title>{{.Title}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}.open{color:#b00;font-weight:bold}.closed{color:#080}.muted{color:#777;font-size:.9em}
pre{background:#f7f7f7;padding:.6em;overflow:auto}
</style></head><body>
{{define "status"}}<span class="{{.}}">{{.}}</span>{{end}}
{{if .Case}}{{with .Case}}
<p><a href="/">← all cases</a></p>
<h1>{{.Channel}} case {{.ID}}</h1>
<table>
<tr><th>Received</th><td>{{ts .At}}</td></tr>
<tr><th>Status</th><td>{{template "status" .Status}}{{with .Request}}{{with .StatusNotes}} — {{.}}{{end}}{{end}}</td></tr>
<tr><th>Service</th><td>{{.Service}}{{with .Request}} ({{.ServiceName}}, {{.ServiceType}}){{end}}</td></tr>
<tr><th>Case key</th><td>{{.Key}}</td></tr>
{{with .Title}}<tr><th>Title</th><td>{{.}}</td></tr>{{end}}
<tr><th>Location</th><td>{{.Location}}</td></tr>
{{with .Request}}
<tr><th>Description</th><td><pre>{{.Description}}</pre></td></tr>
<tr><th>Agency</th><td>{{.AgencyResponsible}}</td></tr>
{{with .Token}}<tr><th>Token</th><td>{{.}}</td></tr>{{end}}
{{with .DeviceID}}<tr><th>Device</th><td>{{.}}</td></tr>{{end}}
{{with .MediaURL}}<tr><th>Media</th><td>{{.}}</td></tr>{{end}}
{{end}}
{{range .Attributes}}<tr><th>attribute[{{index . 0}}]</th><td>{{index . 1}}</td></tr>{{end}}
</table>
{{with .Request}}<h2>Updates</h2>
{{if .Updates}}<table><tr><th>Received</th><th>update_id</th><th>Status</th><th>Source</th><th>Description</th></tr>
{{range .Updates}}<tr><td>{{ts .ReceivedAt}}</td><td>{{.ID}}</td><td>{{.Status}}</td><td>{{.Source}}</td><td>{{.Description}}</td></tr>{{end}}
</table>{{else}}<p class="muted">none</p>{{end}}{{end}}
{{if .Messages}}<h2>Webhook messages</h2>
{{range .Messages}}<h3>{{.ID}} <span class="muted">{{ts .ReceivedAt}}{{with .Case.Type}} · {{.}}{{end}}{{if .Duplicates}} · {{.Duplicates}} duplicate deliveries{{end}}{{with .IdempotencyKey}} · Idempotency-Key {{.}}{{end}}</span></h3>
<pre>{{pretty .Payload}}</pre>{{end}}{{end}}
{{end}}{{else}}
<h1>Case desk</h1>
<p class="muted">{{.Total}} cases received (Open311 requests and webhook cases), newest first{{if lt (len .Rows) .Total}}; the newest {{len .Rows}} shown{{end}}. Refreshes every 5 s. JSON: <a href="/_control/requests">requests</a>, <a href="/_control/webhooks">webhooks</a> (loopback only).</p>
{{if .Rows}}<table>
<tr><th>Received</th><th>Case</th><th>Channel</th><th>Status</th><th>Service</th><th>Case key</th><th>Title / description</th><th>Location</th><th>Updates</th></tr>
{{range .Rows}}<tr>
<td>{{ts .At}}</td><td><a href="{{.Link}}">{{.ID}}</a></td><td>{{.Channel}}</td><td>{{template "status" .Status}}</td><td>{{.Service}}</td><td>{{.Key}}</td>
<td>{{with .Title}}<b>{{.}}</b><br>{{end}}{{.Excerpt}}</td><td>{{.Location}}</td>
<td>{{len .Updates}}{{with last .Updates}}<br><span class="muted">{{.Status}}: {{.Description}}</span>{{end}}</td>
</tr>{{end}}
</table>{{else}}<p>No cases yet.</p>{{end}}
{{end}}
</body></html>
`))

type pageData struct {
	Title   string
	Refresh bool
	Rows    []caseRow
	Total   int
	Case    *caseRow
}

// maxRows bounds the cases listed on the index page.
const maxRows = 500

func (d *Desk) renderPage(w http.ResponseWriter, code int, p pageData) {
	var b bytes.Buffer
	if err := pageTmpl.Execute(&b, p); err != nil {
		d.log.Error("rendering a page", "error", err)
		http.Error(w, "rendering the page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(b.Bytes())
}

// GET /
func (d *Desk) handleIndex(w http.ResponseWriter, r *http.Request) {
	rows := d.rows()
	p := pageData{Title: "Case desk", Refresh: true, Rows: rows, Total: len(rows)}
	if len(rows) > maxRows {
		p.Rows = rows[:maxRows]
	}
	d.renderPage(w, http.StatusOK, p)
}

// GET /cases/{id}
func (d *Desk) handleCase(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	for _, row := range d.rows() {
		if row.ID == id {
			d.renderPage(w, http.StatusOK, pageData{Title: "Case " + id, Case: &row})
			return
		}
	}
	http.Error(w, "no such case", http.StatusNotFound)
}
