package statuspage

import (
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"
)

// The page's only style and script; nothing is fetched from elsewhere.
const css = `
:root{--firing:#d62828;--pending:#f08c00;--shadow:#3a86c8;--silent:#5c6370;--reporting:#2f9e44;--waiting:#c3c8cf;
--bg:#f6f7f9;--fg:#1d2125;--muted:#66707a;--card:#fff;--line:#dde1e6}
*{box-sizing:border-box}body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC",sans-serif;background:var(--bg);color:var(--fg)}
header{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;align-items:baseline;padding:.6rem 1rem;background:#1d2733;color:#fff}
header h1{font-size:1.1rem;margin:0}header a{color:#cfe3ff}#conn{font-size:.8rem;color:#9fb3c8}
main{padding:.8rem 1rem}form.filters{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin-bottom:.6rem}
form.filters label{font-size:.85rem;color:var(--muted)}select,input{font:inherit;padding:.15rem .3rem}
.grid{display:grid;grid-template-columns:minmax(0,3fr) minmax(280px,2fr);gap:1rem}@media(max-width:900px){.grid{grid-template-columns:1fr}}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:.6rem .8rem;margin-bottom:1rem}
.card h2{font-size:.95rem;margin:.1rem 0 .5rem}
.chips{display:flex;flex-wrap:wrap;gap:.4rem;margin-bottom:.6rem}.chip{border-radius:999px;padding:.1rem .6rem;color:#fff;font-weight:600;font-size:.85rem}
.chip.total{background:#39424e}
.badge{display:inline-block;border-radius:3px;padding:0 .35rem;color:#fff;font-size:.8rem;font-weight:600}
.b-firing,.chip.s-firing{background:var(--firing)}.b-pending,.chip.s-pending{background:var(--pending)}.b-shadow,.chip.s-shadow{background:var(--shadow)}
.b-silent,.chip.s-silent{background:var(--silent)}.b-reporting,.chip.s-reporting{background:var(--reporting)}.b-waiting,.chip.s-waiting{background:var(--waiting);color:#222}
.b-inactive{background:#e3e6ea;color:#333}
svg#map{width:100%;height:auto;display:block;border-radius:4px}svg .sea{fill:#eef1f4}
circle.a{stroke:#fff;stroke-width:.8}circle.s-firing{fill:var(--firing);stroke:#600;stroke-width:1.2}circle.s-pending{fill:var(--pending)}
circle.s-shadow{fill:var(--shadow)}circle.s-silent{fill:var(--silent)}circle.s-reporting{fill:var(--reporting)}circle.s-waiting{fill:var(--waiting)}
rect.c{stroke:none}rect.s-firing{fill:var(--firing)}rect.s-pending{fill:var(--pending)}rect.s-shadow{fill:var(--shadow)}
rect.s-silent{fill:var(--silent)}rect.s-reporting{fill:var(--reporting)}rect.s-waiting{fill:var(--waiting)}
.legend{display:flex;flex-wrap:wrap;gap:.8rem;font-size:.8rem;color:var(--muted);margin-top:.4rem}.legend i{display:inline-block;width:.7rem;height:.7rem;border-radius:50%;margin-right:.25rem;vertical-align:-1px}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.2rem .4rem;border-bottom:1px solid var(--line);vertical-align:top;font-size:.85rem}
th{color:var(--muted);font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:var(--reporting);font-weight:600}.bad{color:var(--firing);font-weight:600}.dim{color:var(--muted)}
.scroll{max-height:70vh;overflow:auto}
code{font-size:.8rem;background:#f1f3f5;padding:0 .2rem;border-radius:3px;word-break:break-word}
svg.spark{width:160px;height:32px;display:block}svg.spark polyline{fill:none;stroke:#1c6dd0;stroke-width:1.5}
`

const cityScript = `
(function(){
  "use strict";
  var live = document.getElementById("live"), conn = document.getElementById("conn");
  var version = live.getAttribute("data-version");
  var busy = false;
  function refetch(){
    if (busy) return; busy = true;
    var u = new URL(location.href); u.searchParams.set("partial", "1");
    fetch(u.toString(), {credentials: "same-origin"}).then(function(r){
      if (!r.ok) throw new Error("HTTP " + r.status);
      version = r.headers.get("X-Version") || version;
      return r.text();
    }).then(function(t){
      live.innerHTML = t; live.setAttribute("data-version", version);
      document.body.setAttribute("data-refreshes", String(Number(document.body.getAttribute("data-refreshes") || 0) + 1));
    }).catch(function(e){ conn.textContent = "refresh failed: " + e.message; })
      .then(function(){ busy = false; });
  }
  if (window.EventSource) {
    var es = new EventSource("events" + location.search);
    es.addEventListener("summary", function(ev){
      var d = JSON.parse(ev.data);
      conn.textContent = "live · " + d.generated.replace("T", " ").replace(/\.\d+/, "");
      if (d.version !== version) { refetch(); return; }
      var c = d.counters, set = function(id, text){ var el = document.getElementById(id); if (el) el.textContent = text; };
      set("wal", c.wal_backlog + " points behind");
      set("outbox", c.outbox + " waiting");
      set("influxq", c.influxdb_queued + " queued");
    });
    es.onerror = function(){ conn.textContent = "reconnecting…"; };
  } else {
    setInterval(refetch, REFRESH_MS);
  }
})();
`

const assetScript = `
(function(){
  "use strict";
  var live = document.getElementById("live"), conn = document.getElementById("conn");
  setInterval(function(){
    var u = new URL(location.href); u.searchParams.set("partial", "1");
    fetch(u.toString(), {credentials: "same-origin"}).then(function(r){
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.text();
    }).then(function(t){ live.innerHTML = t; conn.textContent = "live · " + new Date().toLocaleTimeString(); })
      .catch(function(e){ conn.textContent = "refresh failed: " + e.message; });
  }, REFRESH_MS);
})();
`

const pageHead = `{{define "head"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<link rel="icon" href="data:,">
<title>{{.Title}}</title><style>{{.CSS}}</style></head>
<body><header><h1>{{.Title}}</h1>{{if .Back}}<a href="{{.Back}}">← city</a>{{end}}<span id="conn">server time {{fmtTime .Now .Loc}}</span></header>
<main>{{end}}`

const pageFoot = `{{define "foot"}}</main><script>{{.Script}}</script></body></html>{{end}}`

const cityTop = `{{define "filters"}}<form class="filters" method="get" action="">
<label>kind <select name="kind"><option value="">all</option>{{range .Kinds}}<option{{if eq . $.Filter.Kind}} selected{{end}}>{{.}}</option>{{end}}</select></label>
<label>district {{if .DistrictSelect}}<select name="district"><option value="">all</option>{{range .Districts}}<option{{if eq . $.Filter.District}} selected{{end}}>{{.}}</option>{{end}}</select>{{else}}<input name="district" value="{{.Filter.District}}" size="8">{{end}}</label>
<label>grid <input name="grid" value="{{.Filter.Grid}}" size="14" placeholder="unit-grid code"{{if .Grids}} list="grids"{{end}}></label>
{{if .Grids}}<datalist id="grids">{{range .Grids}}<option value="{{.}}">{{end}}</datalist>{{end}}
<button type="submit">filter</button>{{if .FilterQuery}} <a href="./">clear</a>{{end}}
</form>
<div id="live" data-version="{{.Version}}">{{end}}
{{define "live-a"}}<div class="chips"><span class="chip total" id="matched">{{.Matched}}{{if ne .Matched .Total}} of {{.Total}}{{end}} assets</span>
{{range .Counts}}{{if .N}}<span class="chip {{.Class}}" data-state="{{.State}}">{{.N}} {{.State}}</span>{{end}}{{end}}</div>
<div class="grid"><div><div class="card"><h2>Map{{if .Filter.Kind}} · {{.Filter.Kind}}{{end}}{{if .Filter.District}} · district {{.Filter.District}}{{end}}{{if .Filter.Grid}} · grid {{.Filter.Grid}}{{end}}</h2>{{end}}
{{define "live-b"}}<div class="legend">{{range .Counts}}<span><i class="{{.Badge}}"></i>{{.State}}</span>{{end}}
<span>{{if .Map.Binned}}{{.Map.Matched}} assets binned into {{.Map.Cells}} cells (colour: most urgent state in the cell; opacity: how many); {{.Map.Drawn}} shadow, pending and firing assets drawn on top{{else}}{{.Map.Drawn}} assets drawn{{end}}</span></div></div></div>
<div>
<div class="card" id="health"><h2>Sources and sinks</h2><table>
{{with .Health}}
<tr><th>Modbus</th><td>{{if .ModbusTotal}}<span class="{{if eq .ModbusUp .ModbusTotal}}ok{{else}}bad{{end}}">{{.ModbusUp}} of {{.ModbusTotal}} devices up</span>{{else}}<span class="dim">no Modbus devices</span>{{end}}</td></tr>
<tr><th>MQTT</th><td>{{if .MQTT}}<span class="{{if .MQTTConnected}}ok{{else}}bad{{end}}">{{if .MQTTConnected}}connected{{else}}not connected{{end}}</span> <span class="dim">{{.MQTTBroker}}{{if not .MQTTLast.IsZero}} · last message {{ago $.Now .MQTTLast}}{{end}}</span>{{else}}<span class="dim">not configured</span>{{end}}</td></tr>
<tr><th>InfluxDB</th><td>{{if .Influx}}<span class="{{if .InfluxUp}}ok{{else}}bad{{end}}">{{if .InfluxUp}}reachable{{else}}unreachable{{end}}</span> <span class="dim"><span id="influxq">{{.InfluxQueued}} queued</span>{{if not .InfluxLast.IsZero}} · last write {{ago $.Now .InfluxLast}}{{end}}</span>{{if .InfluxError}}<br><code>{{.InfluxError}}</code>{{end}}{{else}}<span class="dim">not configured</span>{{end}}</td></tr>
<tr><th>WAL</th><td>{{if .WAL}}<span class="{{if .WALDiskFull}}bad{{end}}" id="wal">{{.WALBacklog}} points behind</span> <span class="dim">{{bytes .WALBytes}}{{if .WALBacklog}} · oldest {{secs .WALAge}}{{end}}{{if .WALDiskFull}} · disk full{{end}}</span>{{else}}<span class="dim">not configured</span>{{end}}</td></tr>
<tr><th>Case outbox</th><td>{{if .Cases}}<span id="outbox">{{.Outbox}} waiting</span> <span class="dim">{{if .Outbox}}oldest {{secs .OutboxAge}} · {{end}}{{.DeadLetters}} dead letters</span>{{else}}<span class="dim">no case client</span>{{end}}</td></tr>
{{if .Cases}}<tr><th>Case sinks</th><td><span class="{{if eq .SinksOK (len .Sinks)}}ok{{else}}bad{{end}}">{{.SinksOK}} of {{len .Sinks}} healthy</span>{{range .Sinks}}<br>{{.Name}} <span class="dim">({{.Type}}) breaker {{.Breaker}}{{if .Pending}} · {{.Pending}} pending{{end}}</span>{{end}}</td></tr>{{end}}
{{end}}
</table></div>
<div class="card" id="episodes"><h2>Episodes: {{.FiringN}} firing, {{.PendingN}} pending{{if .ShadowN}}, {{.ShadowN}} shadow{{end}}</h2>
{{if .Episodes}}<div class="scroll"><table><tr><th>state</th><th>episode</th><th>since</th><th>case</th></tr>
{{range .Episodes}}<tr class="ep" data-episode="{{.ID}}" data-state="{{.State}}"><td><span class="badge {{.Badge}}">{{.State}}</span>{{if .Shadow}} <span class="badge b-shadow">shadow</span>{{end}}</td>
<td><b>{{.Title}}</b><br><span class="dim">{{.Rule}} · {{.Severity}}</span><br>{{range .Assets}}<a href="{{.Href}}">{{.ID}}</a> {{end}}{{if .More}}<span class="dim">+{{.More}} more</span>{{end}}{{if .Muted}}<br><span class="dim">muted: {{.Muted}}</span>{{end}}</td>
<td>{{ago $.Now .Since}}</td>
<td>{{range .Cases}}{{if .Link}}<a href="{{.Link}}" target="_blank" rel="noopener">{{.ID}}</a>{{else if .ID}}{{.ID}}{{else}}<span class="dim">{{.Sink}}: waiting</span>{{end}} <span class="dim">{{.Status}}</span><br>{{else}}<span class="dim">—</span>{{end}}</td></tr>
{{end}}</table></div>{{if .MoreEpisodes}}<p class="dim">and {{.MoreEpisodes}} more</p>{{end}}{{else}}<p class="dim">No pending or firing episodes.</p>{{end}}
</div></div></div>{{end}}
{{define "live-start"}}<div id="live">{{end}}
{{define "live-end"}}</div>{{end}}`

const assetTmpl = `{{define "asset"}}<div class="chips"><span class="chip {{.StateClass}}" id="state" data-state="{{.State}}">{{.State}}</span>
<span class="dim">{{if .LastSeen.IsZero}}no reading since the gateway started{{else}}last reading received {{ago .Now .LastSeen}}{{end}} · silent after {{.SilentAfter}}</span></div>
<div class="grid"><div>
<div class="card"><h2>Last reading{{if .Reading}} · {{fmtTime .ReadingTime .Loc}}{{end}}</h2>
{{if .Fields}}<table><tr><th>field</th><th>value</th><th>recent</th></tr>
{{range .Fields}}<tr><td>{{.Name}}</td><td class="num">{{.Value}}{{if .Unit}} <span class="dim">{{.Unit}}</span>{{end}}</td><td>{{if .Spark}}{{.Spark}}<span class="dim">{{.SparkNote}}</span>{{end}}</td></tr>
{{end}}</table>{{else}}<p class="dim">The rule engine has not seen a reading of this asset since it started.</p>{{end}}
<p class="dim">Sparklines show each numeric field's recent values from the rule engine: its window history (every reading within the longest window a rule reads the field through) where that holds at least as many samples, else the field's last readings (rules.Options.DisplaySamples, 8 by default).</p></div>
<div class="card" id="rules"><h2>Rules watching it</h2>
{{if .Rules}}<table><tr><th>rule</th><th>state</th><th>since</th><th>case</th></tr>
{{range .Rules}}<tr class="rule" data-rule="{{.Rule}}" data-state="{{.State}}"><td><b>{{.Rule}}</b> <span class="dim">{{.Severity}}{{if .Shadow}} · shadow{{end}}{{if eq .Health "quarantined"}} · <span class="bad" title="over its evaluation time budget repeatedly; not evaluated until the rules are reloaded">quarantined</span>{{else if not .Healthy}} · <span class="bad">errors</span>{{end}}</span><br><code>{{.Condition}}</code>
{{if .Grouped}}<br><span class="dim">group {{.Group}}: {{.Members}} meeting, {{.Need}} needed{{if .Meets}}, this asset among them{{end}}</span>{{else if .Meets}}<br><span class="dim">condition holds</span>{{end}}{{if .Muted}}<br><span class="dim">muted: {{.Muted}}</span>{{end}}</td>
<td><span class="badge b-{{.State}}">{{.State}}</span></td><td>{{if not .Since.IsZero}}{{ago $.Now .Since}}{{end}}</td>
<td>{{range .Cases}}{{if .Link}}<a href="{{.Link}}" target="_blank" rel="noopener">{{.ID}}</a>{{else if .ID}}{{.ID}}{{else}}<span class="dim">{{.Sink}}: waiting</span>{{end}} <span class="dim">{{.Status}}</span><br>{{end}}</td></tr>
{{end}}</table>{{else}}<p class="dim">No loaded rule watches this kind.</p>{{end}}</div>
</div><div>
<div class="card"><h2>Inventory record</h2><table>
{{range .Record}}<tr><th>{{.K}}</th><td>{{.V}}</td></tr>{{end}}
</table></div></div></div>{{end}}`

var templates = template.Must(template.New("page").Funcs(template.FuncMap{
	"fmtTime": func(t time.Time, loc *time.Location) string {
		if t.IsZero() {
			return "—"
		}
		return t.In(loc).Format("2006-01-02 15:04:05 MST")
	},
	"ago":   ago,
	"secs":  func(s float64) string { return durText(time.Duration(s * float64(time.Second))) },
	"bytes": byteSize,
}).Parse(pageHead + pageFoot + cityTop + assetTmpl))

// ago says how long before now t was, coarsely ("3m12s ago").
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	if d < 0 {
		return durText(-d) + " ahead"
	}
	if d < time.Second {
		return "just now"
	}
	return durText(d) + " ago"
}

// durText writes a duration coarsely: 12s, 3m12s, 5h3m, 4d.
func durText(d time.Duration) string {
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return strconv.FormatInt(s, 10) + "s"
	case s < 3600:
		out := strconv.FormatInt(s/60, 10) + "m"
		if s%60 != 0 {
			out += strconv.FormatInt(s%60, 10) + "s"
		}
		return out
	case s < 48*3600:
		out := strconv.FormatInt(s/3600, 10) + "h"
		if m := s % 3600 / 60; m != 0 {
			out += strconv.FormatInt(m, 10) + "m"
		}
		return out
	}
	return strconv.FormatInt(s/86400, 10) + "d"
}

func byteSize(n int64) string {
	switch {
	case n < 1<<10:
		return strconv.FormatInt(n, 10) + " B"
	case n < 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	case n < 1<<30:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	}
	return strconv.FormatFloat(float64(n)/(1<<30), 'f', 1, 64) + " GiB"
}

// sparkline draws values as a small SVG polyline; nil when fewer than two
// are numbers.
func sparkline(ts []int64, vs []float64) template.HTML {
	const w, h, pad = 160.0, 32.0, 2.0
	var n int
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		n++
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	if n < 2 || len(ts) == 0 {
		return ""
	}
	t0, t1 := ts[0], ts[len(ts)-1]
	span := float64(t1 - t0)
	if span <= 0 {
		span = 1
	}
	if hi == lo {
		hi, lo = hi+1, lo-1
	}
	var b strings.Builder
	b.WriteString(`<svg class="spark" viewBox="0 0 160 32" xmlns="http://www.w3.org/2000/svg"><polyline points="`)
	for i, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		x := pad + (w-2*pad)*float64(ts[i]-t0)/span
		y := h - pad - (h-2*pad)*(v-lo)/(hi-lo)
		b.WriteString(strconv.FormatFloat(x, 'f', 1, 64))
		b.WriteByte(',')
		b.WriteString(strconv.FormatFloat(y, 'f', 1, 64))
		b.WriteByte(' ')
	}
	b.WriteString(`"/></svg>`)
	return template.HTML(b.String())
}
